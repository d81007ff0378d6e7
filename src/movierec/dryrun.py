"""`movierec train --dry-run`: what would run, with counts and estimates, loading no weights."""

from __future__ import annotations

from typing import Any

import yaml

from movierec.runinfo import data_manifest, dataset_examples


def _fmt_duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m"


def print_dry_run(meta: dict[str, Any], lf_args: dict[str, Any], world_size: int, rate: float | None,
                  n_train: int | None) -> None:
    from movierec.train import time_estimate

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
