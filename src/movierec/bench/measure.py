"""What one `movierec bench` training part measures, and how: a synchronised clock around the timed
steps, the GPU-busy fraction from torch.profiler, step-time percentiles, and the loss at both ends.

No per-step host synchronisation is added: the Trainer is set to log every few steps only (each log
reads the loss with `.item()`, a sync) and to count no tokens (`include_num_input_tokens_seen` reads a
sum per step); the clock synchronises at the two ends of the timed window only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.errors import UserError
from movierec.folders.io import read_json
from movierec.folders.rundir import RunDir

WARMUP_FRACTION = 0.2
PROFILED_STEPS = 5  # GPU-busy fraction: device kernel time over wall time over the last 5 steps


def warmup_steps(steps: int) -> int:
    return min(max(1, round(steps * WARMUP_FRACTION)), steps - 1)


def window(steps: int, profile: bool) -> tuple[int, int, int | None]:
    """(first timed step - 1, last timed step, first profiled step - 1 or None): the profiled steps come
    after the timed ones (the profiler slows the host), when there are enough steps for both."""
    warmup = warmup_steps(steps)
    if profile and steps - PROFILED_STEPS > warmup:
        return warmup, steps - PROFILED_STEPS, steps - PROFILED_STEPS
    return warmup, steps, None


def logging_steps(configured: float, steps: int) -> int:
    """The profile's logging interval (its `.item()` syncs are part of its speed), at most steps // 3 so
    that at least three losses are logged."""
    every = configured * steps if 0 < configured < 1 else configured  # a fraction of the run, as transformers reads it
    return max(1, min(int(math.ceil(every)), steps // 3))


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def busy_fraction(intervals: list[tuple[float, float]], wall_us: float) -> float:
    """Union of the kernels' [start, end) intervals (µs; concurrent streams counted once) over the wall time."""
    if not intervals or wall_us <= 0:
        return 0.0
    spans = np.array(sorted(intervals), dtype=np.float64)
    busy, (start, end) = 0.0, spans[0]
    for s, e in spans[1:]:
        if s > end:
            busy, start, end = busy + end - start, s, e
        else:
            end = max(end, e)
    return min((busy + end - start) / wall_us, 1.0)


def window_callback(out_dir: Path, steps: int, device: str):
    """A TrainerCallback writing RunDir.BENCH_WINDOW: synchronised times at the window's ends and, on CUDA, the
    GPU-busy fraction of the profiled steps."""
    from transformers import TrainerCallback

    start, end, profile_from = window(steps, device == "cuda")

    class BenchWindow(TrainerCallback):
        def __init__(self):
            self.marks: dict[int, float] = {}
            self.profiler = None
            self.busy: dict[str, Any] = {"gpu_busy_fraction": None, "gpu_busy_note": (
                "CPU run: no device kernels to time" if device != "cuda" else
                f"needs more than {warmup_steps(steps) + PROFILED_STEPS} steps (warm-up + {PROFILED_STEPS} profiled)")}

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step in (start, end):
                _sync()
                self.marks[step] = time.perf_counter()
            if step == profile_from:
                import torch

                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                self.profiler.__enter__()
                self.marks["profile_start"] = time.perf_counter()
            elif step == steps and self.profiler is not None:
                _sync()
                wall_us = (time.perf_counter() - self.marks["profile_start"]) * 1e6
                self.profiler.__exit__(None, None, None)
                kernels = [(e.time_range.start, e.time_range.end) for e in self.profiler.events()
                           if e.device_type.name == "CUDA"]
                self.busy = {"gpu_busy_fraction": busy_fraction(kernels, wall_us), "gpu_busy_note": (
                    f"torch.profiler over the last {PROFILED_STEPS} steps: union of device kernel time / wall time "
                    f"({len(kernels)} kernels; the profiler's own host overhead makes this a lower bound)")}

        def on_train_end(self, args, state, control, **kwargs):
            record = {"start_step": start, "end_step": end, "seconds": self.marks.get(end, 0) - self.marks.get(start, 0),
                      **self.busy}
            RunDir(out_dir).write_json(RunDir.BENCH_WINDOW, record)

    return BenchWindow()


def measure(run: RunDir, steps: int, rows_per_step: int, per_row: tuple[float, float]) -> dict[str, Any]:
    """Rates over the timed window, step-time percentiles, and the first and last logged loss (both finite).

    per_row: (examples, real tokens) per batch row: 1 example and the generated data's mean length
    unpacked, the packed sequences' means packed.
    """
    times = run.read_jsonl(RunDir.STEP_TIMES)
    if len(times) != steps:
        raise UserError(f"bench: {len(times)} steps were timed, expected {steps}")
    win = read_json(run.file(RunDir.BENCH_WINDOW))
    timed_steps = win["end_step"] - win["start_step"]
    seconds = win["seconds"]
    step_s = np.array([t["seconds"] for t in times[win["start_step"]:win["end_step"]]])
    losses = [line["loss"] for line in run.read_jsonl(RunDir.TRAINER_LOG) if "loss" in line]
    if not losses or not all(math.isfinite(x) for x in (losses[0], losses[-1])):
        raise UserError(f"bench: training loss not finite (first {losses[:1]}, last {losses[-1:]})")
    examples = timed_steps * rows_per_step * per_row[0]
    return {"steps": steps, "warmup_steps": win["start_step"], "timed_steps": timed_steps,
            "timed_seconds": round(seconds, 3), "examples_per_s": examples / seconds,
            "tokens_per_s": timed_steps * rows_per_step * per_row[1] / seconds,
            "tokens_per_example": per_row[1] / per_row[0],
            "step_seconds_p50": float(np.percentile(step_s, 50)), "step_seconds_p90": float(np.percentile(step_s, 90)),
            "step_seconds_note": "host-side time per step (synchronised with the device at logging steps only); "
                                 "examples_per_s comes from the window's synchronised clock",
            # a steady-state rate that a few slow steps (a compiled row's first batch of each shape) do not move
            "examples_per_s_at_median_step": rows_per_step * per_row[0] / float(np.percentile(step_s, 50)),
            "first_loss": losses[0], "last_loss": losses[-1], "losses_logged": len(losses),
            "gpu_busy_fraction": win["gpu_busy_fraction"], "gpu_busy_note": win["gpu_busy_note"]}


def measure_eval(run: RunDir, n_eval: int, eval_batch: int, auc_batch: int) -> dict[str, Any]:
    """LLaMA-Factory's evaluation (eval_results.json) and movierec's AUC callback (trainer_log.jsonl)."""
    metrics = read_json(run.file(RunDir.EVAL_RESULTS))
    out: dict[str, Any] = {"eval": {"examples": n_eval, "batch_size": eval_batch, "seconds": metrics["eval_runtime"],
                                    "examples_per_s": n_eval / metrics["eval_runtime"]}, "auc": None}
    lines = run.read_jsonl(RunDir.TRAINER_LOG)
    auc = [line for line in lines if "eval_auc_seconds" in line]
    if auc:
        n, s = auc[-1]["eval_auc_examples"], auc[-1]["eval_auc_seconds"]
        out["auc"] = {"examples": n, "batch_size": auc_batch, "seconds": s, "examples_per_s": n / s}
    return out


def bench_args(lf: dict[str, Any], steps: int, work: Path, model_dir: Path) -> dict[str, Any]:
    """The config's LLaMA-Factory args, set to train `steps` steps on the generated data, then evaluate."""
    args = dict(lf)
    for key in ("val_size", "load_best_model_at_end", "resume_from_checkpoint", "metric_for_best_model"):
        args.pop(key, None)
    args.update(
        model_name_or_path=str(model_dir),
        dataset="movierec_bench", eval_dataset="movierec_bench",  # names only: tokenized_path replaces the data
        tokenized_path=str(work / "data"),
        output_dir=str(work / "out"),
        max_steps=steps, do_train=True, do_eval=True, do_predict=False, eval_strategy="no",
        save_strategy="no", report_to="none", plot_loss=False,
        logging_steps=logging_steps(float(lf.get("logging_steps", 10)), steps),
        include_num_input_tokens_seen="no",  # its per-step sum is a host sync; tokens come from the data
    )
    return args
