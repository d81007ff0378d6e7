"""`movierec train --dry-run`: what would run, with counts and estimates, loading no weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from movierec.train.checks import compiles
from movierec.train.config import MovierecArguments, arg
from movierec.train.plan import TrainPlan, counted

EVAL_SPEEDUP = 3.0  # evaluation examples/s relative to training examples/s (forward only), unless measured


def time_estimate(plan: TrainPlan, rate: float, n_eval: int | None, mr: MovierecArguments | None = None,
                  eval_rate: float | None = None, auc_rate: float | None = None) -> dict[str, float]:
    """Seconds per epoch and in total at `rate` training examples/s, evaluations included.

    Each evaluation is LLaMA-Factory's loss over the `n_eval` eval examples at `eval_rate`
    examples/s plus movierec's AUC over its examples at `auc_rate`. Unmeasured rates are
    EVAL_SPEEDUP x the training rate: a forward pass costs about a third of a training step
    (the reference run: 2.2 it/s training, 7.9-8.8 examples/s evaluating).
    """
    mr = mr or MovierecArguments()
    train_s = plan.total_optimizer_steps * plan.examples_per_step / rate
    evals = plan.evaluations if n_eval else 0
    per_eval = (n_eval or 0) / (eval_rate or rate * EVAL_SPEEDUP)
    per_eval += mr.auc_examples(n_eval) / (auc_rate or rate * EVAL_SPEEDUP)
    eval_s = evals * per_eval
    return {"train_seconds": train_s, "eval_seconds": eval_s, "evaluations": evals,
            "seconds_per_evaluation": per_eval, "total_seconds": train_s + eval_s,
            "eval_fraction": eval_s / (train_s + eval_s), "seconds_per_epoch": (train_s + eval_s) / plan.epochs}


def _fmt_duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m"


def print_dry_run(record: dict[str, Any], lf_args: dict[str, Any], plan: TrainPlan | None, mr: MovierecArguments,
                  rate: float | None) -> None:
    """The run record's configuration, LLaMA-Factory arguments, parameter counts and plan."""
    print("# resolved configuration (config file + overrides)")
    print(yaml.safe_dump(record["config"], sort_keys=False, allow_unicode=True), end="")
    print("\n# LLaMA-Factory arguments (saved as llamafactory_train.yaml; runnable with `llamafactory-cli train`)")
    print(yaml.safe_dump(lf_args, sort_keys=False, allow_unicode=True), end="")
    print("\n# run")
    counts = record["parameters"]
    if counts:
        print(f"parameters: trainable {counts['trainable']:,} || all {counts['total']:,} || "
              f"trainable% {counts['percent']:.4f}")
    else:
        print("parameters: unknown (no config.json for this model under movierec/resources/models/)")
    data = record["data_counts"]
    if plan is None:
        print("steps: unknown until the data is prepared (`movierec prepare`)")
        return
    n_eval = data.get("eval")
    source = f"configs/data/{Path(data['source']).name}" if data.get("source") else "its data config"
    pending = "" if data["prepared"] else f" (data not prepared yet: the counts that {source} will write)"
    print(f"examples: train {counted(data['train'], lf_args)}" + (f", eval {counted(n_eval, lf_args)}" if n_eval else "")
          + f"; world size {plan.world_size}" + pending)
    if plan.packing:
        p = plan.packing
        print(f"packing: ~{p.sequences:,} sequences of {arg(lf_args, 'cutoff_len')} tokens, "
              f"~{p.examples_per_sequence:.1f} examples each ({p.fill:.0%} filled; estimated from "
              f"{p.lengths_from}); examples longer than cutoff_len - 1 tokens are dropped: "
              f"~{p.dropped_examples:,} (longest ~{p.longest_example_tokens} tokens)")
    print(f"steps: total optimizer steps {plan.total_optimizer_steps:,}, warmup steps {plan.warmup_steps:,}, "
          f"steps per epoch {plan.steps_per_epoch:,}, examples per step {plan.examples_per_step:,.4g}")
    if n_eval and plan.evaluations:
        n_auc = mr.auc_examples(n_eval)
        print(f"evaluations: {plan.evaluations} (every {plan.eval_every:,} steps, and after the last), each: "
              f"loss over {n_eval:,} eval examples" + (f" + AUC over {n_auc:,}" if n_auc else ""))
    if rate:
        t = time_estimate(plan, rate, n_eval, mr)
        print(f"time at {rate:g} examples/s: per epoch {_fmt_duration(t['seconds_per_epoch'])}, "
              f"total {_fmt_duration(t['total_seconds'])} (training {_fmt_duration(t['train_seconds'])} + "
              f"{t['evaluations']} evaluations {_fmt_duration(t['eval_seconds'])}, {t['eval_fraction']:.0%}; "
              f"evaluation at {EVAL_SPEEDUP:g}x the training rate)")
        if compiles(lf_args):
            print("  not counted: torch.compile's compiles (the first batch of each shape, for training and for "
                  "evaluation; `movierec bench` shows them in step_seconds_p90)")
    else:
        print("time: pass --rate EXAMPLES_PER_S (measured with `movierec bench`) for an estimate")
