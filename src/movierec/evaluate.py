"""`movierec evaluate`: P(Yes) for every eval example and every ranking candidate, per checkpoint.

Writes metrics.json (AUC, UAUC, log loss, ... with user-level bootstrap intervals; HR@k, NDCG@k, MRR
over the prepared ranking lists), predictions.jsonl and ranking_predictions.jsonl (per example /
candidate, for paired comparisons). `--checkpoint base` scores the base model without the adapter
(zero-shot), kept as `zero_shot` beside the fine-tuned results: evaluating one does not erase the other.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.rundir import RunDir

BASE = "base"  # --checkpoint name of the base model without adapter (zero-shot)


def ranking_lists(data: DatasetDir, ks: tuple[int, ...]) -> list[dict[str, Any]]:
    """The prepared candidate lists ([] when the data has none), checked to hold at least max(ks) each."""
    path = data.file(data.RANKING)
    if not path.is_file() or data.RANKING not in (data.manifest().get("files") or {}):
        return []
    data.verify([data.RANKING])
    candidates = data.read_jsonl(path)
    sizes = np.unique([c["list_id"] for c in candidates], return_counts=True)[1]
    if len(sizes) and max(ks) > sizes.min():
        raise UserError(f"--ks: k={max(ks)} exceeds the shortest ranking list ({sizes.min()} candidates in "
                        f"{path}): lower it")
    return candidates


def select(run: RunDir, which: str) -> list[tuple[str, Path | None]]:
    """`latest`, `best`, `all`, `checkpoint-N`, `base`, or several joined by commas -> (name, adapter)."""
    chosen: dict[str, Path | None] = {}
    for part in [w.strip() for w in which.split(",") if w.strip()] or ["latest"]:
        if part == BASE:
            chosen[BASE] = None
        else:
            chosen.update({c.name: c for c in run.select(part, others=(BASE,))})
    return list(chosen.items())


def score(lf_args: dict[str, Any], adapter: Path | None, records: list[dict], ranking: list[dict], device: str,
          batch_size: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """P(Yes) per eval record and per ranking candidate, and the seconds each took."""
    from movierec.scoring import YesNoScorer, load_model_for_scoring

    model, tokenizer, template = load_model_for_scoring(lf_args, adapter, device)
    scorer = YesNoScorer(model, tokenizer, template, int(lf_args.get("cutoff_len", 2048)), batch_size)
    start = time.perf_counter()
    probs = scorer.score(records, progress=True)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    ranked = scorer.score(ranking, progress=True) if ranking else np.empty(0)
    return probs, ranked, seconds, time.perf_counter() - start


def main(args) -> int:
    from movierec.device import resolve_device
    from movierec.metrics import compute_metrics, ranking_metrics
    from movierec.metrics.ranking import parse_ks
    from movierec.scoring import eval_records, subsample

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be >= 1")
    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0 (0: no intervals)")
    ks = parse_ks(args.ks)
    run = RunDir(args.run).require()
    lf_args, mr_args = {**run.lf_args(), "model_name_or_path": run.model_path()}, run.mr_args()
    chosen = select(run, args.checkpoint)
    data = run.dataset(args.data)
    changed = run.data_changed(data)
    if changed and args.data is None:
        raise UserError(f"{changed}: evaluate with the data it trained on (--data DIR) or train again")
    if changed:
        print(f"warning: {changed}", file=sys.stderr)
    data.check_splits(lf_args.get("dataset"), lf_args.get("eval_dataset"))
    every = eval_records(lf_args, data)
    records = subsample(every, args.max_examples, seed=int(lf_args.get("seed", 42)))
    kept = _results_on_more(run, len(records)) if len(records) < len(every) else None
    ranking = [] if args.no_ranking else ranking_lists(data, ks)
    device = resolve_device(args.device)
    batch_size = args.batch_size or int(mr_args.get("eval_auc_batch_size", 32))
    labels = np.array([int(r["label"]) for r in records])
    users = np.array([r["user_id"] for r in records])
    warm = np.array([bool(r.get("warm", True)) for r in records])

    results: dict[str, dict[str, Any]] = {}
    for name, adapter in chosen:
        with RunDir.reading(adapter):
            probs, ranked, seconds, ranking_seconds = score(lf_args, adapter, records, ranking, device, batch_size)
        start = time.perf_counter()
        block = {"metrics": compute_metrics(labels, probs, users, warm, n_boot=args.bootstrap),
                 "seconds": round(seconds, 3), "examples_per_second": round(len(records) / seconds, 2),
                 "ranking_seconds": round(ranking_seconds, 3), "probs": probs, "ranked": ranked}
        if ranking:
            block["ranking"] = ranking_metrics([c["list_id"] for c in ranking], ranked,
                                               [c["relevant"] for c in ranking], ks, n_boot=args.bootstrap)
        block["metrics_seconds"] = round(time.perf_counter() - start, 3)
        results[name] = block
        o, rk = block["metrics"]["overall"], block.get("ranking") or {}
        print(f"{name}: AUC {_fmt(o['auc'])} {_ci(o.get('auc_ci95'))} UAUC {_fmt(o['uauc'])} log loss "
              f"{_fmt(o['log_loss'])}" + (f"  HR@10 {_fmt(rk.get('hr@10'))} NDCG@10 {_fmt(rk.get('ndcg@10'))}"
                                          if rk else "")
              + f"  ({len(records)} examples in {seconds:.1f}s, {len(records) / seconds:.0f}/s"
              + (f"; {len(ranking)} ranking candidates in {ranking_seconds:.1f}s" if ranking else "")
              + f"; metrics{' and bootstrap' if args.bootstrap else ''} {block['metrics_seconds']:.1f}s)")
    oracle = _oracle(data, len(records))
    if oracle:
        o = oracle["metrics"]["overall"]
        print(f"oracle (true probabilities, the ceiling): AUC {_fmt(o['auc'])}  UAUC {_fmt(o['uauc'])}  "
              f"log loss {_fmt(o['log_loss'])}")
    if kept:  # a quick look on a subsample never replaces results on more examples
        print(f"not saved: {run.file(RunDir.METRICS)} holds results on {kept:,} examples; rerun without "
              "--max-examples to replace them")
        return 0
    _write(run, records, ranking, results, oracle, device, batch_size, ks, args.bootstrap, data)
    return 0


def _write(run: RunDir, records: list[dict], ranking: list[dict], results: dict[str, dict], oracle: dict | None,
           device: str, batch_size: int, ks: tuple[int, ...], n_boot: int, data) -> None:
    """metrics.json (merged with what an earlier evaluate of the same examples wrote) and predictions."""
    data_sha = data.manifest_sha256()
    previous = _previous(run, len(records), data_sha)
    tuned = [name for name in results if name != BASE]
    best = run.best_checkpoint()
    main_name = (best.name if best is not None and best.name in tuned else tuned[-1]) if tuned else None
    out = {**previous, "n": len(records), "data": str(data.path), "data_manifest_sha256": data_sha,
           "device": device, "batch_size": batch_size, "ks": list(ks),
           "bootstrap_resamples": n_boot, "oracle": oracle,
           "per_checkpoint": {**previous.get("per_checkpoint", {}),
                              **{n: {**b["metrics"]["overall"], "seconds": b["seconds"]} for n, b in results.items()}}}
    for name, prefix, key in ((main_name, "", None), (BASE if BASE in results else None, "_base", "zero_shot")):
        if name is None:
            continue
        block = results[name]
        before = previous.get(key) if key else previous
        kept = (before or {}).get("ranking") if (before or {}).get("checkpoint") == name else None  # --no-ranking
        entry = {"checkpoint": name, "metrics": block["metrics"], "ranking": block.get("ranking") or kept,
                 "seconds": block["seconds"], "examples_per_second": block["examples_per_second"],
                 "ranking_seconds": block["ranking_seconds"], "metrics_seconds": block["metrics_seconds"]}
        if key:
            out[key] = entry
        else:
            out.update(entry)
        run.write_text(f"predictions{prefix}.jsonl", "".join(
            json.dumps({"user_id": r["user_id"], "movie_id": r["movie_id"], "label": int(r["label"]),
                        "p_yes": float(p), "warm": bool(r.get("warm", True))}) + "\n"
            for r, p in zip(records, block["probs"])))
        if ranking:
            run.write_text(f"ranking_predictions{prefix}.jsonl", "".join(
                json.dumps({"list_id": c["list_id"], "movie_id": c["movie_id"], "relevant": c["relevant"],
                            "kind": c["kind"], "score": float(s)}) + "\n" for c, s in zip(ranking, block["ranked"])))
    run.write_json(RunDir.METRICS, out)
    print(f"wrote {run.file(RunDir.METRICS)}" + (f" ({main_name})" if main_name else "")
          + (" and the zero-shot results" if BASE in results else ""))


def _previous(run: RunDir, n: int, data_sha: str) -> dict[str, Any]:
    """An earlier metrics.json of the same eval examples of the same data (kept and updated), else nothing."""
    try:
        previous = json.loads(run.file(RunDir.METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(previous, dict) or previous.get("n") != n:
        return {}
    return previous if previous.get("data_manifest_sha256") in (None, data_sha) else {}


def _results_on_more(run: RunDir, n: int) -> int | None:
    """The number of examples an earlier metrics.json scored, when more than `n`."""
    try:
        earlier = json.loads(run.file(RunDir.METRICS).read_text(encoding="utf-8")).get("n")
    except (OSError, ValueError, AttributeError):
        return None
    return earlier if isinstance(earlier, int) and earlier > n else None


def _oracle(data: DatasetDir, n_scored: int) -> dict[str, Any] | None:
    """The prepared data's oracle metrics (synthetic data), when the whole eval set was scored."""
    oracle = data.manifest().get("oracle")
    if not oracle or oracle["metrics"]["overall"].get("n") != n_scored:
        return None
    return oracle


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
