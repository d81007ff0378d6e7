#!/usr/bin/env python
"""Ranking-list scoring speed: batches of whole prompts sharing only the global prefix (how every list was
scored before), one KV cache per list (the CPU's default), and each list packed into rows (the GPU's).

All configurations score the same prepared ranking lists (ranking.jsonl) with the same model, scorer and
batch size, in one process, alternately per repeat; the JSON gives seconds per list for each, their ratio,
and the largest difference between the configurations' scores (float rounding only).

    python scripts/bench_ranking.py --data data/ml-100k [--model DIR --template T] [--lists 100] [--device cpu]

Default model: the tiny Qwen3 (random weights) built in --work; `--model DIR --device cuda` times a real one.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared data folder with ranking.jsonl")
    p.add_argument("--model", help="model folder (default: the tiny Qwen3, built in --work)")
    p.add_argument("--template", default="qwen", help="LLaMA-Factory template of the model (smollm2 for SmolLM2)")
    p.add_argument("--lists", type=int, default=100, help="ranking lists to score (the first N)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--work", default="/tmp/movierec-bench-ranking")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template
    from movierec.folders.datadir import DatasetDir
    from movierec.models.tiny import build_tiny_model

    model_dir = Path(args.model) if args.model else Path(args.work) / "tiny-qwen3"
    if not args.model and not (model_dir / "config.json").is_file():
        build_tiny_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).to(args.device)
    template = build_template(tokenizer, args.template)
    scorer = YesNoScorer(model, tokenizer, template, batch_size=args.batch_size, packing=False)
    packer = YesNoScorer(model, tokenizer, template, batch_size=args.batch_size, packing=True)
    lists = DatasetDir(args.data).read_jsonl(Path(args.data) / "ranking.jsonl")
    keep = sorted({c["list_id"] for c in lists})[: args.lists]
    records = [c for c in lists if c["list_id"] in set(keep)]
    prompts = scorer.encode_many(records)
    groups = [c["list_id"] for c in records]
    scorer.score_ids(prompts[: args.batch_size])  # first call: allocator, kernels
    seconds = {"global_prefix": [], "per_list_cache": [], "packed_lists": []}
    scores = {}
    for _ in range(args.repeats):
        for name, use, g in (("global_prefix", scorer, None), ("per_list_cache", scorer, groups),
                             ("packed_lists", packer, groups)):
            start = time.perf_counter()
            scores[name] = use.score_ids(prompts, groups=g)
            seconds[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in seconds.items()}
    print(json.dumps({
        "lists": len(keep), "candidates": len(records), "mean_prompt_tokens": float(np.mean([len(x) for x in prompts])),
        "batch_size": args.batch_size, "device": args.device, "model": str(model_dir), "threads": torch.get_num_threads(),
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "seconds_per_list": {k: round(v / len(keep), 4) for k, v in best.items()},
        "speedup_per_list": {k: best["global_prefix"] / best[k] for k in ("per_list_cache", "packed_lists")},
        "max_abs_score_difference": max(float(np.abs(scores["global_prefix"] - v).max()) for v in scores.values()),
        "timing": f"best of {args.repeats} repeats each, alternating; tokenization and model loading excluded",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
