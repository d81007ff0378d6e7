"""Experiment configs: load YAML, apply overrides, validate every key before any model loads.

Valid keys are the fields of LLaMA-Factory's own training-argument dataclasses plus
`MovierecArguments` below; types come from the argparse actions that transformers'
HfArgumentParser builds for those dataclasses, so a key or type LLaMA-Factory would reject
is rejected here first, all problems at once, one `key: problem` line each.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir, expand
from movierec.resources import config_path, shipped
from movierec.train.checks import (
    _to_text,
    check_early_stopping,
    check_levers,
    check_ranges,
)


@dataclass(frozen=True)
class MovierecArguments:
    """movierec's own keys (everything else in a config belongs to LLaMA-Factory); each default lives here."""

    eval_auc: bool = field(default=True, metadata={"help": "compute eval_auc (Yes/No AUC) at every evaluation"})
    eval_auc_samples: int | None = field(
        default=None, metadata={"help": "score a deterministic subsample of this many eval examples (null: all)"}
    )
    eval_auc_batch_size: int = field(default=16, metadata={"help": "examples per forward pass when scoring"})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop training after this many evaluations in a row without "
                                        "metric_for_best_model improving (null: off)"}
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "an evaluation counts as an improvement only when it beats the best "
                                       "so far by more than this"}
    )

    def auc_examples(self, n_eval: int | None) -> int:
        """Examples the AUC callback scores at each evaluation of `n_eval` eval examples."""
        if not n_eval or not self.eval_auc:
            return 0
        return min(self.eval_auc_samples, n_eval) if self.eval_auc_samples else n_eval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: Mapping[str, Any] | None) -> MovierecArguments:
        """The `movierec:` section of a run record (keys of older records that no longer exist are ignored)."""
        return cls(**{k: v for k, v in (data or {}).items() if k in MOVIEREC_KEYS})


@dataclass(frozen=True)
class RunConfig:
    """A validated experiment config: LLaMA-Factory's arguments as given (typed), and movierec's own.

    `get(key)` is the value a run uses: the config's, else the default of the LLaMA-Factory dataclass
    field (the one place each default lives); an unknown key is a KeyError, never a silent None.
    """

    llamafactory: Mapping[str, Any]
    movierec: MovierecArguments = field(default_factory=MovierecArguments)

    def __post_init__(self) -> None:
        object.__setattr__(self, "llamafactory", MappingProxyType(dict(self.llamafactory)))

    def get(self, key: str) -> Any:
        return arg(self.llamafactory, key)

    def replace(self, **values: Any) -> RunConfig:
        """A copy with some LLaMA-Factory arguments changed (the device's precision, a resume's schedule)."""
        return RunConfig({**self.llamafactory, **values}, self.movierec)


def arg(args: Mapping[str, Any], key: str) -> Any:
    """The value of LLaMA-Factory argument `key` in `args` (a config or the rendered arguments), else its
    dataclass default."""
    if key in args:
        return args[key]
    defaults = _field_defaults()
    if key not in defaults:
        raise KeyError(f"{key} is not an argument of LLaMA-Factory or movierec")
    return defaults[key][0]


def lora_alpha(args: Mapping[str, Any]) -> int:
    """LoRA's alpha as LLaMA-Factory sets it: the config's, else 2 x lora_rank (FinetuningArguments)."""
    return arg(args, "lora_alpha") or 2 * int(arg(args, "lora_rank"))


MOVIEREC_KEYS = {f.name for f in fields(MovierecArguments)}


class _Loader(yaml.SafeLoader):
    """YAML as LLaMA-Factory (OmegaConf) reads it: only true/false are booleans (so `no`, `on`
    stay strings, e.g. `eval_strategy: no`), and `1e-4` is a float, not a string."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*[eE][-+]?\d+|\d[\d_]*\.[\d_]*|\.\d[\d_]*|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line UserError."""
    path = config_path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["lr=1e-4", "report_to=[tensorboard]"]` -> dict, values read as YAML."""
    out: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--override {item!r}: expected KEY=VALUE")
            continue
        try:
            out[key] = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw  # not valid YAML: keep the text, type checks decide
    if problems:
        raise UserError("\n".join(problems))
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_yaml(path)
    cfg.update(parse_overrides(overrides or []))
    return cfg


def _train_classes() -> tuple[type, ...]:
    from llamafactory.hparams.parser import _TRAIN_ARGS

    return (*_TRAIN_ARGS, MovierecArguments)


@lru_cache(maxsize=None)
def _fields_of(classes: tuple[type, ...]) -> dict[str, tuple[argparse.Action, Any, str]]:
    """name -> (argparse action, default, type text) for every init field of the dataclasses.

    The actions are those transformers' HfArgumentParser builds for the dataclasses (the parser
    LLaMA-Factory itself uses), so a key or type it would reject is rejected here first.
    """
    import typing

    from transformers import HfArgumentParser

    # the annotations, read before HfArgumentParser rewrites the fields' types (it strips Optional)
    hints = {cls: typing.get_type_hints(cls) for cls in classes}
    parser = HfArgumentParser(list(classes))
    # bool fields defaulting to true also get a `--no_<key>` action with the same dest: skip it
    actions = {a.dest: a for a in parser._actions if f"--{a.dest}" in a.option_strings}
    out = {}
    for cls in classes:
        for f in fields(cls):
            if f.init:
                default = f.default if f.default is not MISSING else (
                    f.default_factory() if f.default_factory is not MISSING else MISSING)
                out[f.name] = (actions[f.name], default.value if isinstance(default, enum.Enum) else default,
                               str(hints[cls][f.name]))
    return out


def _field_defaults() -> dict[str, tuple[Any, str]]:
    return {k: (default, type_str) for k, (_, default, type_str) in _fields_of(_train_classes()).items()}


def parse_fields(classes: Sequence[type], raw: Mapping[Any, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The one config engine (experiment and data configs): `raw`'s values typed for the dataclasses'
    fields, and one `key: problem` line per unknown key (with a "did you mean"), wrong type or missing
    required field. A field whose type is a dataclass reads a nested mapping (`synth: {users: 500}`).
    """
    table = _fields_of(tuple(classes))
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in table:
            hint = difflib.get_close_matches(str(key), list(table), n=1, cutoff=0.6)
            problems.append(f"{prefix}{key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            continue
        action, default, type_str = table[key]
        if is_dataclass(action.type):
            if value is None and "None" in type_str:
                out[key] = None
            elif not isinstance(value, dict):
                problems.append(f"{prefix}{key}: expected a mapping of {action.type.__name__} keys, got {value!r}")
            else:
                values, nested = parse_fields([action.type], value, f"{prefix}{key}.")
                nested += [f"{prefix}{key}.{name}: missing" for name, (_, d, _) in
                           _fields_of((action.type,)).items() if d is MISSING and name not in value]
                problems += nested
                out[key] = None if nested else action.type(**values)
            continue
        try:
            out[key] = _coerce(key, value, action, default, type_str)
        except ValueError as e:
            problems.append(f"{prefix}{key}: invalid value {value!r}: {e}")
    return out, problems


def _type_name(action: argparse.Action) -> str:
    if action.choices:
        return "one of " + ", ".join(str(c) for c in action.choices)
    name = getattr(action.type, "__name__", "str")
    return {"string_to_bool": "bool"}.get(name, name)


def _coerce(key: str, value: Any, action: argparse.Action, default: Any, type_str: str) -> Any:
    """Return `value` converted to the action's type, or raise ValueError with the reason."""
    if value is None:
        if default is None or "None" in type_str or "Optional" in type_str:
            return None
        raise ValueError(f"null is not allowed, expected {_type_name(action)}")
    if isinstance(value, dict):
        if "dict" in type_str:
            return value
        raise ValueError(f"expected {_type_name(action)}, got a mapping")
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            # report_to: LLaMA-Factory's dataclass types it str, transformers' Trainer takes a list too
            if "list" in type_str or "dict" in type_str or key in LIST_KEYS:
                return [_coerce(key, v, action, default, "str") for v in value]
            raise ValueError(f"expected {_type_name(action)}, got a list")
        return [_coerce(key, v, action, default, "str") for v in value]
    convert = action.type or str
    # a bool for a non-bool field (or a float for an int field) is a type error, not a silent cast
    if isinstance(value, bool) and getattr(convert, "__name__", "") not in ("string_to_bool", "str"):
        raise ValueError(f"expected {_type_name(action)}")
    if isinstance(value, float) and convert is int:
        if not value.is_integer():
            raise ValueError("expected int")
        value = int(value)
    try:
        out = convert(_to_text(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(f"expected {_type_name(action)}") from None
    if isinstance(out, enum.Enum):
        out = out.value
    if action.choices and out not in action.choices and _to_text(out) not in [str(c) for c in action.choices]:
        raise ValueError(f"expected {_type_name(action)}")
    return out


def validate(cfg: Mapping[str, Any], data_required: bool = True, model_required: bool = True,
             warn=print) -> RunConfig:
    """Check every key, type and range; return the typed RunConfig.

    data_required=False (a dry run, which may plan a run before `prepare`) reports dataset files
    that do not exist yet as warnings instead of problems; model_required=False (bench, which builds
    a random model of the architecture) does not look for the model's folder.

    Raises:
        UserError: one line per problem, all problems at once.
    """
    typed, problems = parse_fields(_train_classes(), cfg)
    for key in PATH_KEYS & typed.keys():  # `~` and $VARS expanded once, here, for every path
        if isinstance(typed[key], str):
            typed[key] = os.path.expandvars(os.path.expanduser(typed[key]))
    problems += check_output_dir(typed) if "output_dir" in typed else []
    lf = {k: v for k, v in typed.items() if k not in MOVIEREC_KEYS}
    mr = MovierecArguments(**{k: v for k, v in typed.items() if k in MOVIEREC_KEYS})
    problems += check_ranges(lf, mr.to_dict()) + check_early_stopping(lf, mr.to_dict())
    if not any(p.startswith("dataset_dir:") for p in problems):
        found = _check_datasets(lf)
        missing = [p for p in found if p.endswith(NOT_PREPARED)]
        problems += [p for p in found if p not in missing]
        if data_required:
            problems += missing
        for line in [] if data_required else missing:
            warn(f"warning: {line}", file=sys.stderr)
    problems += check_levers(lf)
    model_problems = check_model(lf, model_required)  # a hub id missing from the cache offline: a warning
    problems += [p for p in model_problems if not p.endswith(NOT_CACHED)]
    for line in [p for p in model_problems if p.endswith(NOT_CACHED)]:
        warn(f"warning: {line}", file=sys.stderr)
    if problems:
        raise UserError("\n".join(problems))
    return RunConfig(lf, mr)


def check_output_dir(args: Mapping[str, Any]) -> list[str]:
    """output_dir names a folder of the run's own: not missing, null, empty or the home folder itself."""
    value = args.get("output_dir")
    if value is None or not str(value).strip():
        return [f"output_dir: {'null' if value is None else 'empty'}; name the folder checkpoints and logs go to"]
    if expand(value) in (expand("~"), Path("/")):
        return [f"output_dir: {value!r} is {expand(value)}, not a folder of the run's own; name a run folder"]
    return []


LIST_KEYS = {"report_to"}  # typed str, yet a list is valid (transformers reads it as several integrations)

# Keys whose values are paths on this machine (a hub id passes through expansion unchanged).
PATH_KEYS = {"output_dir", "dataset_dir", "model_name_or_path", "adapter_name_or_path", "cache_dir", "tokenized_path",
             "logging_dir", "deepspeed", "media_dir", "export_dir", "resume_from_checkpoint"}


def _check_datasets(args: dict[str, Any]) -> list[str]:
    names = [("dataset", n) for n in _split(args.get("dataset"))]
    names += [("eval_dataset", n) for n in _split(args.get("eval_dataset"))]
    if not names:
        return []
    data = DatasetDir(args.get("dataset_dir") or "data")
    if data.path.exists() and not data.path.is_dir():
        return [f"dataset_dir: {data.path} is a file, not a folder"]
    try:
        info = data.dataset_info()
    except UserError as e:
        return [f"dataset_dir: {e}"]
    problems = []
    for key, name in names:
        if name not in info:
            hint = difflib.get_close_matches(name, list(info), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(info))})"
            problems.append(f"{key}: '{name}' is not in {data.file(data.DATASET_INFO)}{suggestion}")
        elif not data.dataset_file(name).is_file():
            problems.append(f"{key}: '{name}' names {data.dataset_file(name)}, which does not exist{NOT_PREPARED}")
    return problems


NOT_PREPARED = " (run `movierec prepare` first)"
NOT_CACHED = "not in the Hugging Face cache and HF_HUB_OFFLINE is set (download it once online)"


def check_model(args: Mapping[str, Any], folder_required: bool = True) -> list[str]:
    """A model folder that does not exist and a chat template LLaMA-Factory does not have: found now, not
    after the data is tokenized. A hub id (`Qwen/Qwen3-0.6B`) is only checked offline, against the cache."""
    problems = []
    template = args.get("template")
    if template is not None:
        from llamafactory.data.template import TEMPLATES

        if template not in TEMPLATES:
            hint = difflib.get_close_matches(str(template), list(TEMPLATES), n=1)
            problems.append(f"template: LLaMA-Factory has no template {template!r}"
                            + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    model = args.get("model_name_or_path")
    if not folder_required:
        return problems
    if not model:
        return problems + ["model_name_or_path: missing (a local model folder or a Hugging Face hub id)"]
    path = expand(model)
    parts = str(model).split("/")
    looks_local = (str(model).startswith((".", "/", "~", "$")) or len(parts) != 2
                   or expand(parts[0]).is_dir())  # `output/tiny-qwen3x` is a typo of a local folder, not a hub id
    if looks_local and not path.is_dir():
        problems.append(f"model_name_or_path: {path} is not a model folder" + (" (it is a file)" if path.is_file()
                        else " (not found)"))
    elif not looks_local and os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(str(model), "config.json"), str):
            problems.append(f"model_name_or_path: {model} is {NOT_CACHED}")
    return problems


def check_with_llamafactory(lf_args: dict[str, Any]) -> list[str]:
    """LLaMA-Factory's own argument processing (its cross-field and value checks), before anything runs.

    Run on a copy whose output_dir is an empty temporary folder, so that LLaMA-Factory's own
    output-folder rules (movierec's are stricter, see rundir) do not interfere.
    """
    import tempfile

    from llamafactory.hparams import get_train_args

    with tempfile.TemporaryDirectory(prefix="movierec-check-") as tmp:
        args = {**lf_args, "output_dir": str(Path(tmp) / "out"), "logging_dir": str(Path(tmp) / "runs")}
        args.pop("resume_from_checkpoint", None)
        try:
            get_train_args(args)
        except (ValueError, TypeError, ImportError) as e:
            return [f"llamafactory: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"]
    return []


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


# ---------------------------------------------------------------- the arguments LLaMA-Factory receives

DEEPSPEED_PRESETS = {"z2": "ds_z2_config.json", "z3": "ds_z3_config.json"}  # movierec/resources/deepspeed/
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def render_llamafactory_args(lf: dict[str, Any], run: RunDir, data: DatasetDir, run_name: str,
                             resume: Path | None, deepspeed: str | None) -> dict[str, Any]:
    """The exact argument dict handed to LLaMA-Factory's run_exp (and saved as YAML): paths absolute."""
    args = dict(lf)
    args.setdefault("do_train", True)
    args.setdefault("report_to", "tensorboard")
    args.setdefault("stage", "sft")
    args["output_dir"] = str(run.path)
    args["dataset_dir"] = str(data.path)
    model = expand(args["model_name_or_path"])
    if model.exists():  # a local folder; otherwise a hub id, kept as written
        args["model_name_or_path"] = str(model)
    for key in ("adapter_name_or_path", "cache_dir", "tokenized_path"):
        if args.get(key):
            args[key] = str(expand(args[key]))
    args["run_name"] = run_name
    args["logging_dir"] = str(run.file(RunDir.RUNS) / run_name)
    # movierec guards the folder itself; LLaMA-Factory's overwrite would also delete trainer_log.jsonl
    args["overwrite_output_dir"] = False
    args.pop("resume_from_checkpoint", None)
    if resume is not None:
        args["resume_from_checkpoint"] = str(resume)
    if deepspeed:
        path = Path(deepspeed)
        if deepspeed in DEEPSPEED_PRESETS:  # shipped with the package, wherever the run starts
            path = shipped("resources", "deepspeed", DEEPSPEED_PRESETS[deepspeed])
        if not expand(path).is_file():
            raise UserError(f"--deepspeed: {deepspeed} is neither z2, z3 nor an existing file")
        args["deepspeed"] = str(expand(path))
    return args


def check_run_name(name: str) -> str:
    """TensorBoard writes to output_dir/runs/<run-name>: a plain name, never a path out of the folder."""
    if not _RUN_NAME.match(name) or ".." in name:
        raise UserError(f"--run-name {name!r}: use letters, digits, '.', '_' and '-' only (it names the folder "
                        "output_dir/runs/<run-name>)")
    return name
