"""The run folder (a training run's output_dir): every file of a run is named, read and written here.

A run folder holds what `movierec train` wrote (the run record, the exact LLaMA-Factory arguments, a
lock while a process owns it, train.log), what LLaMA-Factory and transformers wrote (checkpoints,
trainer_log.jsonl, TensorBoard events, results files, the final adapter) and what the later stages
wrote (metrics.json, predictions.jsonl, report.md, plots/). Paths in the run record are absolute,
with the data and model folders also relative to the run, so the folder works from any directory
and after moving it together with its data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from movierec.folders.checkpoint import checkpoint_problems
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.io import (
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
)
from movierec.folders.ownership import foreign_entries, hold

if TYPE_CHECKING:
    from movierec.train.config import MovierecArguments
    from movierec.train.plan import TrainPlan

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# What saving the model writes (the final adapter at the top, and each checkpoint): peft, tokenizer, Trainer
_MODEL_FILES = (
    "adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "README.md", "training_args.bin",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "generation_config.json",
)
# Inside checkpoint-N besides: the Trainer's state to resume from (DeepSpeed: global_stepN/, latest, zero_to_fp32.py)
_CHECKPOINT_FILES = (
    *_MODEL_FILES, "trainer_state.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth",
    "rng_state_<N>.pth", "latest", "zero_to_fp32.py", "global_step<N>/", "global_step<N>/*.pt",
)
# Every file a run writes into its folder (movierec train / evaluate / report, LLaMA-Factory, transformers,
# peft, TensorBoard), as ownership.py patterns: `--overwrite` deletes a folder only when it holds nothing else.
RUN_PATTERNS = (
    "resolved_config.yaml", "resolved_config.before-*.yaml", "llamafactory_train.yaml", "train.log",
    "train.rank<N>.log", ".movierec.lock", "step_times.jsonl", "run_summary.json", "trainer_log.jsonl",
    "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json", "training_*.png",
    "runs/", "runs/**/", "runs/**/events.out.tfevents.*", "metrics.json", "report.md",
    "predictions.jsonl", "predictions_base.jsonl", "ranking_predictions.jsonl", "ranking_predictions_base.jsonl",
    "plots/", "plots/train_loss.png", "plots/eval_loss.png", "plots/eval_auc.png", "plots/auc_comparison.png",
    "plots/calibration.png", "**/.*.tmp",  # io.atomic_write_bytes' temporary files
    *_MODEL_FILES,
    *(f"{folder}/{p}" for folder in ("checkpoint-<N>", "tmp-checkpoint-<N>") for p in ("", *_CHECKPOINT_FILES)),
)


def expand(path: str | os.PathLike) -> Path:
    """`~` and environment variables expanded, made absolute: the one rule for every user path."""
    return Path(os.path.abspath(os.path.expandvars(os.path.expanduser(str(path)))))


class RunDir:
    RESOLVED = "resolved_config.yaml"
    LF_ARGS = "llamafactory_train.yaml"
    LOCK = ".movierec.lock"
    TRAIN_LOG = "train.log"
    TRAINER_LOG = "trainer_log.jsonl"
    STEP_TIMES = "step_times.jsonl"
    SUMMARY = "run_summary.json"
    METRICS = "metrics.json"
    PREDICTIONS = "predictions.jsonl"
    PREDICTIONS_BASE = "predictions_base.jsonl"  # the base model's (zero-shot) P(Yes)
    RANKING_PREDICTIONS = "ranking_predictions.jsonl"
    RANKING_PREDICTIONS_BASE = "ranking_predictions_base.jsonl"
    REPORT = "report.md"
    PLOTS = "plots"
    RUNS = "runs"
    TRAINER_STATE = "trainer_state.json"
    TRAIN_RESULTS = "train_results.json"
    EVAL_RESULTS = "eval_results.json"
    ALL_RESULTS = "all_results.json"
    ADAPTER_CONFIG = "adapter_config.json"  # in each checkpoint-N
    BENCH_WINDOW = "bench_window.json"  # `movierec bench`'s timed window (its runs only)

    def __init__(self, path: str | os.PathLike):
        self.path = expand(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ the run record

    def is_run(self) -> bool:
        """True when this folder's run record names this very folder: movierec wrote it."""
        try:
            record = self.resolved()
        except UserError:
            return False
        named = (record.get("paths") or {}).get("output_dir") or (record.get("config") or {}).get("output_dir")
        return bool(named) and expand(named) == self.path

    def require(self) -> RunDir:
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--run: {self.path} is a file, not a run folder")
        if not self.path.is_dir():
            raise UserError(f"run folder not found: {self.path}")
        if not self.file(self.LF_ARGS).is_file() or not self.file(self.RESOLVED).is_file():
            raise UserError(f"{self.path} is not a movierec run (no {self.RESOLVED} / {self.LF_ARGS})")
        return self

    def _yaml(self, name: str) -> dict[str, Any]:
        path = self.file(name)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} not found") from None
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"{path}: not readable YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping")
        return data

    def resolved(self) -> dict[str, Any]:
        return self._yaml(self.RESOLVED)

    def lf_args(self) -> dict[str, Any]:
        return self._yaml(self.LF_ARGS)

    def mr_args(self) -> MovierecArguments:
        from movierec.train.config import MovierecArguments

        return MovierecArguments.from_record(self.resolved().get("movierec"))

    def plan(self) -> TrainPlan | None:
        """The recorded step plan (None: the record of a dry run before `prepare`, or of an older version)."""
        from movierec.train.plan import TrainPlan

        return TrainPlan.from_dict(self.resolved().get("plan"))

    def write_record(self, record: dict[str, Any], lf_args: dict[str, Any]) -> None:
        atomic_write_text(self.file(self.RESOLVED), yaml.safe_dump(record, sort_keys=False, allow_unicode=True))
        atomic_write_text(self.file(self.LF_ARGS), yaml.safe_dump(lf_args, sort_keys=False, allow_unicode=True))

    def read_json(self, name: str, default: Any = None) -> Any:
        """A JSON file of the run (metrics.json, run_summary.json, ...); `default` when missing."""
        return read_json(self.file(name), default=default)

    def previous_records(self) -> list[Path]:
        """The records of earlier segments that resumes kept (one per resume)."""
        return sorted(self.path.glob("resolved_config.before-*.yaml"))

    def log_file(self, rank: int = 0) -> Path:
        """The libraries' log of one training process: train.log for rank 0, train.rank<N>.log for the others."""
        return self.file(self.TRAIN_LOG if rank == 0 else f"train.rank{rank}.log")

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        """One JSON line appended to a log of the run (step_times.jsonl)."""
        with open(self.file(name), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def keep_previous_record(self, resume_from: Path) -> Path | None:
        """A resume keeps the record of what produced the earlier segment; returns where it went."""
        previous = self.file(self.RESOLVED)
        if not previous.is_file():
            return None
        kept = self.file(f"resolved_config.before-{resume_from.name}.yaml")
        previous.replace(kept)
        return kept

    def _located(self, key: str, what: str, hint: str) -> Path:
        """A recorded folder: as recorded, else relative to where this run folder is now (moved together)."""
        paths = self.resolved().get("paths") or {}
        recorded = paths.get(key)
        if not recorded:
            raise UserError(f"{self.file(self.RESOLVED)}: no paths.{key} (recorded by an older movierec?); {hint}")
        if Path(recorded).exists():
            return Path(recorded)
        relative = paths.get(f"{key}_from_run")
        if relative and (self.path / relative).exists():
            return (self.path / relative).resolve()
        raise UserError(f"{what} of this run not found at {recorded}"
                        + (f" nor at {self.path / relative}" if relative else "") + f"; {hint}")

    def dataset(self, override: str | os.PathLike | None = None) -> DatasetDir:
        """The run's prepared-data folder (or `override`, e.g. --data), checked against its manifest."""
        if override is not None:
            return DatasetDir(override).require()
        return DatasetDir(self._located("dataset_dir", "the data folder", "pass --data DIR")).require()

    def data_changed(self, data: DatasetDir,
                     consequence: str = "so its eval examples may include ones the run trained on") -> str | None:
        """Why `data` is not the data this run trained on (its training file changed since), else None."""
        recorded = self.resolved().get("data_train_sha256")
        if not isinstance(recorded, dict) or not recorded:
            return None  # recorded by an older movierec, or trained on data without a manifest
        try:
            now = data.recorded_sha256(",".join(recorded))
        except UserError as e:
            return str(e)
        changed = [name for name, sha in recorded.items() if now.get(name) != sha]
        if not changed:
            return None
        return (f"{data.path} was prepared again after this run trained (its {changed[0]} file differs from the one "
                f"the run trained on), {consequence}")

    def model_path(self) -> str:
        """model_name_or_path: a hub id as recorded, a local folder located like the data folder."""
        paths = self.resolved().get("paths") or {}
        if not paths.get("model_is_local"):
            return self.lf_args()["model_name_or_path"]
        return str(self._located("model", "the base model folder",
                                 f"put it back, or set paths.model in {self.file(self.RESOLVED)} to where it is now"))

    # ------------------------------------------------------------ checkpoints

    def checkpoints(self) -> list[Path]:
        """`checkpoint-N` folders sorted by N (numerically, not as text)."""
        if not self.path.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
        return [p for _, p in sorted(found)]

    def scorable(self) -> list[Path]:
        """Checkpoints whose adapter opens (enough to score with)."""
        return [c for c in self.checkpoints() if not checkpoint_problems(c, resumable=False)]

    @classmethod
    def trainer_state(cls, ckpt: Path) -> dict[str, Any]:
        """A checkpoint's trainer_state.json ({} when missing or unreadable)."""
        try:
            state = json.loads((ckpt / cls.TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    @classmethod
    def adapter_config(cls, ckpt: Path) -> dict[str, Any]:
        """A checkpoint's adapter_config.json (peft's LoRA settings)."""
        return read_json(ckpt / cls.ADAPTER_CONFIG)

    @staticmethod
    @contextmanager
    def reading(ckpt: Path | None) -> Iterator[None]:
        """Reading a checkpoint that a training run may delete meanwhile (save_total_limit rotates them): a
        failure once it is gone is one line saying so."""
        try:
            yield
        except Exception:
            if ckpt is None or (ckpt.is_dir() and not checkpoint_problems(ckpt, resumable=False)):
                raise
            raise UserError(f"{ckpt.name} was deleted while it was read (a training run rotating its checkpoints?); "
                            "rerun once training ends, or name a checkpoint it keeps") from None

    def recorded_best(self) -> Path | None:
        """The checkpoint the trainer recorded as best (metric_for_best_model), whether or not it still opens."""
        for ckpt in self.checkpoints()[::-1]:
            best = self.trainer_state(ckpt).get("best_model_checkpoint")
            if best:
                return self.path / Path(best).name
        return None

    def best_checkpoint(self) -> Path | None:
        """The best checkpoint the trainer recorded (metric_for_best_model), if it still exists."""
        best = self.recorded_best()
        return best if best is not None and best.is_dir() else None

    def select(self, which: str, others: tuple[str, ...] = ()) -> list[Path]:
        """latest | best | all | checkpoint-N -> checkpoint folders whose adapter opens (`others`: more names
        the calling command accepts and handles itself, for the error line)."""
        ckpts = self.scorable()
        if which not in ("latest", "best", "all") and not _CKPT.match(Path(which).name):
            names = ", ".join(("latest", "best", "all", *others))
            raise UserError(f"--checkpoint {which}: expected {names} or checkpoint-N")
        if not ckpts:
            raise UserError(f"no complete checkpoint in {self.path}")
        if which == "best" and self.recorded_best() is None:  # a run that tracked no best: its latest
            which = "latest"
            print("note: no best checkpoint recorded (trainer_state.json has no best_model_checkpoint: training ended "
                  "before an evaluation at a save step, e.g. max_steps below eval_steps, or there is no "
                  f"metric_for_best_model); using the latest, {ckpts[-1].name}", file=sys.stderr)
        if which == "latest":
            newest = self.checkpoints()[-1]
            if newest != ckpts[-1]:
                problems = "; ".join(checkpoint_problems(newest, resumable=False)) or "deleted meanwhile"
                print(f"warning: {newest.name} is incomplete ({problems}); using {ckpts[-1].name}, the latest "
                      "complete checkpoint", file=sys.stderr)
            return [ckpts[-1]]
        if which == "all":
            return ckpts
        if which == "best":
            best = self.recorded_best()
            if best not in ckpts:
                problems = checkpoint_problems(best, resumable=False) if best.is_dir() else ["deleted"]
                raise UserError(f"the best checkpoint, {best.name}, cannot be used ({'; '.join(problems)}); "
                                "name another: latest or checkpoint-N")
            return [best]
        named = self.path / Path(which).name
        if named not in ckpts:
            problems = checkpoint_problems(named, resumable=False) if named.is_dir() else ["not found"]
            raise UserError(f"--checkpoint {which}: {'; '.join(problems)} (usable: {', '.join(c.name for c in ckpts)})")
        return [named]

    def resume_point(self, resume: str | None, warn=print) -> Path | None:
        """The checkpoint to resume from: `auto` (latest resumable), `checkpoint-N`, or a path.

        A checkpoint counts only when its files open; auto skips an incomplete one with a warning,
        a named one is refused with the reason.
        """
        if resume is None:
            return None
        if resume == "auto":
            for ckpt in self.checkpoints()[::-1]:
                problems = checkpoint_problems(ckpt)
                if not problems:
                    return ckpt
                warn(f"warning: skipping incomplete {ckpt.name} ({'; '.join(problems)})")
            raise UserError(f"--resume: no complete checkpoint in {self.path}")
        path = expand(resume)
        if not path.exists() and (self.path / resume).exists():
            path = self.path / resume
        if not path.is_dir():
            raise UserError(f"--resume: checkpoint not found: {resume}")
        problems = checkpoint_problems(path)
        if problems:
            raise UserError(f"--resume: {path} is incomplete ({'; '.join(problems)})")
        return path

    # ------------------------------------------------------------ logs

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Lines of a log; [] when missing. A torn last line (a crash mid-write) is skipped."""
        return read_jsonl(self.file(name), missing_ok=True, torn_tail_ok=True)

    def truncate_logs(self, step: int) -> dict[str, str]:
        """Before resuming at `step`: drop log lines of later steps, which the resumed run replays.
        Returns each log's previous text, to put back if the resume fails before its first step."""
        previous = {}
        for name, key in ((self.TRAINER_LOG, "current_steps"), (self.STEP_TIMES, "step")):
            if self.file(name).is_file():
                previous[name] = self.file(name).read_text(encoding="utf-8")
                kept = [line for line in self.read_jsonl(name) if int(line.get(key, 0)) <= step]
                atomic_write_text(self.file(name), "".join(json.dumps(line) + "\n" for line in kept))
        return previous

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.file(name), text)

    # ------------------------------------------------------------ ownership

    def foreign_files(self) -> list[str]:
        """Entries of this folder, at any depth, that no run writes (what `--overwrite` must never delete)."""
        return foreign_entries(self.path, RUN_PATTERNS)

    def clear(self, keep: tuple[str, ...] = (LOCK,)) -> None:
        """Delete a previous run's files, after checking that is all the folder holds."""
        foreign = self.foreign_files()
        if not self.is_run() or foreign:
            found = ", ".join(foreign[:5]) if foreign else f"no {self.RESOLVED} naming this folder"
            raise UserError(f"--overwrite: {self.path} is not a movierec run folder ({found}); nothing was "
                            "deleted: delete it yourself or pick another output_dir")
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    @contextmanager
    def lock(self, command: str, warn=print) -> Iterator[None]:
        """Hold the folder for this process: a second training process into it stops, naming the owner
        (see ownership.hold). Creates the folder if needed."""
        with hold(self.path, self.LOCK, command, warn):
            yield
