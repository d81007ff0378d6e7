"""`movierec evaluate`: P(Yes) for every eval example, then AUC, UAUC, log loss, ... per checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.rundir import RunDir


def score_checkpoint(lf_args: dict[str, Any], ckpt: Path, records: list[dict], device: str,
                     batch_size: int) -> tuple[np.ndarray, float]:
    """P(Yes) per record and the seconds the scoring took (model loading excluded)."""
    from movierec.scoring import YesNoScorer, load_model_for_scoring

    model, tokenizer, template = load_model_for_scoring(lf_args, ckpt, device)
    scorer = YesNoScorer(model, tokenizer, template, int(lf_args.get("cutoff_len", 2048)), batch_size)
    start = time.perf_counter()
    probs = scorer.score(records, progress=True)
    return probs, time.perf_counter() - start


def main(args) -> int:
    from movierec.device import resolve_device
    from movierec.metrics import compute_metrics
    from movierec.scoring import eval_records, subsample

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be >= 1")
    run = RunDir(args.run).require()
    lf_args, mr_args = {**run.lf_args(), "model_name_or_path": run.model_path()}, run.mr_args()
    ckpts = run.select(args.checkpoint)
    data = run.dataset(args.data)
    device = resolve_device(args.device)
    records = subsample(eval_records(lf_args, data), args.max_examples, seed=int(lf_args.get("seed", 42)))
    batch_size = args.batch_size or int(mr_args.get("eval_auc_batch_size", 32))
    labels = np.array([int(r["label"]) for r in records])
    users = np.array([r["user_id"] for r in records])
    warm = np.array([bool(r.get("warm", True)) for r in records])

    per_checkpoint: dict[str, Any] = {}
    results = {}
    for ckpt in ckpts:
        probs, seconds = score_checkpoint(lf_args, ckpt, records, device, batch_size)
        metrics = compute_metrics(labels, probs, users, warm)
        results[ckpt.name] = (probs, metrics, seconds)
        per_checkpoint[ckpt.name] = {**metrics["overall"], "seconds": round(seconds, 3)}
        print(f"{ckpt.name}: AUC {_fmt(metrics['overall']['auc'])}  UAUC {_fmt(metrics['overall']['uauc'])}  "
              f"log loss {_fmt(metrics['overall']['log_loss'])}  ({len(records)} examples in {seconds:.1f}s, "
              f"{len(records) / seconds:.0f}/s)")

    oracle = _oracle(data, len(records))
    if oracle:
        o = oracle["metrics"]["overall"]
        print(f"oracle (true probabilities, the ceiling): AUC {_fmt(o['auc'])}  UAUC {_fmt(o['uauc'])}  "
              f"log loss {_fmt(o['log_loss'])}")
    best = run.best_checkpoint()
    main_name = best.name if best is not None and best.name in results else ckpts[-1].name
    probs, metrics, seconds = results[main_name]
    lines = [json.dumps({"user_id": r["user_id"], "movie_id": r["movie_id"], "label": int(r["label"]),
                         "p_yes": float(p), "warm": bool(r.get("warm", True))}) for r, p in zip(records, probs)]
    run.write_text(run.PREDICTIONS, "\n".join(lines) + "\n")
    run.write_json(run.METRICS, {
        "checkpoint": main_name, "n": len(records), "device": device, "batch_size": batch_size,
        "seconds": round(seconds, 3), "examples_per_second": round(len(records) / seconds, 2),
        "metrics": metrics, "per_checkpoint": per_checkpoint, "oracle": oracle,
    })
    print(f"wrote {run.file(run.METRICS)} and {run.file(run.PREDICTIONS)} ({main_name})")
    return 0


def _oracle(data: DatasetDir, n_scored: int) -> dict[str, Any] | None:
    """The prepared data's oracle metrics (synthetic data), when the whole eval set was scored."""
    oracle = data.manifest().get("oracle")
    if not oracle or oracle["metrics"]["overall"].get("n") != n_scored:
        return None
    return oracle


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
