"""`movierec report --run DIR`: report.md + plots/*.png rebuilt from a run folder's files only.

The sections mirror the reference run's parameter-and-performance sheet. Every
input but resolved_config.yaml is optional: a section whose files are missing says so.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from movierec.errors import UserError
from movierec.io import atomic_write_bytes, atomic_write_text
from movierec.rundir import RunDir

NA = "not available"
METRIC_COLUMNS = [("N", "n"), ("AUC", "auc"), ("UAUC", "uauc"), ("Log loss", "log_loss"),
                  ("Accuracy", "accuracy"), ("F1", "f1"), ("ECE", "ece")]
STABLE_AFTER = 10  # steps: first-step compilation, allocator and cache warm-up are over by then
PEAK_WINDOW = 10  # steps averaged for the peak speed (a single step is too noisy)


# ---------------------------------------------------------------- reading


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSONL file; [] when it is missing. A torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise UserError(f"{path}:{i + 1}: not valid JSON") from None
    return out


def _per_step(lines: list[dict], step_key: str) -> pd.DataFrame:
    """One row per step; a later line for the same step (a resumed run) overrides, key by key."""
    df = pd.DataFrame([line for line in lines if step_key in line])
    if df.empty:
        return df
    return df.groupby(step_key).last().sort_index()


def load_run(run_dir: str | Path, baselines: str | Path | None = None) -> dict[str, Any]:
    """Every file the report uses, parsed; missing optional files are None or empty."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run: {run_dir} is not a folder")
    resolved_path = run_dir / "resolved_config.yaml"
    if not resolved_path.is_file():
        raise UserError(f"--run: {run_dir} has no resolved_config.yaml (not a `movierec train` run folder)")
    resolved = yaml.safe_load(resolved_path.read_text())
    if not isinstance(resolved, dict) or not isinstance(resolved.get("config"), dict):
        raise UserError(f"{resolved_path}: expected a mapping with a `config` mapping")
    checkpoints = RunDir(run_dir).checkpoints()
    state = _json(run_dir / "trainer_state.json")
    for ckpt in checkpoints[::-1]:
        if state is not None:
            break
        state = _json(ckpt / "trainer_state.json")
    manifest_path = Path(resolved["data_manifest"]) if resolved.get("data_manifest") else None
    if baselines is None and manifest_path is not None:
        baselines = manifest_path.parent / "baselines.json"
    elif baselines is not None and not Path(baselines).is_file():
        raise UserError(f"--baselines: {baselines} not found")
    return {
        "dir": run_dir,
        "resolved": resolved,
        "cfg": resolved["config"],
        "log": _per_step(read_jsonl(run_dir / "trainer_log.jsonl"), "current_steps"),
        "step_times": _per_step(read_jsonl(run_dir / "step_times.jsonl"), "step"),
        "state": state or {},
        "checkpoints": [p.name for p in checkpoints],
        "train_results": _json(run_dir / "train_results.json") or {},
        "eval_results": _json(run_dir / "eval_results.json") or {},
        "metrics": _json(run_dir / "metrics.json"),
        "predictions": read_jsonl(run_dir / "predictions.jsonl"),
        "manifest": _json(manifest_path) if manifest_path else None,
        "manifest_path": manifest_path,
        "baselines": _json(Path(baselines)) if baselines else None,
        "baselines_path": Path(baselines) if baselines else None,
    }


# ---------------------------------------------------------------- computing


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
    total = total or state.get("max_steps") or (run["resolved"].get("steps") or {}).get("total_optimizer_steps")
    return {"done": done, "total": total, "percent": 100 * done / total if total else None}


# ---------------------------------------------------------------- formatting


def _fmt(v: Any, digits: int | None = None) -> str:
    """Table cell text: ints with thousands separators, floats as written in configs (`g`) unless
    `digits` asks for fixed decimals (metrics)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:g}" if digits is None else f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else _fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _kv(rows: list[tuple[str, Any]]) -> str:
    return _table(["Parameter", "Value"], [[f"**{k}**", v] for k, v in rows])


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# ---------------------------------------------------------------- sections


def architecture(cfg: dict) -> dict | None:
    """The base model's config.json (local folder or configs/models/), None when unknown."""
    from movierec.params import load_model_config

    try:
        return load_model_config(cfg["model_name_or_path"]) if cfg.get("model_name_or_path") else None
    except UserError:
        return None


def parameter_counts(resolved: dict, arch: dict | None) -> dict | None:
    """The run's recorded counts, else counted from the architecture without weights."""
    from movierec.params import count_for_config

    if resolved.get("parameters"):
        return resolved["parameters"]
    return count_for_config(resolved["config"], arch) if arch is not None else None


def _model(run: dict, arch: dict | None, counts: dict | None) -> str:
    cfg, out = run["cfg"], ["## Model Configuration\n\n"]
    name = cfg.get("model_name_or_path")
    out.append(_kv([
        ("Base Model", name), ("Model Architecture", _fmt((arch or {}).get("architectures")) if arch else NA),
        ("Template", cfg.get("template")),
        ("Total Parameters", counts["total"] if counts else NA),
        ("Trainable Parameters", counts["trainable"] if counts else NA),
        ("Trainable Percentage", f"{counts['percent']:.4f}%" if counts else NA),
        ("Context Length", f"{cfg['cutoff_len']:,} tokens" if "cutoff_len" in cfg else None),
    ]))
    out.append("\n### Model Architecture Details\n")
    if arch is None:
        out.append(f"{NA} (no config.json for {name!r}: not a local folder and not under configs/models/)\n")
    else:
        keys = [("Hidden Size", "hidden_size"), ("Intermediate Size", "intermediate_size"),
                ("Number of Layers", "num_hidden_layers"), ("Attention Heads", "num_attention_heads"),
                ("Key-Value Heads", "num_key_value_heads"), ("Head Dimension", "head_dim"),
                ("Vocabulary Size", "vocab_size"), ("Max Position Embeddings", "max_position_embeddings"),
                ("Tied Embeddings", "tie_word_embeddings"), ("Weights dtype", "torch_dtype")]
        out += [f"- **{label}**: {_fmt(arch[key])}\n" for label, key in keys if key in arch]
    return "".join(out)


def _method(run: dict, counts: dict | None) -> str:
    cfg, counts = run["cfg"], counts or {}
    bits = cfg.get("quantization_bit")
    quant = (f"{bits}-bit ({cfg.get('quantization_method', 'bnb')}, {cfg.get('quantization_type', 'nf4')}"
             f"{', double quantization' if cfg.get('double_quantization') else ''})" if bits else "none")
    ftype = cfg.get("finetuning_type", "lora")
    out = ["## Training Method\n\n", _kv([
        ("Fine-tuning Type", "LoRA (Low-Rank Adaptation)" if ftype == "lora" else ftype),
        ("Quantization", quant + (" — QLoRA" if bits == 4 and ftype == "lora" else "")),
        ("Stage", {"sft": "Supervised Fine-Tuning (SFT)"}.get(cfg.get("stage"), cfg.get("stage"))),
    ])]
    if ftype == "lora":
        r, alpha = cfg.get("lora_rank", 8), cfg.get("lora_alpha")
        scale = f" (α/r = {alpha / r:g})" if alpha else ""
        out += ["\n### LoRA Configuration\n\n", _table(["Parameter", "Value"], [
            ["**LoRA Rank**", r], ["**LoRA Alpha**", f"{_fmt(alpha)}{scale}"],
            ["**LoRA Dropout**", cfg.get("lora_dropout")], ["**LoRA Target**", cfg.get("lora_target", "all")],
            ["**Targeted Modules**", _fmt(counts.get("target_modules")) if counts.get("target_modules") else NA],
            ["**Use RSLoRA**", bool(cfg.get("use_rslora", False))],
        ])]
    return "".join(out)


def _dataset(run: dict) -> str:
    cfg, manifest, steps = run["cfg"], run["manifest"] or {}, run["resolved"].get("steps") or {}
    counts, data_cfg = manifest.get("counts") or {}, manifest.get("config") or {}
    out = ["## Dataset Configuration\n\n", _kv([
        ("Training Split", cfg.get("dataset")), ("Eval Split", cfg.get("eval_dataset")),
        ("Dataset Directory", cfg.get("dataset_dir")),
        ("Max Samples", "null (use all)" if cfg.get("max_samples") is None else cfg["max_samples"]),
        ("Training Examples", steps.get("examples", counts.get("train", NA))),
        ("Evaluation Examples", counts.get("eval", (run["metrics"] or {}).get("n", NA))),
    ])]
    out.append("\n### Prepared Data (manifest)\n\n")
    if not manifest:
        where = run["manifest_path"]
        why = f"{where} not found" if where else "no data_manifest in resolved_config.yaml"
        return "".join(out) + f"{NA} ({why})\n"
    cutoff = manifest.get("cutoff_utc", manifest.get("cutoff_timestamp"))
    out.append(f"From `{run['manifest_path']}`: {_fmt(counts.get('ratings'))} ratings by {_fmt(counts.get('users'))} "
               f"users of {_fmt(counts.get('movies'))} movies; cutoff {cutoff} (train targets before it, eval at or "
               f"after); like = rating >= {_fmt(data_cfg.get('like_threshold'))}; prompts show the "
               f"{_fmt(data_cfg.get('history_len'))} latest earlier ratings.\n\n")
    splits = manifest.get("splits") or {}
    out.append(_table(["Split", "Examples", "Positive Rate", "Users", "Warm Share", "Cold Share"], [
        [name, _fmt(s.get("examples", counts.get(name))), _fmt(s.get("positive_rate"), 3), _fmt(s.get("users")),
         _fmt(s.get("warm_share"), 3), _fmt(s.get("cold_share"), 3)]
        for name, s in sorted(splits.items(), key=lambda kv: kv[0] != "train")]) if splits else f"Split statistics {NA}.\n")
    lengths = [(label, manifest.get(key)) for label, key in (("History length (ratings)", "history_lengths"),
                                                             ("Prompt length (characters)", "prompt_chars"))]
    rows = [[label, *(_fmt(d.get(k), 1) for k in ("min", "mean", "p50", "p95", "max"))] for label, d in lengths if d]
    if rows:
        out.append("\n" + _table(["Length", "Min", "Mean", "Median", "p95", "Max"], rows))
    return "".join(out)


def _hyperparameters(run: dict) -> str:
    cfg, resolved = run["cfg"], run["resolved"]
    world = (resolved.get("hardware") or {}).get("world_size", 1) or 1
    bs, accum = int(cfg.get("per_device_train_batch_size", 8)), int(cfg.get("gradient_accumulation_steps", 1))
    steps = resolved.get("steps") or {}
    overrides = resolved.get("overrides") or []
    out = ["## Training Hyperparameters\n\n### Batch and Accumulation\n\n", _kv([
        ("Per Device Train Batch Size", bs), ("Per Device Eval Batch Size", cfg.get("per_device_eval_batch_size")),
        ("Gradient Accumulation Steps", accum), ("World Size", world),
        ("Effective Batch Size", f"{bs * accum * world} (batch × accumulation × processes)"),
    ])]
    if overrides:
        out.append("\n**Overrides** (applied on top of the config file): "
                   + ", ".join(f"`{o}`" for o in overrides) + "\n")
    out += ["\n### Learning Rate and Schedule\n\n", _kv([
        ("Learning Rate", cfg.get("learning_rate")), ("LR Scheduler Type", cfg.get("lr_scheduler_type")),
        ("Warmup Ratio", cfg.get("warmup_ratio")), ("Warmup Steps", steps.get("warmup_steps", cfg.get("warmup_steps"))),
    ])]
    out += ["\n### Optimization\n\n", _kv([(label, cfg.get(key)) for label, key in [
        ("Optimizer", "optim"), ("Adam Beta1", "adam_beta1"), ("Adam Beta2", "adam_beta2"),
        ("Adam Epsilon", "adam_epsilon"), ("Weight Decay", "weight_decay"), ("Max Gradient Norm", "max_grad_norm"),
        ("Seed", "seed")]])]
    total = steps.get("total_optimizer_steps") or progress(run)["total"]
    out += ["\n### Training Duration\n\n", _kv([
        ("Number of Epochs", cfg.get("num_train_epochs")), ("Total Training Steps", total),
        ("Logging Steps", cfg.get("logging_steps")), ("Evaluation Steps", cfg.get("eval_steps")),
        ("Save Steps", cfg.get("save_steps")), ("Save Total Limit", cfg.get("save_total_limit")),
        ("Metric for Best Model", cfg.get("metric_for_best_model")),
    ])]
    return "".join(out)


def _precision(run: dict) -> str:
    cfg = run["cfg"]
    dtype = "torch.bfloat16" if cfg.get("bf16") else "torch.float16" if cfg.get("fp16") else "torch.float32"
    gc = bool(cfg.get("gradient_checkpointing", False))
    q = cfg.get("quantization_bit")

    def on(flag: bool) -> str:
        return "✅ Enabled" if flag else "❌ Disabled"

    return "".join(["## Precision and Performance\n\n### Compute Precision\n\n", _kv([
        ("FP16", bool(cfg.get("fp16", False))), ("BF16", bool(cfg.get("bf16", False))),
        ("Compute Dtype", dtype), ("Gradient Checkpointing", gc), ("Flash Attention", cfg.get("flash_attn", "auto")),
    ]), "\n### Memory Optimization\n\n", _table(["Feature", "Status"], [
        ["**Gradient Checkpointing**", on(gc)],
        [f"**{q}-bit Quantization (QLoRA)**" if q else "**Quantization**", on(bool(q))],
        ["**Double Quantization**", on(bool(q and cfg.get("double_quantization")))],
    ])])


def _hardware(run: dict) -> str:
    hw = run["resolved"].get("hardware")
    if not hw:
        return f"## Hardware and Distribution\n\n{NA} (no `hardware` in resolved_config.yaml)\n"
    world = hw.get("world_size", 1)
    return "## Hardware and Distribution\n\n" + _kv([
        ("Device", hw.get("device_name")), ("Device Type", run["resolved"].get("device", hw.get("device"))),
        ("CUDA Version", hw.get("cuda_version")),
        ("GPU Memory", f"{hw['gpu_memory_gb']} GB" if hw.get("gpu_memory_gb") else None),
        ("World Size", world), ("Distributed Training", bool(world and world > 1)), ("PyTorch", hw.get("torch")),
    ])


def _metrics_table(rows: list[tuple[str, Any]]) -> str:
    return _table(["Metric", "Value"], [[f"**{k}**", v] for k, v in rows])


def _train_speed(run: dict, speed: dict | None) -> str:
    out = "## Training Performance\n\n### Training Speed\n\n"
    if speed is None:
        return out + f"{NA} (no step_times.jsonl and no timed lines in trainer_log.jsonl)\n"
    rows = [("Average Training Speed", f"{speed['average']:.2f} it/s"),
            ("Initial Speed", f"{speed['first']:.2f} it/s (step {speed['first_step']})"),
            ("Stabilized Speed", (f"{speed['stable']:.2f} it/s median after step {STABLE_AFTER} "
                                 f"(middle half {speed['stable_low']:.2f}-{speed['stable_high']:.2f})")),
            ("Peak Speed", f"{speed['peak']:.2f} it/s (best {PEAK_WINDOW}-step average)")]
    tr = run["train_results"]
    if "train_steps_per_second" in tr:
        rows.append(("Trainer-reported (incl. evaluation)",
                     f"{tr['train_steps_per_second']:.2f} it/s, {tr.get('train_samples_per_second', 0):.2f} samples/s"))
    return out + _metrics_table(rows) + f"\nTimed steps: {speed['steps_timed']:,}, from {speed['source']}.\n"


def _eval_speed(run: dict, evals: pd.DataFrame) -> str:
    rows = []
    for label, key, unit in [("Eval Samples per Second", "eval_samples_per_second", "samples/s"),
                             ("Eval Steps per Second", "eval_steps_per_second", "steps/s"),
                             ("Eval Runtime", "eval_runtime", "s")]:
        if key in evals and evals[key].notna().any():
            v = evals[key].dropna()
            rows.append((label, f"{v.min():.2f}-{v.max():.2f} {unit} over {len(v)} evaluation(s)"))
    log = run["log"]
    if "eval_auc_seconds" in log and "eval_auc_examples" in log:
        auc = log[["eval_auc_seconds", "eval_auc_examples"]].dropna()
        if not auc.empty:
            rate = auc.eval_auc_examples / auc.eval_auc_seconds
            rows.append(("Eval AUC scoring (movierec)", (f"{rate.min():.1f}-{rate.max():.1f} examples/s, "
                                                        f"{auc.eval_auc_seconds.mean():.1f} s per evaluation")))
    m = run["metrics"]
    if m and m.get("examples_per_second"):
        rows.append(("`movierec evaluate`", (f"{m['examples_per_second']:.1f} examples/s "
                                            f"({_fmt(m.get('n'))} in {_dur(m.get('seconds'))})")))
    return "\n### Evaluation Speed\n\n" + (_metrics_table(rows) if rows else f"{NA}\n")


def _estimates(run: dict, speed: dict | None, evals: pd.DataFrame, prog: dict) -> str:
    """Training time from the stabilised speed (as the reference sheet does), plus evaluations."""
    out, cfg = "\n### Time Estimates\n\n", run["cfg"]
    if speed is None or not prog["total"]:
        return out + f"{NA}\n"
    rate = speed["stable"]
    train_s = prog["total"] / rate
    epochs = float(cfg.get("num_train_epochs") or 1)
    rows = [("Time per Step", f"{1 / rate:.3f} s"), ("Steps per Hour", f"{3600 * rate:,.0f}"),
            ("Estimated Total Time", f"{_dur(train_s)} ({prog['total']:,} steps at {rate:.2f} it/s, training only)"),
            ("Estimated Time per Epoch", _dur(train_s / epochs)), ("Time per 1000 Steps", _dur(1000 / rate))]
    if "eval_runtime" in evals and cfg.get("eval_steps"):
        n_evals = prog["total"] // int(cfg["eval_steps"])
        eval_s = n_evals * float(evals["eval_runtime"].mean())
        rows.append(("Estimated Total with Evaluations", f"{_dur(train_s + eval_s)} ({n_evals:,} evaluations)"))
    return out + _metrics_table(rows)


def _progress(run: dict, prog: dict) -> str:
    ckpts = run["checkpoints"]
    return "\n### Training Progress\n\n" + _metrics_table([
        ("Steps Completed", prog["done"]), ("Total Steps", prog["total"]),
        ("Progress", f"{prog['percent']:.2f}%" if prog["percent"] is not None else None),
        ("Checkpoints Saved", f"{len(ckpts)} ({', '.join(c.split('-')[-1] for c in ckpts)})" if ckpts else "none"),
        ("Latest Checkpoint", ckpts[-1] if ckpts else None),
    ])


def _performance(run: dict) -> str:
    speed = train_speed(run["step_times"], run["log"])
    evals, prog = eval_runs(run["state"], run["eval_results"]), progress(run)
    return (_train_speed(run, speed) + _eval_speed(run, evals) + _estimates(run, speed, evals, prog)
            + _progress(run, prog))


def _eval_history(run: dict, plots: dict[str, str]) -> str:
    log, state = run["log"], run["state"]
    out = ["## Evaluation Metrics\n\n### Eval Loss History\n\n"]
    cols = [c for c in ("eval_loss", "eval_auc") if c in log]
    hist = log[["epoch", *cols]].dropna(subset=cols, how="all") if cols else pd.DataFrame()
    if hist.empty:
        out.append(f"{NA} (no evaluation lines in trainer_log.jsonl)\n")
    else:
        header = ["Step", "Epoch"] + [{"eval_loss": "Eval Loss", "eval_auc": "Eval AUC"}[c] for c in cols]
        out.append(_table(header, [[int(step), _fmt(row.epoch, 4), *(_fmt(row[c], 4) for c in cols)]
                                   for step, row in hist.iterrows()]))
        out.append(f"\nEval loss ranges {hist['eval_loss'].min():.4f}-{hist['eval_loss'].max():.4f}"
                   if "eval_loss" in hist and hist["eval_loss"].notna().any() else "")
        if "eval_auc" in hist and hist["eval_auc"].notna().any():
            best = hist["eval_auc"].idxmax()
            out.append(f"; best eval AUC {hist['eval_auc'].max():.4f} at step {int(best)}")
        out.append(".\n")
    final = run["eval_results"]
    if "eval_loss" in final:
        out.append(f"\nFinal evaluation (eval_results.json): eval loss {_fmt(final['eval_loss'], 4)}"
                   + (f", eval AUC {_fmt(final['eval_auc'], 4)}" if "eval_auc" in final else "") + ".\n")
    for name, title in (("train_loss", "Training loss"), ("eval_loss", "Eval loss"), ("eval_auc", "Eval AUC")):
        if name in plots:
            out.append(f"\n![{title}]({plots[name]})\n")
    out.append("\n### Checkpoints\n\n")
    best = state.get("best_model_checkpoint")
    metric = run["cfg"].get("metric_for_best_model", "eval_loss")
    out.append(_kv([
        ("Checkpoints on Disk", run["checkpoints"] or "none"),
        ("Best Checkpoint", f"{Path(best).name} ({metric} = {_fmt(state.get('best_metric'), 4)})" if best else NA),
        ("Global Step (trainer state)", state.get("global_step")),
    ]))
    return "".join(out)


def _ordered(baselines: dict) -> list[tuple[str, dict]]:
    """Baselines simplest first (the order of baselines.NAMES), unknown names last."""
    from movierec.baselines import NAMES

    rank = {name: i for i, name in enumerate(NAMES)}
    return sorted(baselines["baselines"].items(), key=lambda kv: rank.get(kv[0], len(NAMES)))


def _metric_rows(name: str, blocks: dict, group: str) -> list[Any]:
    b = blocks.get(group) or {}
    return [name, group] + [_fmt(b.get(key), None if key == "n" else 4) if b.get("n") else "—"
                            for _, key in METRIC_COLUMNS]


def _quality(run: dict, plots: dict[str, str]) -> str:
    out = ["## Recommendation Quality\n\n"]
    m, base = run["metrics"], run["baselines"]
    if m is None and base is None:
        return out[0] + f"{NA} (run `movierec evaluate --run DIR` and `movierec baselines --data DATA`)\n"
    models = {}
    if m is not None:
        models[f"LLM ({m.get('checkpoint', '?')})"] = m["metrics"]
        out.append(f"LLM scored by `movierec evaluate`: {m.get('checkpoint')} on {_fmt(m.get('n'))} eval examples; "
                   "P(Yes) from the Yes/No logits, threshold 0.5.\n\n")
    else:
        out.append(f"LLM metrics {NA} (no metrics.json: run `movierec evaluate --run DIR`).\n\n")
    if base is not None:
        models.update({f"baseline: {k}": blocks for k, blocks in _ordered(base)})
        out.append(f"Baselines from `{run['baselines_path']}` (fitted on ratings before "
                   f"cutoff_timestamp {base.get('cutoff_timestamp')}, scored on the same eval examples).\n\n")
    else:
        out.append(f"Baselines {NA} (no {run['baselines_path'] or 'baselines.json'}: run `movierec baselines`).\n\n")
    oracle = (base or {}).get("oracle") or (m or {}).get("oracle")
    if oracle:
        models["oracle (true probabilities)"] = oracle["metrics"]
        out.append("The oracle row scores the synthetic generator's true like-probabilities: the ceiling "
                   "any model can reach on this data.\n\n")
    rows = [_metric_rows(name, blocks, group) for group in ("overall", "warm", "cold")
            for name, blocks in models.items() if group in blocks]
    out.append(_table(["Model", "Users", *(c for c, _ in METRIC_COLUMNS)], rows))
    if m and m.get("per_checkpoint"):
        out.append("\n### Per Checkpoint\n\n")
        cols = [(label, k) for label, k in METRIC_COLUMNS if any(k in v for v in m["per_checkpoint"].values())]
        out.append(_table(["Checkpoint", *(label for label, _ in cols)],
                          [[c, *(_fmt(v.get(k), None if k == "n" else 4) for _, k in cols)]
                           for c, v in m["per_checkpoint"].items()]))
    if "calibration" in plots:
        out.append(f"\n![Calibration]({plots['calibration']})\n")
    return "".join(out)


def _output(run: dict) -> str:
    cfg, d = run["cfg"], run["dir"]
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir() if not p.name.startswith("."))
    timeout = cfg.get("ddp_timeout")
    return "".join(["## Output Configuration\n\n", _kv([
        ("Output Directory", cfg.get("output_dir", str(d))), ("Evaluation Strategy", cfg.get("eval_strategy")),
        ("Reporting", cfg.get("report_to")),
        ("DDP Timeout", f"{timeout:,} ms ({timeout / 3_600_000:.0f} hours)" if isinstance(timeout, int) else timeout),
    ]), "\n### Output Files\n\n", "".join(f"- `{f}`\n" for f in files)])


def _command(run: dict) -> str:
    resolved = run["resolved"]
    cmd = resolved.get("command")
    text = shlex.join(cmd).replace(" --", " \\\n  --") if cmd else NA
    versions = resolved.get("versions") or {}
    out = ["## Command Used\n\n```bash\n", text, "\n```\n\n## Reproducibility\n\n", _kv([
        ("Config File", resolved.get("config_file")), ("Run Name", resolved.get("run_name")),
        ("Overrides", resolved.get("overrides") or "none"), ("Git Revision", resolved.get("git_revision")),
        ("Data Manifest", resolved.get("data_manifest")),
        ("Data Manifest SHA-256", resolved.get("data_manifest_sha256")),
    ])]
    if versions:
        out += ["\n### Environment\n\n",
                _table(["Package", "Version"], [[k, v or "not installed"] for k, v in versions.items()])]
    return "".join(out)


# ---------------------------------------------------------------- plots


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_plots(run: dict, plot_dir: Path) -> dict[str, str]:
    """PNG plots for whatever data exists; returns {name: path relative to the run folder}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written, log = {}, run["log"]
    series = {"train_loss": ("loss", "training loss"), "eval_loss": ("eval_loss", "eval loss"),
              "eval_auc": ("eval_auc", "eval AUC (Yes/No)")}
    for name, (col, label) in series.items():
        if col not in log or log[col].dropna().empty:
            continue
        s = log[col].dropna()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(s.index, s.to_numpy(), marker="o" if len(s) < 50 else None, label=label)
        if name == "eval_auc" and run["baselines"]:
            for i, (b, blocks) in enumerate(_ordered(run["baselines"])):
                v = blocks["overall"].get("auc")
                if v is not None:
                    ax.axhline(v, ls="--", lw=1, color=f"C{i + 1}", label=f"{b} baseline")
            oracle = run["baselines"].get("oracle")
            if oracle and oracle["metrics"]["overall"].get("auc") is not None:
                ax.axhline(oracle["metrics"]["overall"]["auc"], ls=":", lw=1.5, color="k", label="oracle (ceiling)")
        ax.set(xlabel="optimizer step", ylabel=label, title=f"{label} — {run['resolved'].get('run_name', '')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        _save(fig, plot_dir / f"{name}.png")
        written[name] = f"{plot_dir.name}/{name}.png"
    if run["predictions"]:
        from movierec.metrics import calibration_bins

        pred = pd.DataFrame(run["predictions"])
        bins = calibration_bins(pred["label"], pred["p_yes"], n_bins=10)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
        ax.plot(bins.mean_pred, bins.frac_pos, marker="o", label="model")
        for row in bins.itertuples():
            ax.annotate(f"{row.count}", (row.mean_pred, row.frac_pos), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
        ax.set(xlabel="mean P(Yes) in bin", ylabel="share of positives", xlim=(0, 1), ylim=(0, 1),
               title="Calibration (10 equal-width bins; counts annotated)")
        ax.legend(fontsize=8)
        _save(fig, plot_dir / "calibration.png")
        written["calibration"] = f"{plot_dir.name}/calibration.png"
    return written


# ---------------------------------------------------------------- entry point


def build_report(run: dict, plots: dict[str, str]) -> str:
    """The markdown text; `plots` maps plot names to paths relative to the run folder."""
    resolved = run["resolved"]
    head = (f"# Fine-tuning Parameters and Performance: {resolved.get('run_name', run['dir'].name)}\n\n"
            f"Rebuilt by `movierec report` from the files in `{run['dir']}`"
            + (f" (run created {resolved['created']})" if resolved.get("created") else "") + ".\n")
    arch = architecture(run["cfg"])
    counts = parameter_counts(resolved, arch)
    sections = [head, _model(run, arch, counts), _method(run, counts), _dataset(run), _hyperparameters(run),
                _precision(run), _hardware(run), _performance(run), _eval_history(run, plots),
                _quality(run, plots), _output(run), _command(run)]
    return "\n---\n\n".join(sections)


def main(args: argparse.Namespace) -> int:
    run = load_run(args.run, args.baselines)
    plots = write_plots(run, run["dir"] / "plots")
    path = run["dir"] / "report.md"
    atomic_write_text(path, build_report(run, plots))
    print(f"wrote {path} and {len(plots)} plot(s) in {run['dir'] / 'plots'}")
    return 0

