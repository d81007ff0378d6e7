#!/usr/bin/env python
"""Scoring speed: movierec's batched Yes/No scorer vs LLaMA-Factory's own evaluation (batch 1).

Both score the same 4,450 eval examples (the reference eval size) with the same 4-bit model and
adapter on the same machine. Model loading and tokenization are outside both timers
(LLaMA-Factory tokenizes its eval set before `eval_runtime` starts); movierec's tokenization time
is printed beside, with the ratio including it. Prints JSON.

    python scripts/bench_scoring.py [--work /tmp/bench-scoring] [--examples 4450] [--batch-size 64]

"llamafactory_eval_batch1_seconds" is LLaMA-Factory's evaluation as it runs inside movierec training
(fp32 compute on CPU); on CPUs with AVX512-BF16 the bf16 kernel bitsandbytes would otherwise pick
is timed too. Default model: the tiny Qwen3 on CPU. `--model DIR --device cuda` times a real model on a GPU.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run(cmd: list[str]) -> None:
    from movierec.cli import main

    if main(cmd) != 0:
        sys.exit(f"failed: movierec {' '.join(cmd)}")


def llamafactory_eval(lf_args: dict, adapter: Path, out: Path, device: str, fp32: bool) -> float:
    """Seconds LLaMA-Factory's Trainer.evaluate takes at per_device_eval_batch_size=1.

    fp32=True evaluates as it does inside a movierec training run on CPU (4-bit layers on the
    fp32 path, see callbacks.keep_fp32_on_cpu); fp32=False leaves bitsandbytes free to use its
    bf16 CPU inference kernel where the CPU has AVX512-BF16.
    """
    import bitsandbytes.nn.modules as bnb_modules
    from llamafactory.train.tuner import run_exp

    original = bnb_modules.has_avx512bf16
    if fp32:
        bnb_modules.has_avx512bf16 = lambda: False  # read by every Linear4bit at construction

    keys = ("model_name_or_path", "template", "cutoff_len", "quantization_bit", "quantization_method",
            "quantization_type", "double_quantization", "dataset_dir", "eval_dataset", "flash_attn")
    args = {k: lf_args[k] for k in keys if lf_args.get(k) is not None}
    args.update(stage="sft", do_train=False, do_eval=True, finetuning_type="lora",
                adapter_name_or_path=str(adapter), per_device_eval_batch_size=1, output_dir=str(out),
                report_to="none", overwrite_cache=True, preprocessing_num_workers=1, bf16=device == "cuda",
                dataloader_num_workers=0)
    try:
        run_exp(args=args)
    finally:
        bnb_modules.has_avx512bf16 = original
    return json.loads((out / "eval_results.json").read_text())["eval_runtime"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/movierec-bench-scoring")
    p.add_argument("--examples", type=int, default=4450)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", help="model folder (default: a tiny Qwen3 built here)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    model = Path(args.model) if args.model else work / "tiny-qwen3"
    if not (model / "config.json").is_file():
        run(["make-tiny-model", str(model)])
    data = work / "data"
    if not (data / "manifest.json").is_file():
        run(["synth", "--out", str(work / "raw"), "--users", "3000", "--movies", "2000", "--ratings", "300000",
             "--seed", "0", "--force"])
        run(["prepare", "--config", "configs/data/demo.yaml", "--input", str(work / "raw"), "--out", str(data),
             "--override", "n_train=64", "--override", f"n_eval={args.examples}", "--force"])
    run_dir = work / "run"
    run(["train", "--config", "configs/demo_tiny.yaml", "--device", args.device, "--overwrite",
         "--override", f"model_name_or_path={model}", "--override", f"dataset_dir={data}",
         "--override", f"output_dir={run_dir}", "--override", "max_steps=2", "--override", "eval_strategy=no",
         "--override", "save_steps=2"])

    import yaml

    from movierec.evaluation.metrics import auc
    from movierec.evaluation.scoring import (
        YesNoScorer,
        eval_records,
        load_model_for_scoring,
    )
    from movierec.folders.datadir import DatasetDir
    from movierec.train.config import arg

    lf_args = yaml.safe_load((run_dir / "llamafactory_train.yaml").read_text())
    adapter = run_dir / "checkpoint-2"
    lf_seconds = llamafactory_eval(lf_args, adapter, work / "lf-eval", args.device, fp32=True)
    lf_bf16_seconds = None
    if args.device == "cpu":
        lf_bf16_seconds = llamafactory_eval(lf_args, adapter, work / "lf-eval-bf16", args.device, fp32=False)

    records = eval_records(lf_args, DatasetDir(lf_args["dataset_dir"]))
    model_, tokenizer, template = load_model_for_scoring(lf_args, adapter, args.device)
    scorer = YesNoScorer(model_, tokenizer, template, int(arg(lf_args, "cutoff_len")), args.batch_size)
    start = time.perf_counter()
    prompts = scorer.encode_many(records)  # LLaMA-Factory tokenizes before its timer starts too
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    probs = scorer.score_ids(prompts)
    ours = time.perf_counter() - start
    result = {
        "examples": len(records), "device": args.device, "model": str(model),
        "llamafactory_eval_batch1_seconds": round(lf_seconds, 2),
        "llamafactory_examples_per_second": round(len(records) / lf_seconds, 1),
        "llamafactory_eval_batch1_bf16_cpu_kernel_seconds": lf_bf16_seconds and round(lf_bf16_seconds, 2),
        "movierec_scoring_seconds": round(ours, 2), "movierec_batch_size": args.batch_size,
        "movierec_examples_per_second": round(len(records) / ours, 1),
        "movierec_tokenization_seconds": round(encode_s, 2),
        "speedup": round(lf_seconds / ours, 1),
        "speedup_including_tokenization": round(lf_seconds / (ours + encode_s), 1),
        "speedup_vs_bf16_cpu_kernel": lf_bf16_seconds and round(lf_bf16_seconds / ours, 1),
        "auc": auc([r["label"] for r in records], probs),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
