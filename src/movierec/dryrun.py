"""`movierec train --dry-run`: what would run, with counts and estimates, loading no weights."""

from __future__ import annotations

import math
from typing import Any

import yaml

from movierec.runinfo import data_manifest, dataset_examples

EVAL_SPEEDUP = 3.0  # evaluation examples/s relative to training examples/s (forward only)


def estimate_steps(lf: dict[str, Any], n_examples: int, world_size: int = 1) -> dict[str, int]:
    """Optimizer and warmup steps exactly as transformers' Trainer computes them."""
    if lf.get("max_samples"):
        n_examples = min(n_examples, int(lf["max_samples"]))
    per_step = int(lf.get("per_device_train_batch_size", 8)) * world_size
    accum = int(lf.get("gradient_accumulation_steps", 1))
    batches = math.ceil(n_examples / per_step)
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    max_steps = int(lf.get("max_steps", -1) or -1)
    total = max_steps if max_steps > 0 else math.ceil(float(lf.get("num_train_epochs", 3.0)) * per_epoch)
    warmup = int(lf.get("warmup_steps", 0) or 0) or math.ceil(total * float(lf.get("warmup_ratio", 0.0)))
    return {"examples": n_examples, "steps_per_epoch": per_epoch, "total_optimizer_steps": total, "warmup_steps": warmup}


def time_estimate(lf: dict[str, Any], steps: dict[str, int], rate: float, n_eval: int | None,
                  world_size: int = 1) -> dict[str, float]:
    """Seconds per epoch and in total at `rate` training examples/s, evaluation included.

    Evaluation runs at EVAL_SPEEDUP x the training rate: a forward pass costs about a third of a
    training step (the reference run: 2.2 it/s training, 7.9-8.8 examples/s evaluating).
    """
    per_update = int(lf.get("per_device_train_batch_size", 8)) * world_size * int(lf.get("gradient_accumulation_steps", 1))
    train_s = steps["total_optimizer_steps"] * per_update / rate
    total = steps["total_optimizer_steps"]
    evals = 0
    if n_eval and lf.get("eval_strategy", "no") == "steps":
        every = float(lf.get("eval_steps") or lf.get("logging_steps", 500))
        every = math.ceil(every * total) if every < 1 else int(every)  # < 1: a fraction of training
        evals = total // max(every, 1)
    eval_s = evals * (n_eval or 0) / (rate * EVAL_SPEEDUP)
    epochs = total / steps["steps_per_epoch"]
    return {"train_seconds": train_s, "eval_seconds": eval_s, "evaluations": evals,
            "total_seconds": train_s + eval_s, "seconds_per_epoch": (train_s + eval_s) / epochs}


def _fmt_duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m"


def print_dry_run(meta: dict[str, Any], lf_args: dict[str, Any], world_size: int, rate: float | None,
                  n_train: int | None) -> None:
    print("# resolved configuration (config file + overrides)")
    print(yaml.safe_dump(meta["config"], sort_keys=False, allow_unicode=True), end="")
    print("\n# LLaMA-Factory arguments (saved as llamafactory_train.yaml; runnable with `llamafactory-cli train`)")
    print(yaml.safe_dump(lf_args, sort_keys=False, allow_unicode=True), end="")
    print("\n# run")
    counts = meta["parameters"]
    if counts:
        print(f"parameters: trainable {counts['trainable']:,} || all {counts['total']:,} || "
              f"trainable% {counts['percent']:.4f}")
    else:
        print("parameters: unknown (no config.json for this model under configs/models/)")
    n_eval = dataset_examples(lf_args, "eval_dataset")
    if n_train is None:
        print("steps: unknown until the data is prepared (`movierec prepare`)")
        return
    steps = meta["steps"]
    pending = "" if data_manifest(lf_args) else " (data not prepared yet: counts its data config will produce)"
    print(f"examples: train {n_train:,}" + (f", eval {n_eval:,}" if n_eval else "") + f"; world size {world_size}"
          + pending)
    print(f"steps: total optimizer steps {steps['total_optimizer_steps']:,}, warmup steps {steps['warmup_steps']:,}, "
          f"steps per epoch {steps['steps_per_epoch']:,}")
    if rate:
        t = time_estimate(lf_args, steps, rate, n_eval, world_size)
        print(f"time at {rate:g} examples/s: per epoch {_fmt_duration(t['seconds_per_epoch'])}, "
              f"total {_fmt_duration(t['total_seconds'])} (training {_fmt_duration(t['train_seconds'])} + "
              f"{t['evaluations']} evaluations {_fmt_duration(t['eval_seconds'])})")
    else:
        print("time: pass --rate EXAMPLES_PER_S (measured with `movierec bench`) for an estimate")
