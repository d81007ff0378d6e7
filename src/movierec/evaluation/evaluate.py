"""`movierec evaluate`: P(Yes) for every eval example and every ranking candidate, per checkpoint.

Writes metrics.json (AUC, UAUC, log loss, ... with user-level bootstrap intervals; HR@k, NDCG@k, MRR
over the prepared ranking lists), predictions.jsonl and ranking_predictions.jsonl (per example /
candidate, for paired comparisons). `--checkpoint base` scores the base model without the adapter
(zero-shot), kept as `zero_shot` beside the fine-tuned results: evaluating one does not erase the other.

When `movierec baselines` has run on the data (or --baselines names its file), metrics.json also holds
`paired` (the fine-tuned LLM minus the best baseline, paired bootstrap) and `blend` (llm+mf, its weight
picked on the validation examples, with its metrics and its own paired comparison): see compare.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.data.fields import (
    LABEL,
    LIST_ID,
    MOVIE_ID,
    P_YES,
    RELEVANT,
    USER_ID,
    WARM,
)
from movierec.errors import UserError
from movierec.evaluation import compare
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir
from movierec.train.config import arg

BASE = "base"  # --checkpoint name of the base model without adapter (zero-shot)


def ranking_lists(data: DatasetDir, ks: tuple[int, ...]) -> list[dict[str, Any]]:
    """The prepared candidate lists ([] when the data has none), checked to hold at least max(ks) each."""
    path = data.file(data.RANKING)
    if not path.is_file() or data.RANKING not in (data.manifest().get("files") or {}):
        return []
    data.verify([data.RANKING])
    candidates = data.read_jsonl(path)
    sizes = np.unique([c[LIST_ID] for c in candidates], return_counts=True)[1]
    if len(sizes) and max(ks) > sizes.min():
        raise UserError(f"--ks: k={max(ks)} exceeds the shortest ranking list ({sizes.min()} candidates in "
                        f"{path}): lower it")
    return candidates


def select(run: RunDir, which: str) -> list[tuple[str, Path | None]]:
    """`latest`, `best`, `all`, `checkpoint-N`, `base`, or several joined by commas -> (name, adapter)."""
    chosen: dict[str, Path | None] = {}
    parts = [w.strip() for w in which.split(",")]
    if not all(parts):  # `,` or `best,` is a slip, not a request for the latest checkpoint
        raise UserError(f"--checkpoint {which!r}: an empty name; expected latest, best, all, base or checkpoint-N, "
                        "several joined by commas")
    for part in parts:
        if part == BASE:
            chosen[BASE] = None
        else:
            chosen.update({c.name: c for c in run.select(part, others=(BASE,))})
    return list(chosen.items())


def score(lf_args: dict[str, Any], adapter: Path | None, records: list[dict], ranking: list[dict], device: str,
          batch_size: int, valid: list[dict] = ()) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """P(Yes) per eval record and per ranking candidate, the seconds each took, and P(Yes) per `valid` record."""
    from movierec.evaluation.scoring import YesNoScorer, load_model_for_scoring

    model, tokenizer, template = load_model_for_scoring(lf_args, adapter, device)
    scorer = YesNoScorer(model, tokenizer, template, int(arg(lf_args, "cutoff_len")), batch_size)
    start = time.perf_counter()
    probs = scorer.score(records, progress=True)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    # a list's candidates share the user's history: its prefix is computed once per list
    ranked = scorer.score(ranking, progress=True, group_by=LIST_ID) if ranking else np.empty(0)
    ranking_seconds = time.perf_counter() - start
    return probs, ranked, seconds, ranking_seconds, scorer.score(list(valid), progress=True) if valid else np.empty(0)


def valid_records(data: DatasetDir) -> list[dict[str, Any]]:
    """The validation examples prepare held out (data/split.py), [] for data prepared without them."""
    if data.VALID not in (data.manifest().get("files") or {}):
        return []
    data.verify([data.VALID])
    return data.read_jsonl(data.VALID)


def main(args) -> int:
    from movierec.device import resolve_device
    from movierec.evaluation.scoring import eval_records, subsample

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.max_examples is not None and args.max_examples < 1:
        raise UserError("--max-examples must be >= 1")
    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0 (0: no intervals)")
    ks = args.ks
    if args.baselines and not Path(args.baselines).is_file():
        raise UserError(f"--baselines {args.baselines}: not found (a baselines.json `movierec baselines` wrote)")
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
    seed = int(arg(lf_args, "seed"))
    every = eval_records(lf_args, data)
    records = subsample(every, args.max_examples, seed=seed)
    kept = _results_on_more(run, len(records)) if len(records) < len(every) else None
    ranking = [] if args.no_ranking else ranking_lists(data, ks)
    main_name = _main_name(run, [name for name, _ in chosen])
    baselines, note = (None, None) if main_name is None else compare.load_baselines(
        Path(args.baselines) if args.baselines else data.file(data.BASELINES), data.manifest_sha256())
    if args.baselines and baselines is None and note:  # named on purpose: refused before scoring, nothing rewritten
        raise UserError(f"--baselines {args.baselines}: {note}")
    valid = subsample(valid_records(data), args.max_examples, seed=seed) if baselines is not None else []
    device = resolve_device(args.device)
    batch_size = args.batch_size or mr_args.eval_auc_batch_size
    results: dict[str, dict[str, Any]] = {}
    for name, adapter in chosen:
        with RunDir.reading(adapter):
            scored = score(lf_args, adapter, records, ranking, device, batch_size, valid if name == main_name else ())
        results[name] = _metrics(name, records, ranking, scored, ks, args.bootstrap)
    if baselines is not None:
        block = results[main_name]
        block["paired"], block["blend"], note = compare.compare(records, block["probs"], valid, block["valid_probs"],
                                                                baselines, args.bootstrap)
    if note:
        print(f"note: {note}")
    oracle = _oracle(data, len(records))
    if oracle:
        o = oracle["metrics"]["overall"]
        print(f"oracle (true probabilities, the ceiling): AUC {_fmt(o['auc'])}  UAUC {_fmt(o['uauc'])}  "
              f"log loss {_fmt(o['log_loss'])}")
    if kept:  # a quick look on a subsample never replaces results on more examples
        print(f"not saved: {run.file(RunDir.METRICS)} holds results on {kept:,} examples; rerun without "
              "--max-examples to replace them")
        return 0
    _write(run, records, ranking, results, main_name, oracle, device, batch_size, ks, args.bootstrap, data)
    return 0


def _main_name(run: RunDir, names: list[str]) -> str | None:
    """The fine-tuned checkpoint whose results become metrics.json's main entry: the best, else the last chosen."""
    tuned = [name for name in names if name != BASE]
    best = run.best_checkpoint()
    return (best.name if best is not None and best.name in tuned else tuned[-1]) if tuned else None


def _metrics(name: str, records: list[dict], ranking: list[dict], scored: tuple, ks: tuple[int, ...],
             n_boot: int) -> dict[str, Any]:
    """One checkpoint's metric blocks and timings (printed in one line), its P(Yes) kept for the files."""
    from movierec.evaluation.metrics import compute_metrics, ranking_metrics

    probs, ranked, seconds, ranking_seconds, valid_probs = scored
    labels = np.array([int(r[LABEL]) for r in records])
    users = np.array([r[USER_ID] for r in records])
    warm = np.array([bool(r.get(WARM, True)) for r in records])
    start = time.perf_counter()
    block = {"metrics": compute_metrics(labels, probs, users, warm, n_boot=n_boot),
             "seconds": round(seconds, 3), "examples_per_second": round(len(records) / seconds, 2),
             "ranking_seconds": round(ranking_seconds, 3), "probs": probs, "ranked": ranked, "valid_probs": valid_probs}
    if ranking:
        block["ranking"] = ranking_metrics([c[LIST_ID] for c in ranking], ranked,
                                           [c[RELEVANT] for c in ranking], ks, n_boot=n_boot)
    block["metrics_seconds"] = round(time.perf_counter() - start, 3)
    o, rk = block["metrics"]["overall"], block.get("ranking") or {}
    print(f"{name}: AUC {_fmt(o['auc'])} {_ci(o.get('auc_ci95'))} UAUC {_fmt(o['uauc'])} log loss "
          f"{_fmt(o['log_loss'])}" + (f"  HR@10 {_fmt(rk.get('hr@10'))} NDCG@10 {_fmt(rk.get('ndcg@10'))}"
                                      if rk else "")
          + f"  ({len(records)} examples in {seconds:.1f}s, {len(records) / seconds:.0f}/s"
          + (f"; {len(ranking)} ranking candidates in {ranking_seconds:.1f}s" if ranking else "")
          + f"; metrics{' and bootstrap' if n_boot else ''} {block['metrics_seconds']:.1f}s)")
    return block


def _print_comparisons(block: dict[str, Any]) -> None:
    """One line each for the paired comparison and the blend."""
    b = block.get("blend")
    for label, pair in (("LLM", block.get("paired")), (b and b["name"], b and b["paired"])):
        if pair:
            d = pair["comparison"]["auc"]
            print(f"{label} minus {pair['baseline']} (best baseline): AUC {_signed(d['diff'])} "
                  f"{_ci(d['diff_ci95'], signed=True)} on {pair['examples']} examples")
    if b:
        o = b["metrics"]["overall"]
        print(f"{b['name']} (w = {b['weight']:.2f} on the LLM, picked on {b['validation']['n']} validation "
              f"examples): AUC {_fmt(o['auc'])} {_ci(o.get('auc_ci95'))} UAUC {_fmt(o['uauc'])}")
        diffs = [f"{part}: AUC {_signed(d['diff'])} {_ci(d['diff_ci95'], signed=True)}"
                 for part, pair in (b.get("vs_parts") or {}).items() for d in [pair["comparison"]["auc"]]]
        if diffs:
            print(f"{b['name']} minus its parts: " + "; ".join(diffs))


def _write(run: RunDir, records: list[dict], ranking: list[dict], results: dict[str, dict], main_name: str | None,
           oracle: dict | None, device: str, batch_size: int, ks: tuple[int, ...], n_boot: int, data) -> None:
    """metrics.json (merged with what an earlier evaluate of the same examples wrote) and predictions."""
    data_sha = data.manifest_sha256()
    previous = _previous(run, len(records), data_sha)
    out = {**previous, "n": len(records), "data": str(data.path), "data_manifest_sha256": data_sha,
           "device": device, "batch_size": batch_size, "ks": list(ks),
           "bootstrap_resamples": n_boot, "oracle": oracle,
           "per_checkpoint": {**previous.get("per_checkpoint", {}),
                              **{n: {**b["metrics"]["overall"], "seconds": b["seconds"]} for n, b in results.items()}}}
    files = {None: (RunDir.PREDICTIONS, RunDir.RANKING_PREDICTIONS),
             "zero_shot": (RunDir.PREDICTIONS_BASE, RunDir.RANKING_PREDICTIONS_BASE)}
    for name, key in ((main_name, None), (BASE if BASE in results else None, "zero_shot")):
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
        else:  # the comparisons belong to this checkpoint: older ones go
            out.update(entry, paired=block.get("paired"), blend=block.get("blend"))
            _print_comparisons(block)
        run.write_text(files[key][0], "".join(
            json.dumps({USER_ID: r[USER_ID], MOVIE_ID: r[MOVIE_ID], LABEL: int(r[LABEL]),
                        P_YES: float(p), WARM: bool(r.get(WARM, True))}) + "\n"
            for r, p in zip(records, block["probs"])))
        if ranking:
            run.write_text(files[key][1], "".join(
                json.dumps({LIST_ID: c[LIST_ID], MOVIE_ID: c[MOVIE_ID], RELEVANT: c[RELEVANT],
                            "kind": c["kind"], "score": float(s)}) + "\n" for c, s in zip(ranking, block["ranked"])))
    run.write_json(RunDir.METRICS, out)
    print(f"wrote {run.file(RunDir.METRICS)}" + (f" ({main_name})" if main_name else "")
          + (" and the zero-shot results" if BASE in results else ""))


def _previous(run: RunDir, n: int, data_sha: str) -> dict[str, Any]:
    """An earlier metrics.json of the same eval examples of the same data (kept and updated), else nothing."""
    try:
        previous = run.read_json(RunDir.METRICS, default={})
    except UserError:  # a damaged file is replaced by this evaluation's results
        return {}
    if not isinstance(previous, dict) or previous.get("n") != n:
        return {}
    return previous if previous.get("data_manifest_sha256") in (None, data_sha) else {}


def _results_on_more(run: RunDir, n: int) -> int | None:
    """The number of examples an earlier metrics.json scored, when more than `n`."""
    try:
        earlier = run.read_json(RunDir.METRICS, default={})
    except UserError:
        return None
    earlier = earlier.get("n") if isinstance(earlier, dict) else None
    return earlier if isinstance(earlier, int) and earlier > n else None


def _oracle(data: DatasetDir, n_scored: int) -> dict[str, Any] | None:
    """The prepared data's oracle metrics (synthetic data), when the whole eval set was scored."""
    oracle = data.manifest().get("oracle")
    if not oracle or oracle["metrics"]["overall"].get("n") != n_scored:
        return None
    return oracle


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _ci(ci, signed: bool = False) -> str:
    if not ci or None in ci:
        return ""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"
