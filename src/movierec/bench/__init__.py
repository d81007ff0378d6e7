"""`movierec bench`: training, evaluation and scoring throughput of a config, on a random model.

No weights and no prepared data are needed. The model is the config's architecture
(configs/models/<name>.json for a hub id, config.json for a local folder) with random weights,
saved with the tiny tokenizer (movierec.tiny); its embeddings keep the architecture's vocabulary
size, the generated token ids stay below the tokenizer's. The examples are pre-tokenized
(LLaMA-Factory's `tokenized_path`) with lengths drawn like the prepared data's (movierec.lengths);
with `neat_packing` they are packed by LLaMA-Factory's own packed processor first.

Training runs N optimizer steps through the same path as `movierec train` (validated config,
movierec.worker and its callbacks), then LLaMA-Factory's evaluation (loss over generated eval
examples at the config's eval batch size) and, where the config evaluates with AUC, movierec's
AUC callback over generated prompts: the same calls an evaluation makes during training. The
training rate skips the first WARMUP_FRACTION of the steps (at least one); on a GPU a step's time
covers its forward, backward and optimizer update (the step timer synchronises).

From the rates and the dry run's step plan for the config's data (dryrun.estimate_steps) comes
the projected wall time of the whole run, evaluations included (dryrun.time_estimate).

FLOPs (for MFU) per real, non-padding training token, LoRA on a frozen base:
    4 * N_frozen + 6 * N_trainable + 12 * layers * (heads * head_dim) * ctx
N_frozen: the base's matmul weights (the tied embedding counted once, as the output head);
forward 2N, backward 2N for the activation gradients only (frozen weights get none); the LoRA
weights 6N as in full training. Attention: QK^T and AV, 4 * ctx * (heads * head_dim) per layer
forward, x3 with backward, ctx = mean number of keys a token attends to (causal, within its own
example: (L + 1) / 2 for an example of L tokens). Activation recomputation (gradient checkpointing)
and masked-out attention are not counted (MFU, not hardware utilisation). The peak is the GPU's
dense bf16 tensor-core figure (PEAK_BF16_FLOPS) and, beside it, a measured bf16 matmul.

`--scoring` times movierec's scorer instead: `evaluate`'s path (base loaded as trained, a LoRA
adapter folded into plain layers) over N generated eval prompts sharing the real prompts' prefix.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from movierec.bench.hardware import (  # noqa: F401
    PEAK_BF16_FLOPS,
    _peak_memory_gib,
    _reset_peak_memory,
    _train_peak_callback,
    measured_matmul_flops,
    peak_flops,
    train_flops_per_token,
)
from movierec.bench.inputs import (  # noqa: F401
    IGNORE_INDEX,
    attended_keys,
    build_random_model,
    make_examples,
    pack_examples,
    random_model,
)
from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.lengths import (  # noqa: F401
    ANSWER_TOKENS,
    CHARS_PER_TOKEN,
    SHARED_PREFIX_TOKENS,
    TEMPLATE_TOKENS,
    example_lengths,
    prompt_token_stats,
)

WARMUP_FRACTION = 0.2


# ---------------------------------------------------------------- run and measure


def bench_args(lf: dict[str, Any], steps: int, work: Path, model_dir: Path) -> dict[str, Any]:
    """The config's LLaMA-Factory args, set to train `steps` steps on the generated data, then evaluate."""
    args = dict(lf)
    for key in ("val_size", "load_best_model_at_end", "resume_from_checkpoint", "metric_for_best_model"):
        args.pop(key, None)
    packed = bool(lf.get("neat_packing") or lf.get("packing"))
    args.update(
        model_name_or_path=str(model_dir),
        dataset="movierec_bench", eval_dataset="movierec_bench",  # names only: tokenized_path replaces the data
        tokenized_path=str(work / "data"),
        output_dir=str(work / "out"),
        max_steps=steps, do_train=True, do_eval=True, do_predict=False, eval_strategy="no",
        save_strategy="no", report_to="none", plot_loss=False, logging_steps=1,
        # trainer_log.jsonl: non-padding tokens per step; with packing the Trainer would sum the 4D mask
        include_num_input_tokens_seen="no" if packed else "non_padding",
    )
    return args


def measure(out_dir: Path, steps: int, per_sequence: tuple[float, float] | None = None) -> dict[str, Any]:
    """Rates over steps after the warm-up, from step_times.jsonl and trainer_log.jsonl's total_tokens.

    per_sequence: (examples, tokens) per packed sequence, for packed runs (their lines count sequences).
    """
    times = [json.loads(line) for line in (out_dir / "step_times.jsonl").read_text().splitlines()]
    if len(times) != steps:
        raise UserError(f"bench: {len(times)} steps were timed, expected {steps}")
    warmup = min(max(1, round(steps * WARMUP_FRACTION)), steps - 1)
    timed = times[warmup:]
    seconds = sum(t["seconds"] for t in timed)
    if per_sequence:
        sequences = sum(t["sequences"] for t in timed)
        examples, tokens = sequences * per_sequence[0], sequences * per_sequence[1]
    else:
        examples = sum(t["examples"] for t in timed)
        seen = {line["current_steps"]: line["total_tokens"]
                for line in map(json.loads, (out_dir / "trainer_log.jsonl").read_text().splitlines())
                if "total_tokens" in line}
        tokens = seen[steps] - seen[warmup]
    return {"steps": steps, "warmup_steps": warmup, "timed_seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds, "tokens_per_example": tokens / examples}


def measure_eval(out_dir: Path, n_eval: int, eval_batch: int, auc_batch: int) -> dict[str, Any]:
    """LLaMA-Factory's evaluation (eval_results.json) and movierec's AUC callback (trainer_log.jsonl)."""
    metrics = json.loads((out_dir / "eval_results.json").read_text())
    out: dict[str, Any] = {"eval": {"examples": n_eval, "batch_size": eval_batch, "seconds": metrics["eval_runtime"],
                                    "examples_per_s": n_eval / metrics["eval_runtime"]}, "auc": None}
    lines = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]
    auc = [line for line in lines if "eval_auc_seconds" in line]
    if auc:
        n, s = auc[-1]["eval_auc_examples"], auc[-1]["eval_auc_seconds"]
        out["auc"] = {"examples": n, "batch_size": auc_batch, "seconds": s, "examples_per_s": n / s}
    return out


@contextlib.contextmanager
def _stdout_to_stderr():
    """Training logs (LLaMA-Factory's handler holds the original stdout) go to stderr: stdout is the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _setup(config: str | Path, overrides: list[str] | None, device: str):
    """Validated (lf, mr, device, data counts, data folder) of a config; bench generates its own examples."""
    from movierec.config import load_config, validate
    from movierec.device import apply_device, resolve_device
    from movierec.plan import data_counts

    cfg = load_config(config, overrides)
    device = resolve_device(device)
    names = {key: cfg.pop(key) for key in ("dataset", "eval_dataset") if key in cfg}  # data need not be prepared
    lf, mr = validate(cfg)
    data = DatasetDir(lf.get("dataset_dir") or "data")
    counts = data_counts({**lf, **names}, data)
    apply_device(lf, device)
    return lf, mr, device, counts, data


def _device_info(device: str) -> tuple[str, float | None, float | None]:
    """(device name, table peak bf16 FLOP/s, measured bf16 matmul FLOP/s)."""
    if device != "cuda":
        return "cpu", None, None
    import torch

    name = torch.cuda.get_device_name(0)
    return name, peak_flops(name), measured_matmul_flops()


def _n_bench_eval(batch: int) -> int:
    """Eval examples the benchmark times: 16 batches (the dataloader workers' start-up, paid once per
    evaluation, stays a small part of the time), at least 32, at most 1024."""
    return int(min(max(16 * batch, 32), 1024))


def run_bench(config: str | Path, overrides: list[str] | None = None, steps: int = 10, device: str = "auto",
              model_cache: str | Path | None = None) -> dict[str, Any]:
    """Train `steps` steps of `config` on a random model, evaluate once, and return the figures."""
    from movierec.config import render_llamafactory_args
    from movierec.dryrun import auc_examples, time_estimate
    from movierec.params import count_for_config, load_model_config
    from movierec.plan import train_plan
    from movierec.rundir import RunDir

    if steps < 2:
        raise UserError("--steps: at least 2 (the first step is warm-up and not timed)")
    lf, mr, device, counts, data = _setup(config, overrides, device)
    stats, source = prompt_token_stats(data.path)
    batch, accum = int(lf.get("per_device_train_batch_size", 8)), int(lf.get("gradient_accumulation_steps", 1))
    eval_batch = int(lf.get("per_device_eval_batch_size", 8))
    auc_batch = int(mr.get("eval_auc_batch_size", 16))
    packed = bool(lf.get("neat_packing"))
    cutoff = int(lf.get("cutoff_len", 2048))
    device_name, peak, matmul = _device_info(device)

    from datasets import Dataset, DatasetDict

    from movierec.callbacks import ScoreCallback
    from movierec.worker import run

    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        model_dir, params, tokenizer = random_model(str(lf["model_name_or_path"]), model_cache and Path(model_cache), work)
        rows = steps * batch * accum  # exactly the batches the steps use
        n_eval = _n_bench_eval(eval_batch)

        def make(n: int, seed: int) -> dict[str, list]:
            return make_examples(n, stats, len(tokenizer), tokenizer.eos_token_id, cutoff, seed)

        if packed:  # enough examples for `rows` packed sequences
            per_row = max(int((cutoff - 1) / (stats["mean"] + ANSWER_TOKENS)), 1)
            train = pack_examples(make(int(rows * per_row * 1.2) + 64, 0), lf, tokenizer)
            if len(train["input_ids"]) < rows:
                raise UserError(f"bench: packing gave {len(train['input_ids'])} sequences, {rows} needed")
            train = {k: v[:rows] for k, v in train.items()}
            # neat packing numbers the examples of a sequence 1, 2, ... in its attention mask (0: padding)
            lengths = [int(c) for mask in train["attention_mask"] for c in np.bincount(mask)[1:]]
            per_sequence = (len(lengths) / rows, sum(lengths) / rows)
            eval_data = pack_examples(make(n_eval, 1), lf, tokenizer)
        else:
            train = make(rows, 0)
            lengths = [len(x) for x in train["input_ids"]]
            per_sequence = None
            eval_data = make(n_eval, 1)
        DatasetDict({"train": Dataset.from_dict(train), "validation": Dataset.from_dict(eval_data)}).save_to_disk(
            work / "data")

        args = bench_args(lf, steps, work, model_dir)
        lf_args = render_llamafactory_args(args, RunDir(args["output_dir"]), DatasetDir(work / "data"), "bench", None,
                                           None)
        (work / "lf.yaml").write_text(yaml.safe_dump(lf_args))
        (work / "resolved.yaml").write_text(yaml.safe_dump({"movierec": mr, "device": device,
                                                            "plan": train_plan(lf_args, rows, 1)}))
        peaks: dict[str, float] = {}
        extra = [_train_peak_callback(device, peaks)]
        n_auc = 0
        if lf.get("eval_strategy", "no") != "no" and auc_examples(mr, counts["eval"] or 1):
            n_auc = min(auc_examples(mr, counts["eval"] or 4450), _n_bench_eval(auc_batch))
            prompts = make(n_auc, 2)["input_ids"]
            extra.append(ScoreCallback(lf_args, mr, [p[:-ANSWER_TOKENS] for p in prompts],
                                     np.random.default_rng(3).integers(0, 2, n_auc).tolist()))
        gc.collect()  # a previous bench in this process must not count in this one's peak
        _reset_peak_memory(device)
        with _stdout_to_stderr():
            run(work / "lf.yaml", work / "resolved.yaml", extra)
        result = measure(work / "out", steps, per_sequence)
        result.update(measure_eval(work / "out", n_eval, eval_batch, auc_batch))
        peak_gib = _peak_memory_gib(device)
        counted = count_for_config({**lf, "model_name_or_path": str(model_dir)})
        model_cfg = load_model_config(str(model_dir))

    trainable = counted["trainable"] if counted else 0
    flops = train_flops_per_token(model_cfg, params, trainable, attended_keys(lengths))
    plan = projection = None
    if counts["train"]:
        plan = train_plan(lf, counts["train"], 1, data)
        plan["evaluations"] = plan["evaluations"] if counts["eval"] else 0
        projection = time_estimate(lf, plan, result["examples_per_s"], counts["eval"], mr,
                                   result["eval"]["examples_per_s"],
                                   result["auc"]["examples_per_s"] if result["auc"] else None)
        projection.update(n_train=counts["train"], n_eval=counts["eval"],
                          auc_examples_per_evaluation=auc_examples(mr, counts["eval"]))
    return {
        "profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []),
        "device": device, "device_name": device_name,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
        "packing": packed, "cutoff_len": cutoff,
        "quantization_bit": lf.get("quantization_bit"), "gradient_checkpointing": not lf.get(
            "disable_gradient_checkpointing", False), "enable_liger_kernel": bool(lf.get("enable_liger_kernel")),
        "attention": str(lf.get("flash_attn", "auto")),
        **result,
        "peak_memory_gib": round(peak_gib, 3), "train_peak_memory_gib": round(peaks["train_peak_gib"], 3),
        "peak_memory_kind": ("torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS (VmHWM)")
        + "; peak_memory_gib includes the evaluation, train_peak_memory_gib stops when training ends",
        "flops_per_token": flops, "peak_flops": peak, "measured_matmul_flops": matmul,
        "mfu": flops * result["tokens_per_s"] / peak if peak else None,
        "mfu_vs_measured_matmul": flops * result["tokens_per_s"] / matmul if matmul else None,
        "params": params, "trainable_params": trainable, "prompt_lengths": source,
        "plan": plan, "projection": projection,
    }


def _make_adapter(model_dir: Path, lf: dict[str, Any], out: Path) -> Path:
    """A LoRA adapter of the config's shape (random A, random small B) for the random model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, low_cpu_mem_usage=True)
    targets = sorted({name.split(".")[-1] for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and "lm_head" not in name})
    peft_model = get_peft_model(model, LoraConfig(r=int(lf.get("lora_rank", 8)), lora_alpha=lf.get("lora_alpha") or 16,
                                                  target_modules=targets, task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)  # a trained adapter is not zero
    peft_model.save_pretrained(out)
    return out


def run_scoring_bench(config: str | Path, overrides: list[str] | None = None, examples: int = 4450,
                      device: str = "auto", model_cache: str | Path | None = None) -> dict[str, Any]:
    """Seconds movierec's scorer takes for `examples` eval prompts, loaded and merged as `evaluate` does."""
    from movierec.scoring import YesNoScorer, load_model_for_scoring

    if examples < 1:
        raise UserError("--examples: at least 1")
    lf, mr, device, _, data = _setup(config, overrides, device)
    stats, source = prompt_token_stats(data.path)
    cutoff = int(lf.get("cutoff_len", 2048))
    batch = int(mr.get("eval_auc_batch_size", 16))
    device_name, _, _ = _device_info(device)
    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        model_dir, params, tokenizer = random_model(str(lf["model_name_or_path"]), model_cache and Path(model_cache), work)
        adapter = _make_adapter(model_dir, lf, work / "adapter")
        gc.collect()
        _reset_peak_memory(device)
        start = time.perf_counter()
        with _stdout_to_stderr():
            model, tokenizer, template = load_model_for_scoring({**lf, "model_name_or_path": str(model_dir)}, adapter,
                                                                device)
        load_s = time.perf_counter() - start
        data = make_examples(examples, stats, len(tokenizer), tokenizer.eos_token_id, cutoff, seed=4)
        prompts = [ids[:-ANSWER_TOKENS] for ids in data["input_ids"]]
        scorer = YesNoScorer(model, tokenizer, template, cutoff, batch)
        start = time.perf_counter()
        scorer.score_ids(prompts[:batch])  # first call: kernels, allocator (evaluate pays it once per checkpoint)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        probs = scorer.score_ids(prompts)
        seconds = time.perf_counter() - start
        peak_gib = _peak_memory_gib(device)
    if not np.isfinite(probs).all():
        raise UserError("bench --scoring: non-finite P(Yes)")
    return {"profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []), "device": device,
            "device_name": device_name, "examples": examples, "batch_size": batch,
            "quantization_bit": lf.get("quantization_bit"), "seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "first_batch_seconds": round(first_s, 3),
            "load_and_merge_seconds": round(load_s, 3), "tokens_per_example": float(np.mean([len(p) for p in prompts])),
            "shared_prefix_tokens": SHARED_PREFIX_TOKENS, "peak_memory_gib": round(peak_gib, 3), "params": params,
            "prompt_lengths": source,
            "timing": "score_ids over all prompts after a first batch; tokenization and model loading excluded"}


def main(args) -> int:
    for option, path, want_dir in (("--json-out", args.json_out, False), ("--model-cache", args.model_cache, True)):
        if path and Path(path).exists() and Path(path).is_dir() != want_dir:  # checked before the minutes of work
            raise UserError(f"{option} {path}: is a {'file' if want_dir else 'folder'}; expected a "
                            f"{'folder' if want_dir else 'file name'}")
    if args.scoring:
        result = run_scoring_bench(args.config, args.override, args.examples, args.device, args.model_cache)
    else:
        result = run_bench(args.config, args.override, args.steps, args.device, args.model_cache)
    text = json.dumps(result, indent=2)
    if args.json_out:
        from movierec.io import atomic_write_text

        atomic_write_text(Path(args.json_out), text + "\n")
    print(text)
    return 0
