"""Rules on config values beyond their types (`validate` runs them; each returns `key: problem` lines):
ranges, early stopping's needs, throughput levers and trackers that need packages movierec does not
install, and combinations LLaMA-Factory would accept but that break the run."""

from __future__ import annotations

import importlib.util
import math
from typing import Any


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)



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
    ("max_steps", lambda v: v == -1 or v >= 1, "-1 (train num_train_epochs) or >= 1"),
    ("max_samples", _at_least(1, optional=True), ">= 1 or null"),
    ("preprocessing_num_workers", _at_least(1, optional=True), ">= 1 or null"),
    ("dataloader_num_workers", _at_least(0), ">= 0"),
    ("seed", _at_least(0), ">= 0"),
    ("eval_auc_samples", _at_least(1, optional=True), ">= 1 or null"),
    ("eval_auc_batch_size", _at_least(1), ">= 1"),
    ("early_stopping_patience", _at_least(1, optional=True), "an integer >= 1 (evaluations) or null (off)"),
    ("early_stopping_threshold", _at_least(0), ">= 0"),
    ("shape_buckets", lambda v: v is None or (v >= 8 and v % 8 == 0), "a multiple of 8 tokens (e.g. 32 or 64) or null"),
]


def check_ranges(lf: dict[str, Any], mr: dict[str, Any]) -> list[str]:
    """Values out of range, one `key: problem` line each (keys left at their defaults are not checked)."""
    given = {**lf, **mr}
    infinite = {k for k, v in given.items() if isinstance(v, float) and not math.isfinite(v)}
    problems = [f"{key}: must be a finite number, got {given[key]!r}" for key in sorted(infinite)]
    problems += [f"{key}: must be {what}, got {given[key]!r}" for key, ok, what in RANGES
                 if key in given and key not in infinite and not ok(given[key])]
    if "num_train_epochs" in infinite:
        return problems
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
    known = {"eval_loss", *SCORES} | ({"eval_accuracy"} if lf.get("compute_accuracy") else set()) | (
        {"eval_rouge-1", "eval_rouge-2", "eval_rouge-l", "eval_bleu-4"} if lf.get("predict_with_generate") else set())
    if name and evaluates and name not in known:  # transformers would fail with a KeyError at the first evaluation
        problems.append(f"metric_for_best_model: no evaluation logs {metric}; one of {', '.join(sorted(known))}")
    higher = SCORES.get(name)
    if higher is not None and lf.get("greater_is_better") not in (None, higher):
        problems.append(f"greater_is_better: {_to_text(lf['greater_is_better'])} ranks {metric} backwards (higher is "
                        f"{'better' if higher else 'worse'}); set greater_is_better: {_to_text(higher)} or leave it unset")
    if lf.get("early_stopping_steps") is not None:
        problems.append("early_stopping_steps: LLaMA-Factory's early stopping (patience only, counted in evaluations "
                        "despite its name); use movierec's early_stopping_patience and early_stopping_threshold")
    return problems


def check_answer_logits(lf: dict[str, Any], mr: dict[str, Any]) -> list[str]:
    """answer_logits_only beside what would read the logits it no longer computes, or replaces its forward."""
    if not mr.get("answer_logits_only"):
        return []
    clashes = {"enable_liger_kernel": "Liger's fused linear cross-entropy already skips the logits tensor",
               "use_unsloth": "unsloth replaces the model's forward and loss",
               "compute_accuracy": "the token accuracy at evaluations reads the logits at every position"}
    return [f"answer_logits_only: true cannot go with {key}: true ({why}); drop one of them"
            for key, why in clashes.items() if lf.get(key)]


# torch.compile modes that record CUDA graphs on a GPU (reduce-overhead does nothing else)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiles(args: dict[str, Any]) -> bool:
    """Whether the Trainer compiles the model: transformers turns torch_compile on for a compile mode or backend."""
    return any(args.get(key) for key in ("torch_compile", "torch_compile_mode", "torch_compile_backend"))


def check_shape_buckets(lf: dict[str, Any], mr: dict[str, Any]) -> tuple[list[str], list[str]]:
    """shape_buckets (train/static_shapes.py): (problems, warnings)."""
    if not mr.get("shape_buckets"):
        mode = lf.get("torch_compile_mode")
        return [], [f"torch_compile_mode: {mode} records a CUDA graph for every batch shape, and unbucketed "
                    "batches come in a dozen lengths or more; set shape_buckets: 64"] if mode in CUDA_GRAPH_MODES else []
    problems = [f"shape_buckets: cannot go with {key}: true ({why}); drop one of them" for key, why in {
        "neat_packing": "packed rows carry their own 4D attention masks, which it does not pad",
        "use_unsloth": "unsloth replaces the model's forward and compiles its own kernels",
        "compute_accuracy": "evaluation batches are padded too, and the accuracy reads their padded logits",
        "predict_with_generate": "evaluation batches are padded too, and generation reads them"}.items() if lf.get(key)]
    size, cutoff = mr["shape_buckets"], int(lf.get("cutoff_len", 2048))
    if isinstance(size, int) and size > cutoff:  # a batch never grows past cutoff_len: one bucket of padding
        problems.append(f"shape_buckets: {size} is longer than cutoff_len ({cutoff}), the longest an example gets; "
                        "use a few dozen tokens (e.g. 32 or 64)")
    warnings = [] if compiles(lf) else ["shape_buckets: without torch_compile: true it only adds padding (the shapes "
                                    "matter to a compiled model and CUDA graphs)"]
    return problems, warnings


# Throughput levers that need a package movierec does not install: key, value -> (module, what to install).
OPTIONAL_PACKAGES = {
    ("enable_liger_kernel", True): ("liger_kernel", "pip install liger-kernel"),
    ("flash_attn", "fa2"): ("flash_attn", "pip install flash-attn --no-build-isolation (a build for your torch and CUDA)"),
    # unsloth's metadata excludes datasets 4.0 (which LLaMA-Factory 0.9.5 pins): install without its dependencies
    ("use_unsloth", True): ("unsloth", "pip install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9 (offline: "
                                       "the wheels that scripts/offline_wheels.sh puts in .whl/)"),
}
# Levers that run only on a GPU: key, value -> why.
GPU_ONLY = {
    ("use_unsloth", True): "unsloth's kernels are Triton kernels for CUDA GPUs",
    ("enable_liger_kernel", True): "Liger's kernels are Triton kernels for GPUs",
}


# report_to integrations -> the module each needs (transformers fails on a missing one only at Trainer start)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "neptune": "neptune", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
            "trackio": "trackio", "aim": "aim"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_device_levers(args: dict[str, Any], device: str) -> list[str]:
    """Levers the chosen device cannot run (each would fail after the model is loaded): one line each."""
    problems = [f"{key}: {_to_text(value)} cannot run on {device}: {why}; use --device cuda or drop {key}"
                for (key, value), why in GPU_ONLY.items() if args.get(key) == value and device != "cuda"]
    if args.get("torch_compile_mode") == "reduce-overhead" and device != "cuda":
        problems.append(f"torch_compile_mode: reduce-overhead replays CUDA graphs, which need --device cuda; on {device} "
                        "use torch_compile: true without a mode")
    if str(args.get("optim", "")).endswith("_fused"):
        import torch
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = _get_fused_kernels_supported_devices()
        if device not in supported:
            problems.append(f"optim: {args['optim']} needs torch's fused AdamW kernels, which torch {torch.__version__} "
                            f"has for {', '.join(supported)}, not {device}: use optim: adamw_torch")
    return problems


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
