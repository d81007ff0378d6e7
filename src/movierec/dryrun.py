"""`movierec train --dry-run`: what would run, with counts and estimates, loading no weights."""

from __future__ import annotations

import math
from typing import Any

import yaml

from movierec.runinfo import data_manifest, dataset_examples, dataset_dir

EVAL_SPEEDUP = 3.0  # evaluation examples/s relative to training examples/s (forward only), unless measured


def estimate_steps(lf: dict[str, Any], n_examples: int, world_size: int = 1) -> dict[str, Any]:
    """Optimizer and warmup steps exactly as transformers' Trainer computes them.

    With (neat) packing the Trainer's batches are packed sequences, not examples: their number is
    estimated by packing example lengths drawn like the prepared data's (movierec.lengths).
    """
    if lf.get("max_samples"):
        n_examples = min(n_examples, int(lf["max_samples"]))
    plan: dict[str, Any] = {"examples": n_examples}
    rows = n_examples
    if lf.get("packing") or lf.get("neat_packing"):
        from movierec.lengths import packing_plan, prompt_token_stats

        plan["packing"] = packing_plan(lf, n_examples, *prompt_token_stats(dataset_dir(lf)))
        rows = plan["packing"]["sequences"]
    per_step = int(lf.get("per_device_train_batch_size", 8)) * world_size
    accum = int(lf.get("gradient_accumulation_steps", 1))
    batches = math.ceil(rows / per_step)
    per_epoch = max(batches // accum + int(batches % accum > 0), 1)
    max_steps = int(lf.get("max_steps", -1) or -1)
    total = max_steps if max_steps > 0 else math.ceil(float(lf.get("num_train_epochs", 3.0)) * per_epoch)
    warmup = int(lf.get("warmup_steps", 0) or 0) or math.ceil(total * float(lf.get("warmup_ratio", 0.0)))
    per_row = plan["packing"]["examples_per_sequence"] if "packing" in plan else 1.0
    plan.update(steps_per_epoch=per_epoch, total_optimizer_steps=total, warmup_steps=warmup,
                examples_per_step=per_step * accum * per_row)
    return plan


def eval_interval(lf: dict[str, Any], total_steps: int) -> int | None:
    """Optimizer steps between evaluations, as the Trainer reads eval_steps (< 1: a fraction of training)."""
    if lf.get("eval_strategy", "no") != "steps":
        return None
    every = float(lf.get("eval_steps") or lf.get("logging_steps", 500))
    return max(math.ceil(every * total_steps) if every < 1 else int(every), 1)


def evaluations(lf: dict[str, Any], total_steps: int) -> int:
    """Evaluations during training, plus the one LLaMA-Factory runs after the last step (do_eval)."""
    every = eval_interval(lf, total_steps)
    return total_steps // every + 1 if every else 0


def auc_examples(mr: dict[str, Any] | None, n_eval: int | None) -> int:
    """Examples movierec's AUC callback scores at each evaluation."""
    if not n_eval or not (mr or {}).get("eval_auc", True):
        return 0
    samples = (mr or {}).get("eval_auc_samples")
    return min(int(samples), n_eval) if samples else n_eval


def time_estimate(lf: dict[str, Any], steps: dict[str, Any], rate: float, n_eval: int | None,
                  mr: dict[str, Any] | None = None, eval_rate: float | None = None,
                  auc_rate: float | None = None) -> dict[str, float]:
    """Seconds per epoch and in total at `rate` training examples/s, evaluations included.

    Each evaluation is LLaMA-Factory's loss over the `n_eval` eval examples at `eval_rate`
    examples/s plus movierec's AUC over its examples at `auc_rate`. Unmeasured rates are
    EVAL_SPEEDUP x the training rate: a forward pass costs about a third of a training step
    (the reference run: 2.2 it/s training, 7.9-8.8 examples/s evaluating).
    """
    train_s = steps["total_optimizer_steps"] * steps["examples_per_step"] / rate
    evals = evaluations(lf, steps["total_optimizer_steps"]) if n_eval else 0
    per_eval = (n_eval or 0) / (eval_rate or rate * EVAL_SPEEDUP)
    per_eval += auc_examples(mr, n_eval) / (auc_rate or rate * EVAL_SPEEDUP)
    eval_s = evals * per_eval
    epochs = steps["total_optimizer_steps"] / steps["steps_per_epoch"]
    return {"train_seconds": train_s, "eval_seconds": eval_s, "evaluations": evals,
            "seconds_per_evaluation": per_eval, "total_seconds": train_s + eval_s,
            "eval_fraction": eval_s / (train_s + eval_s), "seconds_per_epoch": (train_s + eval_s) / epochs}


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
    if "packing" in steps:
        p = steps["packing"]
        print(f"packing: ~{p['sequences']:,} sequences of {lf_args.get('cutoff_len', 2048)} tokens, "
              f"~{p['examples_per_sequence']:.1f} examples each ({p['fill']:.0%} filled; estimated from "
              f"{p['lengths_from']}); examples longer than cutoff_len - 1 tokens are dropped: "
              f"~{p['dropped_examples']:,} (longest ~{p['longest_example_tokens']} tokens)")
    print(f"steps: total optimizer steps {steps['total_optimizer_steps']:,}, warmup steps {steps['warmup_steps']:,}, "
          f"steps per epoch {steps['steps_per_epoch']:,}, examples per step {steps['examples_per_step']:,.4g}")
    n_evals = evaluations(lf_args, steps["total_optimizer_steps"]) if n_eval else 0
    if n_evals:
        n_auc = auc_examples(meta.get("movierec"), n_eval)
        every = eval_interval(lf_args, steps["total_optimizer_steps"])
        print(f"evaluations: {n_evals} (every {every:,} steps, and after the last), each: loss "
              f"over {n_eval:,} eval examples" + (f" + AUC over {n_auc:,}" if n_auc else ""))
    if rate:
        t = time_estimate(lf_args, steps, rate, n_eval, meta.get("movierec"))
        print(f"time at {rate:g} examples/s: per epoch {_fmt_duration(t['seconds_per_epoch'])}, "
              f"total {_fmt_duration(t['total_seconds'])} (training {_fmt_duration(t['train_seconds'])} + "
              f"{t['evaluations']} evaluations {_fmt_duration(t['eval_seconds'])}, {t['eval_fraction']:.0%}; "
              f"evaluation at {EVAL_SPEEDUP:g}x the training rate)")
    else:
        print("time: pass --rate EXAMPLES_PER_S (measured with `movierec bench`) for an estimate")
