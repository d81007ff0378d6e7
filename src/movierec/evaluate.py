"""`movierec evaluate`: P(Yes) for every eval example, then AUC, UAUC, log loss, ... per checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from movierec.errors import UserError
from movierec.io import atomic_write_json, atomic_write_text
from movierec.runinfo import best_checkpoint, complete_checkpoints


def load_run(run_dir: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(run folder, LLaMA-Factory args, movierec args) of a training run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run folder not found: {run}")
    lf_yaml = run / "llamafactory_train.yaml"
    if not lf_yaml.is_file():
        raise UserError(f"{run} is not a movierec run (no llamafactory_train.yaml)")
    lf_args = yaml.safe_load(lf_yaml.read_text(encoding="utf-8"))
    resolved = run / "resolved_config.yaml"
    mr_args = yaml.safe_load(resolved.read_text(encoding="utf-8")).get("movierec", {}) if resolved.is_file() else {}
    return run, lf_args, mr_args


def select_checkpoints(run: Path, which: str) -> list[Path]:
    """latest | best | all | checkpoint-N -> checkpoint folders (complete ones only)."""
    ckpts = complete_checkpoints(run)
    if not ckpts:
        raise UserError(f"no complete checkpoint in {run}")
    if which == "latest":
        return [ckpts[-1]]
    if which == "all":
        return ckpts
    if which == "best":
        best = best_checkpoint(run)
        if best is None:
            raise UserError(f"{run}: no best checkpoint recorded (set metric_for_best_model); use latest")
        return [best]
    named = [c for c in ckpts if c.name == which or str(c) == which]
    if not named:
        raise UserError(f"--checkpoint {which}: not found among {', '.join(c.name for c in ckpts)}")
    return named


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
    from movierec.metrics import compute_metrics
    from movierec.scoring import eval_file, read_jsonl, subsample
    from movierec.train import resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be >= 1")
    run, lf_args, mr_args = load_run(args.run)
    ckpts = select_checkpoints(run, args.checkpoint)
    device = resolve_device(args.device)
    records = subsample(read_jsonl(eval_file(lf_args)), args.max_examples, seed=int(lf_args.get("seed", 42)))
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

    oracle = _oracle(eval_file(lf_args).parent, len(records))
    if oracle:
        o = oracle["metrics"]["overall"]
        print(f"oracle (true probabilities, the ceiling): AUC {_fmt(o['auc'])}  UAUC {_fmt(o['uauc'])}  "
              f"log loss {_fmt(o['log_loss'])}")
    best = best_checkpoint(run)
    main_name = best.name if best is not None and best.name in results else ckpts[-1].name
    probs, metrics, seconds = results[main_name]
    lines = [json.dumps({"user_id": r["user_id"], "movie_id": r["movie_id"], "label": int(r["label"]),
                         "p_yes": float(p), "warm": bool(r.get("warm", True))}) for r, p in zip(records, probs)]
    atomic_write_text(run / "predictions.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(run / "metrics.json", {
        "checkpoint": main_name, "n": len(records), "device": device, "batch_size": batch_size,
        "seconds": round(seconds, 3), "examples_per_second": round(len(records) / seconds, 2),
        "metrics": metrics, "per_checkpoint": per_checkpoint, "oracle": oracle,
    })
    print(f"wrote {run / 'metrics.json'} and {run / 'predictions.jsonl'} ({main_name})")
    return 0


def _oracle(data_dir: Path, n_scored: int) -> dict[str, Any] | None:
    """The prepared data's oracle metrics (synthetic data), when the whole eval set was scored."""
    try:
        manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    oracle = manifest.get("oracle")
    if not oracle or oracle["metrics"]["overall"].get("n") != n_scored:
        return None
    return oracle


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
