"""Example lengths in tokens, estimated without a tokenizer: for `bench` and the dry run's step plan.

The real Qwen3 tokenizer is not available offline, so lengths come from the prepared data's
character statistics (`prompt_chars` in dataset_dir/manifest.json). The constants are calibrated on
Qwen's tokenizer and `template: qwen` (the reference run), not derived from the model: SmolLM2's
tokenizer and template make ML-100K's prompts ~1/3 longer than estimated here (docs/models.md):

    tokens = prompt_chars / CHARS_PER_TOKEN + TEMPLATE_TOKENS, then ANSWER_TOKENS labelled tokens,

prompt_chars ~ normal(mean, std) clipped to [min, max], or DEFAULT_PROMPT_TOKENS without a manifest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from movierec.errors import UserError

# Qwen's tokenizer reads ~4 characters per token in English words but splits digits one per token;
# the prompts are titles, years and "4.5 stars" lines, so fewer characters per token than prose.
CHARS_PER_TOKEN = 3.5
# `template: qwen` around the prompt, counted in Qwen's tokenizer: the default system turn
# ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant." + ChatML markers, 20)
# and the user/assistant markers (8).
TEMPLATE_TOKENS = 28
ANSWER_TOKENS = 3  # "Yes" / "No", <|im_end|>, "\n": the labelled tokens (qwen's format_assistant)
# Tokens every prompt starts with: system turn, user marker, the instruction and the first two lines
# of the input ("The user's ratings, oldest first." / "Liked (4 stars or more):"); the scorer
# computes them once per evaluation (shared-prefix KV cache), so generated prompts share them too.
SHARED_PREFIX_TOKENS = 56
# Without a manifest: the reference run's ~200-token prompts (template included).
DEFAULT_PROMPT_TOKENS = {"mean": 200.0, "std": 40.0, "min": 100.0, "max": 400.0}
PREPROCESSING_BATCH = 1000  # LLaMA-Factory's preprocessing_batch_size default: packing happens per batch


def prompt_token_stats(dataset_dir: str | Path) -> tuple[dict[str, float], str]:
    """Prompt length statistics in tokens (template included) and where they came from."""
    from movierec.datadir import DatasetDir

    path = DatasetDir(dataset_dir).file(DatasetDir.MANIFEST)
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


def example_lengths(n: int, stats: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Tokens per example (prompt + answer), before any cutoff."""
    lo = max(stats.get("min", 1.0), 1.0)
    hi = stats.get("max", math.inf)
    prompt = np.clip(rng.normal(stats["mean"], stats.get("std", 0.0), n), lo, hi).round().astype(int)
    return prompt + ANSWER_TOKENS


def pack(lengths: list[int], cutoff_len: int, batch: int = PREPROCESSING_BATCH) -> list[list[int]]:
    """Indices of the examples in each packed sequence, as LLaMA-Factory 0.9.5 packs them.

    Its packed processor sees `batch` examples at a time, drops those longer than cutoff_len - 1
    and fills sequences of cutoff_len - 1 tokens with its greedy knapsack (largest that fits first).
    """
    from llamafactory.data.processor.processor_utils import greedy_knapsack

    rows = []
    capacity = cutoff_len - 1
    for start in range(0, len(lengths), batch):
        chunk = [(length, i) for i, length in enumerate(lengths[start:start + batch], start) if length <= capacity]
        by_length: dict[int, list[int]] = {}
        for length, i in chunk:
            by_length.setdefault(length, []).append(i)
        for knapsack in greedy_knapsack([length for length, _ in chunk], capacity):
            rows.append([by_length[length].pop() for length in knapsack])
    return rows


def packing_plan(lf: dict, n_examples: int, stats: dict[str, float], source: str) -> dict:
    """Packed sequences the run will train on (estimated from the length statistics)."""
    cutoff = int(lf.get("cutoff_len", 2048))
    lengths = example_lengths(n_examples, stats, np.random.default_rng(0)).tolist()
    rows = pack(lengths, cutoff, int(lf.get("preprocessing_batch_size") or PREPROCESSING_BATCH))
    kept = sum(len(r) for r in rows)
    return {"sequences": len(rows), "examples_per_sequence": kept / max(len(rows), 1),
            "dropped_examples": n_examples - kept, "longest_example_tokens": max(lengths, default=0),
            "fill": sum(lengths[i] for r in rows for i in r) / max(len(rows) * cutoff, 1), "lengths_from": source}
