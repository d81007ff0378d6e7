"""The end of a training run: its figures over the whole run (every segment, when it was resumed).

transformers' train_results.json holds the mean loss of the last segment only; the run's own
logs (each step once, see RunDir.truncate_logs) give the whole run's. `run_summary.json` keeps
it, and train_results.json / all_results.json are corrected to it.
"""

from __future__ import annotations

from typing import Any

from movierec.folders.rundir import RunDir


def whole_run_loss(log: list[dict[str, Any]]) -> float | None:
    """Mean training loss over the logged steps: each logged value covers the steps since the last log."""
    points = sorted((int(line["current_steps"]), float(line["loss"])) for line in log if "loss" in line)
    total, steps, last = 0.0, 0, 0
    for step, loss in points:
        total += loss * (step - last)
        steps += step - last
        last = step
    return total / steps if steps else None


def summarize(run: RunDir) -> str:
    """Write run_summary.json, correct the results files' train_loss, return the console summary."""
    log = run.read_jsonl(RunDir.TRAINER_LOG)
    losses = [line["loss"] for line in log if "loss" in line]
    evals = [line for line in log if "eval_loss" in line or "eval_auc" in line]
    final = _json(run, RunDir.EVAL_RESULTS)
    best = run.best_checkpoint()
    summary = {
        "steps": max((int(line.get("current_steps", 0)) for line in log), default=0),
        "train_loss": whole_run_loss(log),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "segments": 1 + len(run.previous_records()),
        "final_eval": {k: v for k, v in final.items() if k.startswith("eval_")},
        "checkpoints": [c.name for c in run.checkpoints()],
        "best_checkpoint": best.name if best else None,
        "early_stopping": early_stopping(run),
    }
    run.write_json(RunDir.SUMMARY, summary)
    for name in (RunDir.TRAIN_RESULTS, RunDir.ALL_RESULTS):
        results = _json(run, name)
        if summary["train_loss"] is not None and "train_loss" in results and summary["segments"] > 1:
            results["train_loss_last_segment"] = results["train_loss"]
            results["train_loss"] = summary["train_loss"]
            run.write_json(name, results)
    lines = [f"done: {run.path}, {summary['steps']:,} steps"
             + (f" in {summary['segments']} segments" if summary["segments"] > 1 else "")]
    stop = summary["early_stopping"]
    if stop and stop["stopped_at_step"] is not None:
        by = f" by more than {stop['threshold']:g}" if stop["threshold"] else ""
        best_at = (f"; best {stop['best_metric']:.4f} at step {stop['best_step']:,}"
                   if stop["best_metric"] is not None and stop["best_step"] else "")
        lines.append(f"stopped early at step {stop['stopped_at_step']:,} of {stop['max_steps']:,}: {stop['metric']} "
                     f"did not improve{by} for {stop['patience']} evaluation{'s' * (stop['patience'] != 1)} in a "
                     f"row{best_at}")
    if losses:
        lines.append(f"training loss: {losses[0]:.4f} at the first log -> {losses[-1]:.4f} at the last; "
                     f"{summary['train_loss']:.4f} over the whole run")
    last_auc = next((line["eval_auc"] for line in reversed(evals) if "eval_auc" in line), None)
    if final.get("eval_loss") is not None or last_auc is not None:
        parts = [f"loss {final['eval_loss']:.4f}" if "eval_loss" in final else None,
                 f"AUC {last_auc:.4f}" if last_auc is not None else None]
        lines.append("last evaluation: " + ", ".join(p for p in parts if p))
    if summary["checkpoints"]:
        lines.append(f"checkpoints: {', '.join(summary['checkpoints'])}"
                     + (f" (best: {summary['best_checkpoint']})" if summary["best_checkpoint"] else ""))
    return "\n".join(lines)


def early_stopping(run: RunDir) -> dict[str, Any] | None:
    """Whether early stopping ended the run (None: it was off), from the trainer_state.json that
    LLaMA-Factory saves in output_dir when training ends: a run stopped by it ends before max_steps."""
    mr = run.mr_args()
    if mr.early_stopping_patience is None:
        return None
    state = _json(run, RunDir.TRAINER_STATE)
    step, max_steps = state.get("global_step"), state.get("max_steps")
    stopped = isinstance(step, int) and isinstance(max_steps, int) and step < max_steps
    return {"metric": run.lf_args().get("metric_for_best_model"),
            "patience": mr.early_stopping_patience, "threshold": mr.early_stopping_threshold,
            "stopped_at_step": step if stopped else None, "max_steps": max_steps,
            "best_metric": state.get("best_metric"), "best_step": state.get("best_global_step")}


def _json(run: RunDir, name: str) -> dict[str, Any]:
    """A file LLaMA-Factory writes at the end of training; {} when missing (a run that stopped early)."""
    data = run.read_json(name, default={})
    return data if isinstance(data, dict) else {}
