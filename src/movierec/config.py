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
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.rundir import RunDir, expand


@dataclass
class MovierecArguments:
    """movierec's own keys (everything else in a config belongs to LLaMA-Factory)."""

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
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
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


def _parser() -> argparse.ArgumentParser:
    from llamafactory.hparams.parser import _TRAIN_ARGS
    from transformers import HfArgumentParser

    return HfArgumentParser([*_TRAIN_ARGS, MovierecArguments])


def _field_defaults() -> dict[str, Any]:
    from llamafactory.hparams.parser import _TRAIN_ARGS

    out = {}
    for cls in [*_TRAIN_ARGS, MovierecArguments]:
        for f in fields(cls):
            if f.init:
                out[f.name] = (f.default, str(f.type))
    return out


def _type_name(action: argparse.Action) -> str:
    if action.choices:
        return "one of " + ", ".join(str(c) for c in action.choices)
    name = getattr(action.type, "__name__", "str")
    return {"string_to_bool": "bool"}.get(name, name)


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


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


def validate(cfg: dict[str, Any], data_required: bool = True, warn=print) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check every key, type and range; return (llamafactory_args, movierec_args), both typed.

    data_required=False (a dry run, which may plan a run before `prepare`) reports dataset files
    that do not exist yet as warnings instead of problems.

    Raises:
        UserError: one line per problem, all problems at once.
    """
    parser = _parser()
    # bool fields defaulting to true also get a `--no_<key>` action with the same dest: skip it
    actions = {a.dest: a for a in parser._actions if f"--{a.dest}" in a.option_strings}
    defaults = _field_defaults()
    problems: list[str] = []
    lf_args: dict[str, Any] = {}
    mr_args: dict[str, Any] = {}
    for key, value in cfg.items():
        if not isinstance(key, str) or key not in defaults:
            hint = difflib.get_close_matches(str(key), list(defaults), n=1, cutoff=0.6)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(f"{key}: unknown key{suggestion}")
            continue
        default, type_str = defaults[key]
        try:
            typed = _coerce(key, value, actions[key], default, type_str)
        except ValueError as e:
            problems.append(f"{key}: invalid value {value!r}: {e}")
            continue
        (mr_args if key in MOVIEREC_KEYS else lf_args)[key] = typed
    for key in PATH_KEYS & lf_args.keys():  # `~` and $VARS expanded once, here, for every path
        if isinstance(lf_args[key], str):
            lf_args[key] = os.path.expandvars(os.path.expanduser(lf_args[key]))
    defaults_mr = {f.name: f.default for f in fields(MovierecArguments)}
    mr_args = {**defaults_mr, **mr_args}
    bad = {p.split(":")[0] for p in problems}
    lf_ok, mr_ok = ({k: v for k, v in d.items() if k not in bad} for d in (lf_args, mr_args))
    problems += check_ranges(lf_ok, mr_ok) + check_early_stopping(lf_ok, mr_ok)
    if "dataset_dir" not in bad:
        missing = [p for p in _check_datasets(lf_args) if p.endswith(NOT_PREPARED)]
        problems += [p for p in _check_datasets(lf_args) if p not in missing]
        if data_required:
            problems += missing
        for line in [] if data_required else missing:
            warn(f"warning: {line}", file=sys.stderr)
    problems += check_levers(lf_args)
    if problems:
        raise UserError("\n".join(problems))
    return lf_args, mr_args


LIST_KEYS = {"report_to"}  # typed str, yet a list is valid (transformers reads it as several integrations)

# Keys whose values are paths on this machine (a hub id passes through expansion unchanged).
PATH_KEYS = {"output_dir", "dataset_dir", "model_name_or_path", "adapter_name_or_path", "cache_dir", "tokenized_path",
             "logging_dir", "deepspeed", "media_dir", "export_dir", "resume_from_checkpoint"}


def _at_least(low: float, strict: bool = False, optional: bool = False):
    def check(v: Any) -> bool:
        if v is None:
            return optional
        return v > low if strict else v >= low
    return check


# (key, check, what it must be): movierec's value checks, which LLaMA-Factory leaves to fail late (a
# traceback after loading the model) or not at all (a negative step count in the plan).
RANGES = [
    ("lora_rank", _at_least(1), "an integer >= 1"),
    ("lora_alpha", _at_least(0, strict=True, optional=True), "> 0 (or null: 2 x lora_rank)"),
    ("lora_dropout", lambda v: v is not None and 0 <= v < 1, "in [0, 1)"),
    ("per_device_train_batch_size", _at_least(1), ">= 1"),
    ("per_device_eval_batch_size", _at_least(1), ">= 1"),
    ("gradient_accumulation_steps", _at_least(1), ">= 1"),
    ("learning_rate", _at_least(0, strict=True), "> 0"),
    ("cutoff_len", _at_least(1), ">= 1"),
    ("warmup_ratio", lambda v: v is not None and 0 <= v < 1, "in [0, 1)"),
    ("warmup_steps", _at_least(0), ">= 0"),
    ("weight_decay", _at_least(0), ">= 0"),
    ("max_grad_norm", _at_least(0), ">= 0"),
    ("adam_beta1", lambda v: v is not None and 0 <= v < 1, "in [0, 1)"),
    ("adam_beta2", lambda v: v is not None and 0 <= v < 1, "in [0, 1)"),
    ("adam_epsilon", _at_least(0, strict=True), "> 0"),
    ("logging_steps", _at_least(0, strict=True), "> 0 (a value below 1 is a fraction of the run)"),
    ("eval_steps", _at_least(0, strict=True, optional=True), "> 0 (a value below 1 is a fraction of the run)"),
    ("save_steps", _at_least(0, strict=True), "> 0 (a value below 1 is a fraction of the run)"),
    ("save_total_limit", _at_least(1, optional=True), ">= 1 or null"),
    ("max_samples", _at_least(1, optional=True), ">= 1 or null"),
    ("preprocessing_num_workers", _at_least(1, optional=True), ">= 1 or null"),
    ("dataloader_num_workers", _at_least(0), ">= 0"),
    ("seed", _at_least(0), ">= 0"),
    ("eval_auc_samples", _at_least(1, optional=True), ">= 1 or null"),
    ("eval_auc_batch_size", _at_least(1), ">= 1"),
    ("early_stopping_patience", _at_least(1, optional=True), "an integer >= 1 (evaluations) or null (off)"),
    ("early_stopping_threshold", _at_least(0), ">= 0"),
]


def check_ranges(lf: dict[str, Any], mr: dict[str, Any]) -> list[str]:
    """Values out of range, one `key: problem` line each (keys left at their defaults are not checked)."""
    given = {**lf, **mr}
    problems = [f"{key}: must be {what}, got {given[key]!r}" for key, ok, what in RANGES
                if key in given and not ok(given[key])]
    if float(lf.get("num_train_epochs", 3.0)) <= 0 and int(lf.get("max_steps", -1) or -1) <= 0:
        problems.append(f"num_train_epochs: must be > 0 (or set max_steps), got {lf.get('num_train_epochs')!r}")
    return problems


# ScoreCallback's metrics (exist only where movierec scores the eval_dataset at evaluations): higher is better?
SCORES = {"eval_auc": True, "eval_uauc": True, "eval_log_loss": False}


def check_early_stopping(lf: dict[str, Any], mr: dict[str, Any]) -> list[str]:
    """Early stopping and ranking by movierec's scores: what transformers only asserts when training
    starts (patience without a metric or evaluations), or fails on at the first evaluation (a
    metric_for_best_model that no evaluation logs: KeyError), or lets pass silently."""
    problems = []
    metric = lf.get("metric_for_best_model")
    evaluates = lf.get("eval_strategy", "no") != "no"
    if mr.get("early_stopping_patience") is not None:
        if not metric:
            problems.append("early_stopping_patience: needs metric_for_best_model, the metric it watches (e.g. "
                            "eval_loss, or eval_auc with greater_is_better: true)")
        if not evaluates:
            problems.append("early_stopping_patience: needs evaluations during training (eval_strategy: steps or "
                            "epoch), got eval_strategy: no")
    name = metric if not metric or metric.startswith("eval_") else f"eval_{metric}"  # as transformers reads it
    if name in SCORES and evaluates:
        if not mr.get("eval_auc", True):
            problems.append(f"metric_for_best_model: {metric} is movierec's score, which eval_auc: false turns off "
                            "(no evaluation would log it); set eval_auc: true or rank by eval_loss")
        # a config naming no data at all (bench generates its own) is not judged on its eval data
        elif lf.get("dataset") and not lf.get("eval_dataset"):
            problems.append(f"metric_for_best_model: {metric} is movierec's score of the eval_dataset examples, and "
                            "this config has no eval_dataset (val_size splits are not scored); set eval_dataset or "
                            "rank by eval_loss")
    higher = SCORES.get(name)
    if higher is not None and lf.get("greater_is_better") not in (None, higher):
        problems.append(f"greater_is_better: {_to_text(lf['greater_is_better'])} ranks {metric} backwards (higher is "
                        f"{'better' if higher else 'worse'}); set greater_is_better: {_to_text(higher)} or leave it unset")
    if lf.get("early_stopping_steps") is not None:
        problems.append("early_stopping_steps: LLaMA-Factory's early stopping (patience only, counted in evaluations "
                        "despite its name); use movierec's early_stopping_patience and early_stopping_threshold")
    return problems


# Throughput levers that need a package movierec does not install: key, value -> (module, what to install).
OPTIONAL_PACKAGES = {
    ("enable_liger_kernel", True): ("liger_kernel", "pip install liger-kernel"),
    ("flash_attn", "fa2"): ("flash_attn", "pip install flash-attn --no-build-isolation (a build for your torch and CUDA)"),
}


# report_to integrations -> the module each needs (transformers fails on a missing one only at Trainer start)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "neptune": "neptune", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
            "trackio": "trackio", "aim": "aim"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_levers(args: dict[str, Any]) -> list[str]:
    """Throughput levers that would fail late, fall back silently or mix examples: one problem line each.

    LLaMA-Factory itself stops on a missing liger-kernel only after the data is tokenized, and
    on `flash_attn: fa2` without flash-attn it logs a warning and trains with SDPA.
    """
    problems = []
    for (key, value), (module, how) in OPTIONAL_PACKAGES.items():
        if args.get(key) == value and not installed(module):
            problems.append(f"{key}: {_to_text(value)} needs the {module.replace('_', '-')} package, which is not "
                            f"installed: {how}")
    trackers = args.get("report_to") or []
    for tracker in [trackers] if isinstance(trackers, str) else trackers:
        if tracker not in TRACKERS and tracker not in ("none", "all"):
            problems.append(f"report_to: unknown integration {tracker!r} (known: {', '.join(sorted(TRACKERS))}, "
                            "none, all)")
        module = TRACKERS.get(tracker)
        if module and not installed(module):
            problems.append(f"report_to: {tracker} needs the {module} package, which is not installed: "
                            f"pip install {module}")
    if args.get("packing") and not args.get("neat_packing"):
        problems.append("packing: true lets the examples packed into one sequence attend to each other; "
                        "use neat_packing: true (packing without cross-example attention)")
    if (args.get("neat_packing") and args.get("flash_attn") == "fa2"
            and int(args.get("per_device_train_batch_size", 8)) != 1):
        problems.append("neat_packing: with flash_attn fa2 LLaMA-Factory 0.9.5 takes one packed sequence per "
                        "device and step: set per_device_train_batch_size: 1 and raise cutoff_len instead")
    return problems


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

DEEPSPEED_PRESETS = {"z2": "configs/deepspeed/ds_z2_config.json", "z3": "configs/deepspeed/ds_z3_config.json"}
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
        path = Path(DEEPSPEED_PRESETS.get(deepspeed, deepspeed))
        if deepspeed in DEEPSPEED_PRESETS:  # movierec's own checkout, wherever the run starts
            path = Path(__file__).resolve().parents[2] / DEEPSPEED_PRESETS[deepspeed]
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
