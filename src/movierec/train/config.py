"""Experiment configs: validate every key before any model loads, into a frozen RunConfig.

Valid keys are the fields of LLaMA-Factory's own training-argument dataclasses plus
`MovierecArguments` below, typed by the one engine (train/schema.py), so a key or type LLaMA-Factory
would reject is rejected here first; then value rules, datasets, model and levers; all problems at once,
one `key: problem` line each. `render_llamafactory_args` makes the exact dict LLaMA-Factory receives.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir, expand
from movierec.resources import shipped
from movierec.train.checks import (
    check_answer_logits,
    check_early_stopping,
    check_levers,
    check_ranges,
    check_shape_buckets,
)
from movierec.train.schema import field_table, parse_fields


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
    answer_logits_only: bool = field(
        default=False, metadata={"help": "compute the LM head only at the positions the loss reads (the answer), "
                                         "not at every prompt position; same loss and gradients, less work and memory"}
    )
    shape_buckets: int | None = field(
        default=None, metadata={"help": "pad each training batch to a multiple of this many tokens (and a short batch "
                                        "to the full row count), so torch_compile sees a few static shapes and CUDA "
                                        "graphs can be recorded; same loss and gradients for the same dropout masks "
                                        "(null: off)"}
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


def _train_classes() -> tuple[type, ...]:
    from llamafactory.hparams.parser import _TRAIN_ARGS

    return (*_TRAIN_ARGS, MovierecArguments)


def _field_defaults() -> dict[str, tuple[Any, str]]:
    return {k: (default, type_str) for k, (_, default, type_str) in field_table(_train_classes()).items()}


def validate(cfg: Mapping[str, Any], data_required: bool = True, model_required: bool = True,
             warn=print, launching: bool = False) -> RunConfig:
    """Check every key, type and range; return the typed RunConfig.

    data_required=False (a dry run, which may plan a run before `prepare`) reports dataset files
    that do not exist yet as warnings instead of problems; model_required=False (bench, which builds
    a random model of the architecture) does not look for the model's folder. launching=True (training
    starts next) makes a hub model that HF_HUB_OFFLINE keeps from loading an error, not a warning.

    Raises:
        UserError: one line per problem, all problems at once.
    """
    typed, problems = parse_fields(_train_classes(), cfg)
    warnings: list[str] = []
    for key in PATH_KEYS & typed.keys():  # `~` and $VARS expanded once, here, for every path
        if isinstance(typed[key], str):
            typed[key] = os.path.expandvars(os.path.expanduser(typed[key]))
    problems += check_output_dir(typed) if "output_dir" in typed else []
    lf = {k: v for k, v in typed.items() if k not in MOVIEREC_KEYS}
    mr = MovierecArguments(**{k: v for k, v in typed.items() if k in MOVIEREC_KEYS})
    problems += check_ranges(lf, mr.to_dict()) + check_early_stopping(lf, mr.to_dict())
    problems += check_answer_logits(lf, mr.to_dict())
    shape_problems, shape_warnings = check_shape_buckets(lf, mr.to_dict())
    problems += shape_problems
    warnings += shape_warnings
    if not any(p.startswith("dataset_dir:") for p in problems):
        found = _check_datasets(lf)
        missing = [p for p in found if p.endswith(NOT_PREPARED)]
        problems += [p for p in found if p not in missing]
        if data_required:
            problems += missing
        else:
            warnings += missing
    problems += check_levers(lf)
    model_problems = check_model(lf, model_required)  # a hub id missing from the cache offline: training
    not_cached = [p for p in model_problems if p.endswith(NOT_CACHED)]  # cannot load it, a plan can do without
    problems += [p for p in model_problems if p not in not_cached] + (not_cached if launching else [])
    warnings += [] if launching else not_cached
    if problems:  # the errors alone: warnings would only bury them
        raise UserError("\n".join(problems))
    for line in warnings:
        warn(f"warning: {line}", file=sys.stderr)
    return RunConfig(lf, mr)


def check_output_dir(args: Mapping[str, Any]) -> list[str]:
    """output_dir names a folder of the run's own: not missing, null, empty or the home folder itself."""
    value = args.get("output_dir")
    if value is None or not str(value).strip():
        what = "null (a bare ~ is YAML's null: quote a path, '~/runs/x')" if value is None else "empty"
        return [f"output_dir: {what}; name the folder checkpoints and logs go to"]
    if expand(value) in (expand("~"), Path("/")):
        return [f"output_dir: {value!r} is {expand(value)}, not a folder of the run's own; name a run folder"]
    return []


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
    if not data.file(data.DATASET_INFO).exists():
        return [f"dataset_dir: {data.file(data.DATASET_INFO)} not found{NOT_PREPARED}"]
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

    from movierec.train.static_shapes import compile_env_restored

    with tempfile.TemporaryDirectory(prefix="movierec-check-") as tmp, compile_env_restored():
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
