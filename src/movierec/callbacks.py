"""Trainer callbacks movierec adds to LLaMA-Factory's: per-step timing and eval AUC."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback


class StepTimerCallback(TrainerCallback):
    """Append `{"step", "seconds", "examples"}` per optimizer step to step_times.jsonl.

    The report derives first-step, stabilised and peak speed from it; trainer_log.jsonl only
    has cumulative time at logging steps. With packing a batch holds packed sequences, whose
    example count varies: the line says `"sequences"` instead of `"examples"`.
    """

    def __init__(self, output_dir: str, per_step: int, unit: str = "examples"):
        self.path = Path(output_dir) / "step_times.jsonl"
        self.per_step, self.unit = per_step, unit
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
                self.unit: self.per_step}
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


class AucCallback(TrainerCallback):
    """Adds `eval_auc` at every evaluation (before the best checkpoint is chosen).

    The value goes into the evaluation metrics (so `metric_for_best_model: eval_auc` works),
    the trainer state's log history, TensorBoard (`eval/auc`) and trainer_log.jsonl.
    Every rank scores the same subsample, so all ranks agree on the best checkpoint.
    `prompts` (token ids) and `labels` replace the eval file (the benchmark's generated prompts).
    """

    def __init__(self, lf_args: dict[str, Any], mr_args: dict[str, Any], prompts: list[list[int]] | None = None,
                 labels: list[int] | None = None):
        from movierec.metrics import auc
        from movierec.scoring import eval_file, read_jsonl, subsample

        self._auc = auc
        self.records: list[dict[str, Any]] = []
        if prompts is None:
            self.records = subsample(read_jsonl(eval_file(lf_args)), mr_args.get("eval_auc_samples"),
                                     seed=int(lf_args.get("seed", 42)))
            labels = [int(r["label"]) for r in self.records]
        self.labels = np.array(labels)
        self.cutoff_len = int(lf_args.get("cutoff_len", 2048))
        self.template_name = lf_args.get("template", "default")
        self.batch_size = int(mr_args.get("eval_auc_batch_size", 16))
        self.logging_dir = lf_args.get("logging_dir")
        self._prompts = prompts
        self._scorer = None
        self._writer = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        if metrics is None or model is None:
            return
        if self._scorer is None:
            from movierec.scoring import YesNoScorer, build_template

            template = build_template(processing_class, self.template_name, self.cutoff_len)
            self._scorer = YesNoScorer(model, processing_class, template, self.cutoff_len, self.batch_size)
            if self._prompts is None:
                self._prompts = self._scorer.encode_many(self.records)
        self._scorer.model = model
        start = time.perf_counter()
        value = self._auc(self.labels, self._scorer.score_ids(self._prompts))
        seconds = time.perf_counter() - start
        value = float("nan") if value is None else float(value)
        metrics["eval_auc"] = value
        entry = {"eval_auc": value, "eval_auc_examples": len(self._prompts), "eval_auc_seconds": round(seconds, 3),
                 "epoch": state.epoch, "step": state.global_step}
        state.log_history.append(entry)
        if state.is_world_process_zero:
            self._log(args, state, entry)

    def _log(self, args, state, entry: dict[str, Any]) -> None:
        line = {"current_steps": state.global_step, "total_steps": state.max_steps,
                **{k: v for k, v in entry.items() if k != "step"}}
        with open(Path(args.output_dir) / "trainer_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if "tensorboard" in (args.report_to or []) and self.logging_dir:
            from torch.utils.tensorboard import SummaryWriter

            if self._writer is None:
                self._writer = SummaryWriter(self.logging_dir, filename_suffix=".eval_auc")
            self._writer.add_scalar("eval/auc", entry["eval_auc"], state.global_step)
            self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()


def build_callbacks(lf_args: dict[str, Any], mr_args: dict[str, Any]) -> list[TrainerCallback]:
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    per_step = (int(lf_args.get("per_device_train_batch_size", 8)) * world
                * int(lf_args.get("gradient_accumulation_steps", 1)))
    unit = "sequences" if lf_args.get("packing") or lf_args.get("neat_packing") else "examples"
    callbacks: list[TrainerCallback] = [CpuFp32Callback(), StepTimerCallback(lf_args["output_dir"], per_step, unit)]
    if mr_args.get("eval_auc", True) and lf_args.get("eval_dataset") and lf_args.get("eval_strategy", "no") != "no":
        callbacks.append(AucCallback(lf_args, mr_args))
    return callbacks
