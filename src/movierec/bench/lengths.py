"""Example lengths in tokens: measured by `prepare`, drawn by `bench` and the dry run's packing plan.

`prepare` records the distribution of its examples' lengths in manifest.json (`example_lengths`,
see describe_example_lengths): in tokens of the data config's `tokenizer` (the whole example as the
model sees it: LLaMA-Factory's qwen chat template around instruction + input, and the answer), or,
without one, in characters of the user turn, converted at read time by the rule

    tokens = characters / CHARS_PER_TOKEN + TEMPLATE_TOKENS + ANSWER_TOKENS.

Without a manifest, the distribution measured once on real MovieLens-100K prompts (ml100k_lengths.json,
shipped in the package) is used. Manifests written before `example_lengths` existed have only
`prompt_chars` (mean, std, min, max): a normal distribution clipped to [min, max].
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from movierec.errors import UserError
from movierec.train.config import arg

# Qwen3's tokenizer on real MovieLens prompts (272 +- 18 tokens per example): 2.67 characters per token.
# Titles, years and "4.5 stars" lines split finely (digits are one token each), unlike English prose (~4).
CHARS_PER_TOKEN = 2.67
# `template: qwen` around the prompt, counted in Qwen's tokenizer: the default system turn
# ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant." + ChatML markers, 20)
# and the user/assistant markers (8).
TEMPLATE_TOKENS = 28
ANSWER_TOKENS = 3  # "Yes" / "No", <|im_end|>, "\n": the labelled tokens (qwen's format_assistant)
# Tokens every prompt starts with: system turn, user marker, the instruction and the first two lines
# of the input ("The user's ratings, oldest first." / "Liked (4 stars or more):"); the scorer
# computes them once per evaluation (shared-prefix KV cache), so generated prompts share them too.
SHARED_PREFIX_TOKENS = 56
TEMPLATE = "qwen"  # the chat template prepare counts tokens with (the data files are movielens_qwen3_*)
QUANTILES = 101  # percentiles 0..100 describe a distribution in the manifest
DEFAULT_LENGTHS = "ml100k_lengths.json"  # in movierec.bench: real ML-100K prompts, measured once
PREPROCESSING_BATCH = 1000  # LLaMA-Factory's preprocessing_batch_size default: packing happens per batch


def _summary(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": round(float(x.mean()), 3), "std": round(float(x.std()), 3), "min": int(x.min()),
            "max": int(x.max()), "quantiles": [round(float(q), 2) for q in np.percentile(x, np.linspace(0, 100, QUANTILES))]}


def describe_example_lengths(tokenizer: str | None, jsonl: list[bytes], chars: np.ndarray) -> dict[str, Any]:
    """manifest.json's `example_lengths`: the examples' token lengths with `tokenizer`, else their characters.

    jsonl: the prepared files' bytes (alpaca records); chars: characters of each record's user turn.
    """
    if not tokenizer:
        rule = f"tokens = characters / {CHARS_PER_TOKEN} + {TEMPLATE_TOKENS} template + {ANSWER_TOKENS} answer tokens"
        return {"unit": "characters", "counted": "characters of the user turn (instruction, newline, input)",
                "chars_per_token": CHARS_PER_TOKEN, "rule": rule, **_summary(chars)}
    return {"unit": "tokens", "tokenizer": tokenizer, **_summary(count_tokens(tokenizer, jsonl)),
            "counted": f"whole example (system turn, instruction + input, answer) in LLaMA-Factory's {TEMPLATE} "
                       "template, as training tokenizes it"}


def count_tokens(tokenizer: str, jsonl: list[bytes]) -> np.ndarray:
    """Tokens per example (prompt + answer) exactly as LLaMA-Factory's supervised preprocessing encodes them."""
    from transformers import AutoTokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer: cannot load {tokenizer!r} ({str(e).splitlines()[0]})") from None
    template = build_template(tok, TEMPLATE, cutoff_len=10**9)
    records = [json.loads(line) for data in jsonl for line in data.splitlines() if line.strip()]
    prompts = YesNoScorer(None, tok, template, cutoff_len=10**9).encode_many(records)
    answers = {}
    for answer in {r["output"] for r in records}:
        messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": answer}]
        answers[answer] = len(template.encode_multiturn(tok, messages)[0][1])
    return np.array([len(p) + answers[r["output"]] for p, r in zip(prompts, records)])


def example_token_stats(dataset_dir: str | Path) -> tuple[dict[str, Any], str]:
    """Tokens per example (prompt + answer) as a distribution ({mean, std, min, max, quantiles}) and its source."""
    from movierec.folders.datadir import DatasetDir

    path = DatasetDir(dataset_dir).file(DatasetDir.MANIFEST)
    if not path.is_file():
        return default_lengths(), f"real MovieLens-100K prompts shipped in movierec ({DEFAULT_LENGTHS}; no {path})"
    manifest = DatasetDir(dataset_dir).manifest()
    lengths, chars = manifest.get("example_lengths"), manifest.get("prompt_chars")
    if _usable(lengths) and lengths.get("unit") == "tokens":
        return lengths, f"{path} (tokens of {lengths.get('tokenizer')})"
    if _usable(lengths) and lengths.get("unit") == "characters":
        return chars_to_tokens(lengths), f"{path} ({lengths.get('rule')})"
    if isinstance(chars, dict) and all(_number(chars.get(k)) for k in ("mean", "std", "min", "max")):
        # a manifest from before example_lengths
        return chars_to_tokens(_normal_quantiles(chars)), (f"{path} (prompt_chars as a normal distribution; tokens = "
                                                           f"characters / {CHARS_PER_TOKEN} + "
                                                           f"{TEMPLATE_TOKENS + ANSWER_TOKENS})")
    return default_lengths(), f"real MovieLens-100K prompts shipped in movierec ({path} has no lengths it can read)"


def _number(x: Any) -> bool:
    """A finite, non-negative number of a sensible size (a token or character count)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e9


def _usable(lengths: Any) -> bool:
    """A manifest's example_lengths as prepare writes them (a hand-edited or damaged one is not used)."""
    if not isinstance(lengths, dict) or not all(_number(lengths.get(k)) for k in ("mean", "std", "min", "max")):
        return False
    q = lengths.get("quantiles")
    return (isinstance(q, list) and len(q) >= 2 and all(_number(x) for x in q) and lengths["min"] <= lengths["max"]
            and all(a <= b for a, b in zip(q, q[1:])))


def default_lengths() -> dict[str, Any]:
    return json.loads(resources.files("movierec.bench").joinpath(DEFAULT_LENGTHS).read_text(encoding="utf-8"))


def _normal_quantiles(chars: dict[str, float]) -> dict[str, Any]:
    mean, std = float(chars["mean"]), float(chars.get("std") or 0.0)
    lo, hi = float(chars.get("min", -math.inf)), float(chars.get("max", math.inf))
    ps = np.linspace(0, 100, QUANTILES)
    q = [mean + std * NormalDist().inv_cdf(min(max(p / 100, 1e-4), 1 - 1e-4)) for p in ps]
    return {"mean": mean, "std": std, "min": lo, "max": hi, "quantiles": np.clip(q, lo, hi).tolist()}


def chars_to_tokens(d: dict[str, Any]) -> dict[str, Any]:
    """A character distribution of the user turn as tokens per example (the module's rule)."""
    def conv(x: float) -> float:
        return x / CHARS_PER_TOKEN + TEMPLATE_TOKENS + ANSWER_TOKENS
    return {"mean": conv(d["mean"]), "std": d["std"] / CHARS_PER_TOKEN, "min": conv(d["min"]), "max": conv(d["max"]),
            "quantiles": [conv(q) for q in d["quantiles"]]}


def example_lengths(n: int, stats: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Tokens per example (prompt + answer), drawn from the distribution's quantiles (inverse CDF), before any cutoff."""
    q = np.asarray(stats["quantiles"], dtype=np.float64)
    drawn = np.interp(rng.random(n) * (len(q) - 1), np.arange(len(q)), q)
    return np.maximum(drawn.round().astype(int), ANSWER_TOKENS + 1)


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


def packing_plan(lf: dict, n_examples: int, stats: dict[str, Any], source: str) -> dict:
    """Packed sequences the run will train on (estimated from the length distribution)."""
    cutoff = int(arg(lf, "cutoff_len"))
    lengths = example_lengths(n_examples, stats, np.random.default_rng(0)).tolist()
    rows = pack(lengths, cutoff, int(lf.get("preprocessing_batch_size") or PREPROCESSING_BATCH))
    kept = sum(len(r) for r in rows)
    return {"sequences": len(rows), "examples_per_sequence": kept / max(len(rows), 1),
            "dropped_examples": n_examples - kept, "longest_example_tokens": max(lengths, default=0),
            "fill": sum(lengths[i] for r in rows for i in r) / max(len(rows) * cutoff, 1), "lengths_from": source}


def cut_examples(lf: dict, dataset_dir: str | Path) -> str | None:
    """A warning when the prepared examples run past cutoff_len, else None.

    LLaMA-Factory's supervised preprocessing (infer_seqlen) keeps the first tokens of a long prompt: the end,
    which holds the candidate movie, is what goes, so such an example asks about no movie at all. Packing drops
    such examples instead (the dry run's packing line counts them). Lengths are the manifest's (tokens of the
    data config's tokenizer, or characters by this module's rule): another model's tokenizer differs a little.
    """
    from movierec.folders.datadir import DatasetDir

    if arg(lf, "packing") or arg(lf, "neat_packing") or not DatasetDir(dataset_dir).file(DatasetDir.MANIFEST).is_file():
        return None
    stats, source = example_token_stats(dataset_dir)
    cutoff = int(arg(lf, "cutoff_len"))
    if float(stats["max"]) <= cutoff:
        return None
    q = np.asarray(stats["quantiles"], dtype=np.float64)
    share = float(np.interp(cutoff, q, np.linspace(0, 1, len(q)), left=0.0, right=1.0))  # the CDF at cutoff_len
    longer = f"~{1 - share:.0%}" if 1 - share >= 0.01 else "under 1%"
    return (f"cutoff_len {cutoff:,}: {longer} of the prepared examples are longer (longest ~{float(stats['max']):,.0f} "
            f"tokens, from {source}); LLaMA-Factory cuts a long prompt's end, where the candidate movie is: raise "
            "cutoff_len, or lower the data config's history_len and prepare again")
