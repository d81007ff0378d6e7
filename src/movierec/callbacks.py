"""Trainer callbacks movierec adds to LLaMA-Factory's: per-step timing and eval AUC."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class StepTimerCallback(TrainerCallback):
    """Append `{"step", "seconds", "examples"}` per optimizer step to step_times.jsonl.

    The report derives first-step, stabilised and peak speed from it; trainer_log.jsonl only
    has cumulative time at logging steps.
    """

    def __init__(self, output_dir: str, examples_per_step: int):
        self.path = Path(output_dir) / "step_times.jsonl"
        self.examples_per_step = examples_per_step
        self._t0: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None or not state.is_world_process_zero:
            return
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # count the queued optimizer update in this step, not the next
        line = {"step": state.global_step, "seconds": round(time.perf_counter() - self._t0, 5),
                "examples": self.examples_per_step}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def keep_fp32_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its bf16 CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes' Linear4bit repacks its weight on the first forward
    in eval mode without grad (any evaluation) and never unpacks it when training resumes:
    later training steps then run ~30x slower on the repacked weight and give different results,
    and evaluation computes in bf16. movierec computes in fp32 on CPU, so it turns that off.
    Returns the number of layers changed (0 off CPU-capable builds).
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


class CpuFp32Callback(TrainerCallback):
    """Applies keep_fp32_on_cpu before the first step (see there)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            keep_fp32_on_cpu(model)


def build_callbacks(lf_args: dict[str, Any], mr_args: dict[str, Any]) -> list[TrainerCallback]:
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    per_step = (int(lf_args.get("per_device_train_batch_size", 8)) * world
                * int(lf_args.get("gradient_accumulation_steps", 1)))
    callbacks: list[TrainerCallback] = [CpuFp32Callback(), StepTimerCallback(lf_args["output_dir"], per_step)]
    if mr_args.get("eval_auc", True) and lf_args.get("eval_dataset") and lf_args.get("eval_strategy", "no") != "no":
        from movierec.scoring import AucCallback

        callbacks.append(AucCallback(lf_args, mr_args))
    return callbacks
