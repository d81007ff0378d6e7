"""Inputs of `movierec bench`: generated token examples shaped like the prepared data's, packing through
LLaMA-Factory's own processor, and a random-weight model of the config's architecture."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from movierec.bench.lengths import ANSWER_TOKENS, SHARED_PREFIX_TOKENS, example_lengths
from movierec.errors import UserError
from movierec.train.config import arg

IGNORE_INDEX = -100


# ---------------------------------------------------------------- examples


def make_examples(n: int, stats: dict[str, float], vocab_size: int, eos_id: int, cutoff_len: int,
                  seed: int = 0) -> dict[str, list[list[int]]]:
    """`n` pre-tokenized SFT examples: random ids, the first SHARED_PREFIX_TOKENS the same in every
    example long enough, loss on the last ANSWER_TOKENS (eos included); cut to cutoff_len."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, vocab_size, SHARED_PREFIX_TOKENS).tolist()
    input_ids, labels = [], []
    for length in np.minimum(example_lengths(n, stats, rng), cutoff_len).tolist():
        ids = rng.integers(0, vocab_size, length).tolist()
        if length > SHARED_PREFIX_TOKENS + ANSWER_TOKENS:
            ids[:SHARED_PREFIX_TOKENS] = prefix
        ids[-2] = eos_id
        input_ids.append(ids)
        labels.append([IGNORE_INDEX] * (length - ANSWER_TOKENS) + ids[-ANSWER_TOKENS:])
    return {"input_ids": input_ids, "attention_mask": [[1] * len(x) for x in input_ids], "labels": labels}


def pack_examples(data: dict[str, list], lf: dict[str, Any], tokenizer) -> dict[str, list]:
    """`data` packed exactly as LLaMA-Factory packs tokenized examples (its own packed processor)."""
    from datasets import Dataset
    from llamafactory.data.loader import _get_dataset_processor
    from llamafactory.hparams import DataArguments

    data_args = DataArguments(cutoff_len=int(arg(lf, "cutoff_len")), neat_packing=bool(lf.get("neat_packing")),
                              packing=True)
    processor = _get_dataset_processor(data_args, "sft", None, tokenizer, None)
    # the examples are tokens already: hand them to the processor in place of the template's encoding
    processor._encode_data_example = lambda prompt, response, **_: (list(prompt[0]["content"]),
                                                                      list(response[0]["content"]))
    n = len(data["input_ids"])
    source = Dataset.from_dict({
        "_prompt": [[{"role": "user", "content": ids}] for ids in data["input_ids"]],
        "_response": [[{"role": "assistant", "content": labels}] for labels in data["labels"]],
        "_system": [""] * n, "_tools": [""] * n, "_images": [None] * n, "_videos": [None] * n, "_audios": [None] * n,
    })
    packed = source.map(processor.preprocess_dataset, batched=True, batch_size=1000, remove_columns=source.column_names)
    return packed.to_dict()


def attended_keys(lengths: list[int]) -> float:
    """Mean number of keys a token attends to: causal attention within its own example."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return float((lengths * (lengths + 1) / 2).sum() / max(lengths.sum(), 1))


# ---------------------------------------------------------------- model


def _arch_key(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def build_random_model(model_name_or_path: str, out_dir: Path) -> tuple[int, Any]:
    """Save a randomly initialised model of this architecture + the tiny tokenizer to `out_dir`.

    Returns:
        (parameters of the base model, the tokenizer).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from movierec.models.params import load_model_config
    from movierec.models.tiny import build_tokenizer

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
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "bench_model.json").write_text(json.dumps({"params": params, "source": str(model_name_or_path)}))
    if out_dir.exists():  # another process built it meanwhile
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.replace(out_dir)
    return params, tokenizer


def random_model(model_name_or_path: str, cache: Path | None, work: Path) -> tuple[Path, int, Any]:
    """(folder, base parameters, tokenizer) of a random model of this architecture, built once per
    architecture under `cache` (reused by later benches), else in `work`."""
    from transformers import AutoTokenizer

    from movierec.models.params import load_model_config

    folder = (cache / f"random-{_arch_key(load_model_config(model_name_or_path))}") if cache else work / "model"
    if (folder / "bench_model.json").is_file():
        return folder, json.loads((folder / "bench_model.json").read_text())["params"], AutoTokenizer.from_pretrained(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    params, tokenizer = build_random_model(model_name_or_path, folder)
    return folder, params, tokenizer
