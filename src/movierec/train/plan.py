"""TrainPlan: optimizer steps, warmup and the evaluation schedule, computed once per run.

`train` computes the plan from the validated config and the data counts and saves it in the run
record (`plan:` in resolved_config.yaml); the dry run prints it, the callbacks and the report read
it back (`TrainPlan.from_dict`), `bench` projects whole runs from it. Nothing else recomputes
batch x accumulation x processes, steps or evaluations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.train.config import arg


@dataclass(frozen=True)
class PackingPlan:
    """Packed sequences a (neat-)packing run trains on, estimated from the prepared data's lengths."""

    sequences: int
    examples_per_sequence: float
    dropped_examples: int
    longest_example_tokens: int
    fill: float
    lengths_from: str


@dataclass(frozen=True)
class TrainPlan:
    """What a run will do, in the Trainer's own arithmetic (see `train_plan`)."""

    examples: int
    world_size: int
    steps_per_epoch: int
    total_optimizer_steps: int
    warmup_steps: int
    rows_per_step: int  # examples, or packed sequences with packing
    examples_per_step: float
    eval_every: int | None
    evaluations: int  # during training, plus the one LLaMA-Factory runs after the last step (do_eval)
    save_every: int | None
    logging_every: int
    packing: PackingPlan | None = None

    @property
    def epochs(self) -> float:
        return self.total_optimizer_steps / self.steps_per_epoch

    def without_evaluations(self) -> TrainPlan:
        """The same run with no eval data (nothing to evaluate on)."""
        return dataclasses.replace(self, evaluations=0)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["packing"] is None:
            del out["packing"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainPlan | None:
        """A recorded plan; None for a record without one (a dry run before `prepare`, or an older run)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not data or not names - {"packing"} <= set(data):
            return None
        values = {k: v for k, v in data.items() if k in names}
        if values.get("packing"):
            values["packing"] = PackingPlan(**values["packing"])
        return cls(**values)


def interval(value: Any, total_steps: int, default: float) -> int:
    """Steps between events as the Trainer reads `eval_steps` / `save_steps` / `logging_steps`:
    a value below 1 is a fraction of the whole run."""
    every = float(value if value not in (None, "") else default)
    return max(math.ceil(every * total_steps) if every < 1 else int(every), 1)


def train_plan(lf: Mapping[str, Any], n_examples: int, world_size: int = 1,
               data: DatasetDir | None = None) -> TrainPlan:
    """Optimizer, warmup, evaluation and save steps exactly as transformers' Trainer computes them.

    With (neat) packing the Trainer's batches are packed sequences, not examples: their number is
    estimated by packing example lengths drawn like the prepared data's (movierec.bench.lengths).
    """
    if arg(lf, "max_samples"):
        n_examples = min(n_examples, int(arg(lf, "max_samples")))
    rows, packing = n_examples, None
    if arg(lf, "packing") or arg(lf, "neat_packing"):
        from movierec.bench.lengths import example_token_stats, packing_plan

        folder = data.path if data is not None else arg(lf, "dataset_dir")
        packing = PackingPlan(**packing_plan(lf, n_examples, *example_token_stats(folder)))
        rows = packing.sequences
    per_device, accum = int(arg(lf, "per_device_train_batch_size")), int(arg(lf, "gradient_accumulation_steps"))
    batches = math.ceil(rows / (per_device * world_size))
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    max_steps = int(arg(lf, "max_steps") or -1)
    total = max_steps if max_steps > 0 else math.ceil(float(arg(lf, "num_train_epochs")) * per_epoch)
    warmup = int(arg(lf, "warmup_steps") or 0) or math.ceil(total * float(arg(lf, "warmup_ratio")))
    per_row = packing.examples_per_sequence if packing else 1.0
    logging_every = interval(arg(lf, "logging_steps"), total, 500)
    eval_every = (interval(arg(lf, "eval_steps"), total, logging_every)
                  if str(arg(lf, "eval_strategy")) == "steps" else None)
    return TrainPlan(
        examples=n_examples, world_size=world_size, steps_per_epoch=per_epoch, total_optimizer_steps=total,
        warmup_steps=warmup, rows_per_step=per_device * world_size * accum,
        examples_per_step=per_device * world_size * accum * per_row, eval_every=eval_every,
        evaluations=total // eval_every + 1 if eval_every else 0,
        save_every=interval(arg(lf, "save_steps"), total, 500) if str(arg(lf, "save_strategy")) == "steps" else None,
        logging_every=logging_every, packing=packing,
    )


def counted(n: int | None, lf: Mapping[str, Any]) -> str:
    """An example count as a banner says it: LLaMA-Factory keeps the first max_samples of each dataset."""
    if n is None:
        return "?"
    cap = arg(lf, "max_samples")
    return f"{n:,}" + (f" (max_samples: {int(cap):,} used)" if cap and int(cap) < n else "")


def data_counts(lf: Mapping[str, Any], data: DatasetDir) -> dict[str, Any]:
    """Train and eval examples of the config's datasets: counted in the prepared files, else what the
    shipped data config that writes this folder will produce (a dry run before `prepare`)."""
    out: dict[str, Any] = {"prepared": data.is_prepared()}
    expected = None if out["prepared"] else _expected_counts(data)
    for key, split in (("dataset", "train"), ("eval_dataset", "eval")):
        names = [n.strip() for n in str(lf.get(key) or "").split(",") if n.strip()]
        total: int | None = 0 if names else None
        for name in names:
            try:
                path = data.dataset_file(name)
            except UserError:  # no dataset_info.json yet: fall back to the expected counts
                path = None
            if path is not None and path.is_file():
                with open(path, "rb") as f:
                    total += sum(1 for _ in f)
            elif expected and isinstance(expected.get(split), int):
                total += expected[split]
                out["source"] = expected["source"]
            else:
                total = None
                break
        out[split] = total
    return out


def _expected_counts(data: DatasetDir) -> dict[str, Any] | None:
    from movierec.data.config import shipped_data_configs
    from movierec.folders.rundir import expand

    for path, cfg in shipped_data_configs():
        out_dir = str(cfg.get("out_dir", ""))
        if out_dir and expand(out_dir) == data.path:
            return {"train": cfg.get("n_train"), "eval": cfg.get("n_eval"), "source": str(path)}
    return None
