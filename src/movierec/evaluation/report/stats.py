"""The report's numbers, computed from the parsed run (inputs.load_run): speed, evaluations, progress, estimates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from movierec.train.plan import TrainPlan

STABLE_AFTER = 10  # steps: first-step compilation, allocator and cache warm-up are over by then
PEAK_WINDOW = 10  # steps averaged for the peak speed (a single step is too noisy)

def _seconds(elapsed: str) -> float:
    """'1 day, 2:03:04' or '0:00:05' (LLaMA-Factory's str(timedelta)) -> seconds."""
    days = 0
    if "day" in elapsed:
        head, elapsed = elapsed.split(",", 1)
        days = int(head.split()[0])
    h, m, s = (float(x) for x in elapsed.strip().split(":"))
    return days * 86400 + h * 3600 + m * 60 + s

def train_speed(step_times: pd.DataFrame, log: pd.DataFrame) -> dict[str, Any] | None:
    """Optimizer steps per second: average, first step, stabilised (median after STABLE_AFTER steps,
    with the middle half's range) and peak (best PEAK_WINDOW-step average).

    Uses step_times.jsonl (pure step time) when present, else the intervals between trainer_log
    lines (coarser: whole seconds, and intervals with an evaluation include its time).
    """
    if not step_times.empty and "seconds" in step_times:
        steps = pd.Series(1.0, index=step_times.index)
        secs = step_times["seconds"].astype(float)
        source = "step_times.jsonl (per optimizer step, evaluation excluded)"
    elif not log.empty and "elapsed_time" in log:
        t = log["elapsed_time"].dropna().map(_seconds)
        steps = pd.Series(t.index, index=t.index).diff().fillna(t.index[0])
        secs = t.diff().fillna(t.iloc[0])
        keep = (steps > 0) & (secs > 0)  # a resume restarts the clock
        steps, secs = steps[keep], secs[keep]
        source = "trainer_log.jsonl intervals (whole seconds, evaluation time included)"
    else:
        return None
    if secs.empty:
        return None
    rate = steps / secs
    stable = rate.iloc[STABLE_AFTER:] if len(rate) > STABLE_AFTER else rate
    window = min(PEAK_WINDOW, len(rate))
    peak = (steps.rolling(window).sum() / secs.rolling(window).sum()).max()
    return {
        "source": source,
        "steps_timed": int(steps.sum()),
        "average": float(steps.sum() / secs.sum()),
        "first": float(rate.iloc[0]),
        "first_step": int(rate.index[0]),
        "stable": float(stable.median()),
        "stable_low": float(stable.quantile(0.25)),
        "stable_high": float(stable.quantile(0.75)),
        "peak": float(peak),
    }

def eval_runs(state: dict, eval_results: dict) -> pd.DataFrame:
    """Evaluation timings from the trainer state's log history and the final eval_results.json."""
    rows = [h for h in state.get("log_history", []) if "eval_runtime" in h]
    if "eval_runtime" in eval_results:
        rows.append({"step": "final", **eval_results})
    return pd.DataFrame(rows)

def progress(run: dict) -> dict[str, Any]:
    log, state = run["log"], run["state"]
    done = max(int(log.index.max()) if not log.empty else 0, int(state.get("global_step") or 0))
    total = None
    if not log.empty and "total_steps" in log:
        total = int(log["total_steps"].dropna().iloc[-1])
    plan = run["plan"]
    total = total or state.get("max_steps") or (plan.total_optimizer_steps if plan else None)
    return {"done": done, "total": total, "percent": 100 * done / total if total else None}

def estimates(speed: dict | None, evals: pd.DataFrame, total: int | None, plan: TrainPlan | None) -> dict | None:
    """Training time from the stabilised speed (as the reference sheet does), plus the evaluations (their
    count from the run's recorded plan, the final one included; each at the mean measured eval_runtime)."""
    if speed is None or not total:
        return None
    rate = speed["stable"]
    out = {"rate": rate, "train_s": total / rate, "epoch_s": total / rate / (plan.epochs if plan else 1.0)}
    if "eval_runtime" in evals and plan and plan.evaluations:
        out["n_evals"] = plan.evaluations
        out["eval_s"] = out["n_evals"] * float(evals["eval_runtime"].mean())
    return out

def parameter_counts(resolved: dict, arch: dict | None) -> dict | None:
    """The run's recorded counts, else counted from the architecture without weights."""
    from movierec.models.params import count_for_config

    if resolved.get("parameters"):
        return resolved["parameters"]
    return count_for_config(resolved["config"], arch) if arch is not None else None

def ordered_baselines(baselines: dict) -> list[tuple[str, dict]]:
    """Baselines in the order baselines.json lists them (`movierec baselines` writes the simplest first)."""
    return list(baselines["baselines"].items())
