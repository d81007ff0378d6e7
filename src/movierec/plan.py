"""TrainPlan: optimizer steps, warmup and the evaluation schedule, computed once per run.

`train` computes the plan from the validated config and the data counts and saves it in the run
record (`plan:` in resolved_config.yaml); the dry run prints it, the callbacks and the report read
it, `bench` projects whole runs from it. Nothing else recomputes batch x accumulation x processes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from movierec.datadir import DatasetDir


def interval(value: Any, total_steps: int, default: float) -> int:
    """Steps between events as the Trainer reads `eval_steps` / `save_steps` / `logging_steps`:
    a value below 1 is a fraction of the whole run."""
    every = float(value if value not in (None, "") else default)
    return max(math.ceil(every * total_steps) if every < 1 else int(every), 1)


def train_plan(lf: dict[str, Any], n_examples: int, world_size: int = 1,
               data: DatasetDir | None = None) -> dict[str, Any]:
    """Optimizer, warmup, evaluation and save steps exactly as transformers' Trainer computes them.

    With (neat) packing the Trainer's batches are packed sequences, not examples: their number is
    estimated by packing example lengths drawn like the prepared data's (movierec.lengths).
    """
    if lf.get("max_samples"):
        n_examples = min(n_examples, int(lf["max_samples"]))
    plan: dict[str, Any] = {"examples": n_examples, "world_size": world_size}
    rows = n_examples
    if lf.get("packing") or lf.get("neat_packing"):
        from movierec.lengths import example_token_stats, packing_plan

        folder = data.path if data is not None else lf.get("dataset_dir", "data")
        plan["packing"] = packing_plan(lf, n_examples, *example_token_stats(folder))
        rows = plan["packing"]["sequences"]
    per_device, accum = int(lf.get("per_device_train_batch_size", 8)), int(lf.get("gradient_accumulation_steps", 1))
    batches = math.ceil(rows / (per_device * world_size))
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    max_steps = int(lf.get("max_steps", -1) or -1)
    total = max_steps if max_steps > 0 else math.ceil(float(lf.get("num_train_epochs", 3.0)) * per_epoch)
    warmup = int(lf.get("warmup_steps", 0) or 0) or math.ceil(total * float(lf.get("warmup_ratio", 0.0)))
    per_row = plan["packing"]["examples_per_sequence"] if "packing" in plan else 1.0
    eval_every = (interval(lf.get("eval_steps"), total, lf.get("logging_steps", 500))
                  if lf.get("eval_strategy", "no") == "steps" else None)
    plan.update(
        steps_per_epoch=per_epoch, total_optimizer_steps=total, warmup_steps=warmup,
        rows_per_step=per_device * world_size * accum,  # examples, or packed sequences with packing
        examples_per_step=per_device * world_size * accum * per_row,
        eval_every=eval_every,
        # during training, plus the one LLaMA-Factory runs after the last step (do_eval)
        evaluations=total // eval_every + 1 if eval_every else 0,
        save_every=interval(lf.get("save_steps"), total, 500) if lf.get("save_strategy", "steps") == "steps" else None,
        logging_every=interval(lf.get("logging_steps"), total, 500),
    )
    return plan


def data_counts(lf: dict[str, Any], data: DatasetDir) -> dict[str, Any]:
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
            except Exception:  # noqa: BLE001 - no dataset_info yet: fall back to the expected counts
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
    import yaml

    from movierec.rundir import expand

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "configs" / "data").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out_dir = str(cfg.get("out_dir", ""))
        if out_dir and (expand(out_dir) == data.path or (root / out_dir).resolve() == data.path):
            return {"train": cfg.get("n_train"), "eval": cfg.get("n_eval"), "source": str(path)}
    return None
