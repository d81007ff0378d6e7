"""Markdown sections of the report, in the order of the reference run's sheet."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from movierec.data import hybrid
from movierec.evaluation.report.markdown import NA, dur, fmt, kv, metrics_table, table
from movierec.evaluation.report.stats import (
    PEAK_WINDOW,
    STABLE_AFTER,
    estimates,
    eval_runs,
    progress,
    train_speed,
)
from movierec.train.config import arg


def model(run: dict, arch: dict | None, counts: dict | None) -> str:
    cfg, out = run["cfg"], ["## Model Configuration\n\n"]
    name = cfg.get("model_name_or_path")
    out.append(kv([
        ("Base Model", name), ("Model Architecture", fmt((arch or {}).get("architectures")) if arch else NA),
        ("Template", cfg.get("template")),
        ("Total Parameters", counts["total"] if counts else NA),
        ("Trainable Parameters", counts["trainable"] if counts else NA),
        ("Trainable Percentage", f"{counts['percent']:.4f}%" if counts else NA),
        ("Context Length", f"{cfg['cutoff_len']:,} tokens" if "cutoff_len" in cfg else None),
    ]))
    out.append("\n### Model Architecture Details\n")
    if arch is None:
        out.append(f"{NA} (no config.json for {name!r}: not a local folder and not under movierec/resources/models/)\n")
    else:
        keys = [("Hidden Size", "hidden_size"), ("Intermediate Size", "intermediate_size"),
                ("Number of Layers", "num_hidden_layers"), ("Attention Heads", "num_attention_heads"),
                ("Key-Value Heads", "num_key_value_heads"), ("Head Dimension", "head_dim"),
                ("Vocabulary Size", "vocab_size"), ("Max Position Embeddings", "max_position_embeddings"),
                ("Tied Embeddings", "tie_word_embeddings"), ("Weights dtype", "torch_dtype")]
        arch = {"torch_dtype": arch.get("dtype"), **arch}  # transformers >= 4.56 writes `dtype`
        out += [f"- **{label}**: {fmt(arch[key])}\n" for label, key in keys if arch.get(key) is not None]
    return "".join(out)


def method(run: dict, counts: dict | None) -> str:
    cfg, counts = run["cfg"], counts or {}
    bits = cfg.get("quantization_bit")
    quant = (f"{bits}-bit ({cfg.get('quantization_method', 'bnb')}, {cfg.get('quantization_type', 'nf4')}"
             f"{', double quantization' if cfg.get('double_quantization') else ''})" if bits else "none")
    ftype = cfg.get("finetuning_type", "lora")
    out = ["## Training Method\n\n", kv([
        ("Fine-tuning Type", "LoRA (Low-Rank Adaptation)" if ftype == "lora" else ftype),
        ("Quantization", quant + (" — QLoRA" if bits == 4 and ftype == "lora" else "")),
        ("Stage", {"sft": "Supervised Fine-Tuning (SFT)"}.get(cfg.get("stage"), cfg.get("stage"))),
    ])]
    if ftype == "lora":
        r, alpha = arg(cfg, "lora_rank"), cfg.get("lora_alpha")
        scale = f" (α/r = {alpha / r:g})" if alpha else ""
        out += ["\n### LoRA Configuration\n\n", table(["Parameter", "Value"], [
            ["**LoRA Rank**", r], ["**LoRA Alpha**", f"{fmt(alpha)}{scale}"],
            ["**LoRA Dropout**", cfg.get("lora_dropout")], ["**LoRA Target**", cfg.get("lora_target", "all")],
            ["**Targeted Modules**", fmt(counts.get("target_modules")) if counts.get("target_modules") else NA],
            ["**Use RSLoRA**", bool(cfg.get("use_rslora", False))],
        ])]
    return "".join(out)


def dataset(run: dict) -> str:
    cfg, manifest, steps = run["cfg"], run["manifest"] or {}, run["plan"]
    counts, data_cfg = manifest.get("counts") or {}, manifest.get("config") or {}
    out = ["## Dataset Configuration\n\n", kv([
        ("Training Split", cfg.get("dataset")), ("Eval Split", cfg.get("eval_dataset")),
        ("Dataset Directory", cfg.get("dataset_dir")),
        ("Max Samples", "null (use all)" if cfg.get("max_samples") is None else cfg["max_samples"]),
        ("Training Examples", steps.examples if steps else counts.get("train", NA)),
        ("Evaluation Examples", counts.get("eval", (run["metrics"] or {}).get("n", NA))),
    ])]
    out.append("\n### Prepared Data (manifest)\n\n")
    if not manifest:
        where = run["manifest_path"]
        why = f"{where} not found" if where else "no data_manifest in resolved_config.yaml"
        return "".join(out) + f"{NA} ({why})\n"
    cutoff = manifest.get("cutoff_utc", manifest.get("cutoff_timestamp"))
    out.append(f"From `{run['manifest_path']}`: {fmt(counts.get('ratings'))} ratings by {fmt(counts.get('users'))} "
               f"users of {fmt(counts.get('movies'))} movies; cutoff {cutoff} (train targets before it, eval at or "
               f"after); like = rating >= {fmt(data_cfg.get('like_threshold'))}; prompts show "
               f"{hybrid.describe(data_cfg)}.\n\n")
    splits = manifest.get("splits") or {}
    out.append(table(["Split", "Examples", "Positive Rate", "Users", "Warm Share", "Cold Share"], [
        [name, fmt(s.get("examples", counts.get(name))), fmt(s.get("positive_rate"), 3), fmt(s.get("users")),
         fmt(s.get("warm_share"), 3), fmt(s.get("cold_share"), 3)]
        for name, s in sorted(splits.items(), key=lambda x: x[0] != "train")])
        if splits else f"Split statistics {NA}.\n")
    lengths = [(label, manifest.get(key)) for label, key in (("History length (ratings)", "history_lengths"),
                                                             ("Prompt length (characters)", "prompt_chars"))]
    rows = [[label, *(fmt(d.get(k), 1) for k in ("min", "mean", "p50", "p95", "max"))] for label, d in lengths if d]
    if rows:
        out.append("\n" + table(["Length", "Min", "Mean", "Median", "p95", "Max"], rows))
    return "".join(out)


def hyperparameters(run: dict) -> str:
    cfg, resolved = run["cfg"], run["resolved"]
    steps = run["plan"]
    world = steps.world_size if steps else (resolved.get("hardware") or {}).get("world_size", 1) or 1
    bs, accum = cfg.get("per_device_train_batch_size"), cfg.get("gradient_accumulation_steps")
    overrides = resolved.get("overrides") or []
    out = ["## Training Hyperparameters\n\n### Batch and Accumulation\n\n", kv([
        ("Per Device Train Batch Size", bs), ("Per Device Eval Batch Size", cfg.get("per_device_eval_batch_size")),
        ("Gradient Accumulation Steps", accum), ("World Size", world),
        ("Effective Batch Size", (f"{steps.examples_per_step:g} examples per optimizer step"
                                  + (" (packed sequences)" if steps.packing else " (batch × accumulation × processes)"))
         if steps else NA),
    ])]
    if overrides:
        out.append("\n**Overrides** (applied on top of the config file): "
                   + ", ".join(f"`{o}`" for o in overrides) + "\n")
    out += ["\n### Learning Rate and Schedule\n\n", kv([
        ("Learning Rate", cfg.get("learning_rate")), ("LR Scheduler Type", cfg.get("lr_scheduler_type")),
        ("Warmup Ratio", cfg.get("warmup_ratio")), ("Warmup Steps", steps.warmup_steps if steps else cfg.get("warmup_steps")),
    ])]
    out += ["\n### Optimization\n\n", kv([(label, cfg.get(key)) for label, key in [
        ("Optimizer", "optim"), ("Adam Beta1", "adam_beta1"), ("Adam Beta2", "adam_beta2"),
        ("Adam Epsilon", "adam_epsilon"), ("Weight Decay", "weight_decay"), ("Max Gradient Norm", "max_grad_norm"),
        ("Seed", "seed")]])]
    total = steps.total_optimizer_steps if steps else progress(run)["total"]
    intervals = {"logging_steps": steps.logging_every, "eval_steps": steps.eval_every,
                 "save_steps": steps.save_every} if steps else {}

    def every(key: str) -> Any:  # a fraction of the training steps (transformers accepts < 1) shown as steps too
        v = cfg.get(key)
        return f"{v:g} (every {intervals[key]:,} steps)" if isinstance(v, float) and 0 < v < 1 and intervals else v

    out += ["\n### Training Duration\n\n", kv([
        ("Number of Epochs", cfg.get("num_train_epochs")), ("Total Training Steps", total),
        ("Logging Steps", every("logging_steps")), ("Evaluation Steps", every("eval_steps")),
        ("Save Steps", every("save_steps")), ("Save Total Limit", cfg.get("save_total_limit")),
        ("Metric for Best Model", cfg.get("metric_for_best_model")),
    ])]
    return "".join(out)


def precision(run: dict) -> str:
    cfg = run["cfg"]
    dtype = "torch.bfloat16" if cfg.get("bf16") else "torch.float16" if cfg.get("fp16") else "torch.float32"
    gc = bool(cfg.get("gradient_checkpointing", False))
    q = cfg.get("quantization_bit")

    def on(flag: bool) -> str:
        return "✅ Enabled" if flag else "❌ Disabled"

    return "".join(["## Precision and Performance\n\n### Compute Precision\n\n", kv([
        ("FP16", bool(cfg.get("fp16", False))), ("BF16", bool(cfg.get("bf16", False))),
        ("Compute Dtype", dtype), ("Gradient Checkpointing", gc), ("Flash Attention", cfg.get("flash_attn", "auto")),
    ]), "\n### Memory Optimization\n\n", table(["Feature", "Status"], [
        ["**Gradient Checkpointing**", on(gc)],
        [f"**{q}-bit Quantization (QLoRA)**" if q else "**Quantization**", on(bool(q))],
        ["**Double Quantization**", on(bool(q and cfg.get("double_quantization")))],
    ])])


def hardware(run: dict) -> str:
    hw = run["resolved"].get("hardware")
    if not hw:
        return f"## Hardware and Distribution\n\n{NA} (no `hardware` in resolved_config.yaml)\n"
    world = hw.get("world_size", 1)
    return "## Hardware and Distribution\n\n" + kv([
        ("Device", hw.get("device_name")), ("Device Type", run["resolved"].get("device", hw.get("device"))),
        ("CUDA Version", hw.get("cuda_version")),
        ("GPU Memory", f"{hw['gpu_memory_gb']} GB" if hw.get("gpu_memory_gb") else None),
        ("World Size", world), ("Distributed Training", bool(world and world > 1)), ("PyTorch", hw.get("torch")),
    ])


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
    return out + metrics_table(rows) + f"\nTimed steps: {speed['steps_timed']:,}, from {speed['source']}.\n"


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
                                            f"({fmt(m.get('n'))} in {dur(m.get('seconds'))})")))
    return "\n### Evaluation Speed\n\n" + (metrics_table(rows) if rows else f"{NA}\n")


def _estimates(run: dict, speed: dict | None, evals: pd.DataFrame, prog: dict) -> str:
    out, est = "\n### Time Estimates\n\n", estimates(speed, evals, prog["total"], run["plan"])
    if est is None:
        return out + f"{NA}\n"
    rate, train_s = est["rate"], est["train_s"]
    rows = [("Time per Step", f"{1 / rate:.3f} s"), ("Steps per Hour", f"{3600 * rate:,.0f}"),
            ("Estimated Total Time", f"{dur(train_s)} ({prog['total']:,} steps at {rate:.2f} it/s, training only)"),
            ("Estimated Time per Epoch", dur(est["epoch_s"])), ("Time per 1000 Steps", dur(1000 / rate))]
    if "n_evals" in est:
        rows.append(("Estimated Total with Evaluations",
                     f"{dur(train_s + est['eval_s'])} ({est['n_evals']:,} evaluations: "
                     f"every {run['plan'].eval_every:,} steps and the final one)"))
    return out + metrics_table(rows)


def _progress(run: dict, prog: dict) -> str:
    ckpts = run["checkpoints"]
    stop = (run.get("summary") or {}).get("early_stopping") or {}
    stopped = (f"at step {stop['stopped_at_step']:,}: {stop.get('metric')} did not improve for "
               f"{stop.get('patience')} evaluation(s) in a row" if stop.get("stopped_at_step") is not None else None)
    return "\n### Training Progress\n\n" + metrics_table([
        ("Steps Completed", prog["done"]), ("Total Steps", prog["total"]),
        ("Progress", f"{prog['percent']:.2f}%" if prog["percent"] is not None else None),
        *([("Stopped Early", stopped)] if stopped else []),
        ("Checkpoints Saved", f"{len(ckpts)} ({', '.join(c.split('-')[-1] for c in ckpts)})" if ckpts else "none"),
        ("Latest Checkpoint", ckpts[-1] if ckpts else None),
    ])


def performance(run: dict) -> str:
    speed = train_speed(run["step_times"], run["log"])
    evals, prog = eval_runs(run["state"], run["eval_results"]), progress(run)
    return (_train_speed(run, speed) + _eval_speed(run, evals) + _estimates(run, speed, evals, prog)
            + _progress(run, prog))


def eval_history(run: dict, plots: dict[str, str]) -> str:
    log, state = run["log"], run["state"]
    out = ["## Evaluation Metrics\n\n### Eval Loss History\n\n"]
    cols = [c for c in ("eval_loss", "eval_auc") if c in log]
    hist = log[["epoch", *cols]].dropna(subset=cols, how="all") if cols else pd.DataFrame()
    if hist.empty:
        out.append(f"{NA} (no evaluation lines in trainer_log.jsonl)\n")
    else:
        header = ["Step", "Epoch"] + [{"eval_loss": "Eval Loss", "eval_auc": "Eval AUC"}[c] for c in cols]
        out.append(table(header, [[int(step), fmt(row.epoch, 4), *(fmt(row[c], 4) for c in cols)]
                                  for step, row in hist.iterrows()]))
        said = []  # a paragraph of its own, apart from the table
        if "eval_loss" in hist and hist["eval_loss"].notna().any():
            said.append(f"Eval loss ranges {hist['eval_loss'].min():.4f}-{hist['eval_loss'].max():.4f}")
        if "eval_auc" in hist and hist["eval_auc"].notna().any():
            said.append(f"best eval AUC {hist['eval_auc'].max():.4f} at step {int(hist['eval_auc'].idxmax())}")
        if said:
            out.append("\n" + "; ".join(said)[:1].upper() + "; ".join(said)[1:] + ".\n")
    final = run["eval_results"]
    if "eval_loss" in final:
        out.append(f"\nFinal evaluation (eval_results.json): eval loss {fmt(final['eval_loss'], 4)}"
                   + (f", eval AUC {fmt(final['eval_auc'], 4)}" if "eval_auc" in final else "") + ".\n")
    for name, title in (("train_loss", "Training loss"), ("eval_loss", "Eval loss"), ("eval_auc", "Eval AUC")):
        if name in plots:
            out.append(f"\n![{title}]({plots[name]})\n")
    out.append("\n### Checkpoints\n\n")
    best = state.get("best_model_checkpoint")
    metric = run["cfg"].get("metric_for_best_model", "eval_loss")
    out.append(kv([
        ("Checkpoints on Disk", run["checkpoints"] or "none"),
        ("Best Checkpoint", f"{Path(best).name} ({metric} = {fmt(state.get('best_metric'), 4)})" if best else NA),
        ("Global Step (trainer state)", state.get("global_step")),
    ]))
    return "".join(out)


def output(run: dict, files: list[str]) -> str:
    cfg, d = run["cfg"], run["dir"]
    timeout = cfg.get("ddp_timeout")
    return "".join(["## Output Configuration\n\n", kv([
        ("Output Directory", cfg.get("output_dir", str(d))), ("Evaluation Strategy", cfg.get("eval_strategy")),
        ("Reporting", cfg.get("report_to")),
        ("DDP Timeout", f"{timeout:,} ms ({timeout / 3_600_000:.0f} hours)" if isinstance(timeout, int) else timeout),
    ]), "\n### Output Files\n\n", "".join(f"- `{f}`\n" for f in files)])


def command(run: dict) -> str:
    resolved = run["resolved"]
    cmd = resolved.get("command")
    text = shlex.join(cmd).replace(" --", " \\\n  --") if cmd else NA
    versions = resolved.get("versions") or {}
    out = ["## Command Used\n\n```bash\n", text, "\n```\n\n## Reproducibility\n\n", kv([
        ("Config File", resolved.get("config_file")), ("Run Name", resolved.get("run_name")),
        ("Overrides", resolved.get("overrides") or "none"), ("Git Revision", resolved.get("git_revision")),
        ("Data Manifest", resolved.get("data_manifest")),
        ("Data Manifest SHA-256", resolved.get("data_manifest_sha256")),
    ])]
    if versions:
        out += ["\n### Environment\n\n",
                table(["Package", "Version"], [[k, v or "not installed"] for k, v in versions.items()])]
    return "".join(out)
