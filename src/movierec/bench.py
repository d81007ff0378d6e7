"""`movierec bench`: training throughput of a config, on a random model of its architecture.

No weights and no prepared data are needed. The model is the config's architecture
(configs/models/<name>.json for a hub id, config.json for a local folder) with random weights,
saved with the tiny tokenizer (movierec.tiny) in a temp folder; its embeddings keep the
architecture's vocabulary size, the generated token ids stay below the tokenizer's. The examples
are pre-tokenized (LLaMA-Factory's `tokenized_path`) with lengths drawn like the prepared data's:

    tokens = prompt_chars / CHARS_PER_TOKEN + TEMPLATE_TOKENS, then ANSWER_TOKENS labelled tokens,

prompt_chars ~ normal(mean, std) clipped to [min, max] from `prompt_chars` in
dataset_dir/manifest.json, or DEFAULT_PROMPT_TOKENS without a manifest. Training runs N
optimizer steps through the same path as `movierec train` (validated config and overrides,
movierec.worker and its callbacks), without evaluation or checkpoints. The rate is measured over
step_times.jsonl after skipping the first WARMUP_FRACTION of the steps (at least one); non-padding
tokens come from the Trainer's own count (trainer_log.jsonl's total_tokens). On a GPU a step's time
covers its forward and backward (the Trainer's NaN-loss check waits for them), not the LoRA
optimizer update still queued when the step ends (milliseconds).

Sequence packing is bypassed by `tokenized_path` (LLaMA-Factory packs while tokenizing), so a
config with `packing: true` is refused rather than measured without it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from movierec.errors import UserError
from movierec.runinfo import dataset_dir

# Qwen's tokenizer reads ~4 characters per token in English words but splits digits one per token;
# the prompts are titles, years and "4.5 stars" lines, so fewer characters per token than prose.
CHARS_PER_TOKEN = 3.5
# `template: qwen` around the prompt, counted in Qwen's tokenizer: the default system turn
# ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant." + ChatML markers, 20)
# and the user/assistant markers (8).
TEMPLATE_TOKENS = 28
ANSWER_TOKENS = 3  # "Yes" / "No", <|im_end|>, "\n": the labelled tokens (qwen's format_assistant)
# Without a manifest: the reference run's ~200-token prompts (template included).
DEFAULT_PROMPT_TOKENS = {"mean": 200.0, "std": 40.0, "min": 100.0, "max": 400.0}
WARMUP_FRACTION = 0.2
# Dense bf16 tensor-core peak (no sparsity) per GPU, by a substring of torch's device name.
# H100/H200 are the SXM figures (H100 PCIe: 756e12), so MFU on a PCIe card reads low.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "3090": 71e12}


# ---------------------------------------------------------------- examples


def prompt_token_stats(dataset_dir: str | Path) -> tuple[dict[str, float], str]:
    """Prompt length statistics in tokens (template included) and where they came from."""
    path = Path(dataset_dir) / "manifest.json"
    if not path.is_file():
        return dict(DEFAULT_PROMPT_TOKENS), "defaults (no manifest.json)"
    try:
        chars = json.loads(path.read_text(encoding="utf-8")).get("prompt_chars")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if not isinstance(chars, dict) or "mean" not in chars:
        return dict(DEFAULT_PROMPT_TOKENS), f"defaults ({path} has no prompt_chars)"
    stats = {k: float(chars[k]) / CHARS_PER_TOKEN + TEMPLATE_TOKENS for k in ("mean", "min", "max") if k in chars}
    stats["std"] = float(chars.get("std", 0.0)) / CHARS_PER_TOKEN
    return stats, f"{path} (prompt_chars / {CHARS_PER_TOKEN} + {TEMPLATE_TOKENS} template tokens)"


def make_examples(n: int, stats: dict[str, float], vocab_size: int, eos_id: int, cutoff_len: int,
                  seed: int = 0) -> dict[str, list[list[int]]]:
    """`n` pre-tokenized SFT examples: random prompt ids, loss on the last ANSWER_TOKENS (eos included)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lo = max(stats.get("min", 1.0), 1.0)
    hi = stats.get("max", math.inf)
    prompt = np.clip(rng.normal(stats["mean"], stats.get("std", 0.0), n), lo, hi).round().astype(int)
    total = np.minimum(prompt + ANSWER_TOKENS, cutoff_len)
    input_ids, labels = [], []
    for length in total.tolist():
        ids = rng.integers(0, vocab_size, length).tolist()
        ids[-2] = eos_id
        input_ids.append(ids)
        labels.append([-100] * (length - ANSWER_TOKENS) + ids[-ANSWER_TOKENS:])
    return {"input_ids": input_ids, "attention_mask": [[1] * len(x) for x in input_ids], "labels": labels}


# ---------------------------------------------------------------- model


def build_random_model(model_name_or_path: str, out_dir: Path) -> tuple[int, Any]:
    """Save a randomly initialised model of this architecture + the tiny tokenizer to `out_dir`.

    Returns:
        (parameters of the base model, the tokenizer).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from movierec.params import load_model_config
    from movierec.tiny import build_tokenizer

    cfg = load_model_config(model_name_or_path)
    if "model_type" not in cfg:
        raise UserError(f"model_name_or_path: {model_name_or_path} has no model_type in its config")
    config = AutoConfig.for_model(**cfg)
    tokenizer = build_tokenizer()
    if config.vocab_size < len(tokenizer):
        raise UserError(f"model_name_or_path: vocabulary of {config.vocab_size} is smaller than the bench "
                        f"tokenizer's {len(tokenizer)}")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)  # in the config's dtype (bf16 for Qwen3-0.6B)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return params, tokenizer


# ---------------------------------------------------------------- run and measure


def bench_args(lf: dict[str, Any], steps: int, work: Path) -> dict[str, Any]:
    """The config's LLaMA-Factory args, set to train `steps` steps on the generated data only."""
    args = dict(lf)
    for key in ("eval_dataset", "val_size", "load_best_model_at_end", "resume_from_checkpoint"):
        args.pop(key, None)
    args.update(
        model_name_or_path=str(work / "model"),
        dataset="movierec_bench",  # LLaMA-Factory wants a name; tokenized_path replaces the data
        tokenized_path=str(work / "data"),
        output_dir=str(work / "out"),
        max_steps=steps, do_train=True, do_eval=False, do_predict=False, eval_strategy="no",
        save_strategy="no", report_to="none", plot_loss=False,
        logging_steps=1, include_num_input_tokens_seen="non_padding",  # trainer_log.jsonl: total_tokens per step
    )
    return args


def measure(out_dir: Path, steps: int) -> dict[str, Any]:
    """Rates over steps after the warm-up, from step_times.jsonl and trainer_log.jsonl's total_tokens."""
    times = [json.loads(line) for line in (out_dir / "step_times.jsonl").read_text().splitlines()]
    if len(times) != steps:
        raise UserError(f"bench: {len(times)} steps were timed, expected {steps}")
    warmup = min(max(1, round(steps * WARMUP_FRACTION)), steps - 1)
    timed = times[warmup:]
    seconds = sum(t["seconds"] for t in timed)
    examples = sum(t["examples"] for t in timed)
    tokens = {line["current_steps"]: line["total_tokens"]
              for line in map(json.loads, (out_dir / "trainer_log.jsonl").read_text().splitlines())
              if "total_tokens" in line}
    return {"steps": steps, "warmup_steps": warmup, "timed_seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "tokens_per_s": (tokens[steps] - tokens[warmup]) / seconds,
            "tokens_per_example": (tokens[steps] - tokens[warmup]) / examples}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def _reset_peak_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the peak RSS


def _peak_memory_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 2**20


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


def run_bench(config: str | Path, overrides: list[str] | None = None, steps: int = 10,
              device: str = "auto") -> dict[str, Any]:
    """Train `steps` steps of `config` on a random model and return the throughput figures."""
    from movierec.config import load_config, validate
    from movierec.train import apply_device, render_llamafactory_args, resolve_device

    if steps < 2:
        raise UserError("--steps: at least 2 (the first step is warm-up and not timed)")
    cfg = load_config(config, overrides)
    for key in ("dataset", "eval_dataset"):  # bench generates its own examples
        cfg.pop(key, None)
    device = resolve_device(device)
    lf, mr = validate(cfg)
    if lf.get("packing") or lf.get("neat_packing"):
        raise UserError("packing: bench feeds pre-tokenized examples, which LLaMA-Factory never packs")
    apply_device(lf, device)
    stats, source = prompt_token_stats(dataset_dir(lf))
    batch, accum = int(lf.get("per_device_train_batch_size", 8)), int(lf.get("gradient_accumulation_steps", 1))

    from datasets import Dataset, DatasetDict

    from movierec.worker import run

    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        params, tokenizer = build_random_model(str(lf["model_name_or_path"]), work / "model")
        # exactly the examples the steps use, so the timed ones are the generated distribution; with
        # `group_by_length` the Trainer sorts within steps/4 batches (50 on the real data): less
        # grouping, so a conservative rate
        n = steps * batch * accum
        data = make_examples(n, stats, len(tokenizer), tokenizer.eos_token_id, int(lf.get("cutoff_len", 2048)))
        DatasetDict({"train": Dataset.from_dict(data)}).save_to_disk(work / "data")
        lf_args = render_llamafactory_args(bench_args(lf, steps, work), "bench", None, None)
        (work / "lf.yaml").write_text(yaml.safe_dump(lf_args))
        (work / "resolved.yaml").write_text(yaml.safe_dump({"movierec": mr}))
        gc.collect()  # a previous bench in this process must not count in this one's peak
        _reset_peak_memory(device)
        with _stdout_to_stderr():
            run(work / "lf.yaml", work / "resolved.yaml")
        result = measure(work / "out", steps)
        peak_gib = _peak_memory_gib(device)

    name = "cpu"
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name(0)
    flops = peak_flops(name) if device == "cuda" else None
    return {
        "profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []),
        "device": device, "device_name": name,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
        **result,
        "peak_memory_gib": round(peak_gib, 3),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS (VmHWM)",
        # model FLOPs utilisation, PaLM-style 6*N per token: a frozen 4-bit base needs no weight
        # gradients (~4N) but recomputation under gradient checkpointing adds ~2N; attention ignored
        "mfu": 6 * params * result["tokens_per_s"] / flops if flops else None,
        "params": params, "prompt_lengths": source,
    }


def main(args) -> int:
    print(json.dumps(run_bench(args.config, args.override, args.steps, args.device), indent=2))
    return 0
