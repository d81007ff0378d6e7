"""Classical recommenders scored on the same eval examples as the LLM: `movierec baselines --data DIR`.

Each baseline gets the information the LLM gets. The LLM is trained on ratings before the manifest's
cutoff_timestamp and, at eval time, reads the user's ratings before the target's time (its prompt
history, which skips the other eval targets). So here:

    model fits and movie-side statistics   ratings before the cutoff only
    user-side features (user mean, user x  the user's ratings strictly before the target's timestamp,
    genre, the mf user vector)             other eval targets excluded: the set a prompt draws from,
                                           all of it rather than the prompt's latest 10 (a mean or a
                                           user vector over the whole past is steadier; it is no more
                                           than the LLM could be shown)

A cold user (no pre-cutoff rating) is thus scored from their post-cutoff past, as the LLM is.

To fit anything (the GBDT, and the logistic maps that turn raw scores into probabilities) without
leakage, the same setting is built once more inside the pre-cutoff ratings, with a split time in place
of the cutoff:

    split = the 90% quantile of pre-cutoff timestamps
    fit rows = ratings in [split, cutoff) with at least min_history earlier ratings, as every train
               and eval target has (subsampled)                        -> labels the models learn
    their movie statistics and the mf fit: ratings before the split
    their user features: the user's pre-cutoff ratings strictly before the row's time (all of them, as
               a train prompt's history: only eval prompts skip other targets)

So a fit row's features never include its own rating, and fit rows look like eval rows. Baselines:

    constant     pre-cutoff like rate for everyone (AUC 0.5 by construction)
    popularity   movie rating count
    movie_mean   movie mean rating shrunk to the global mean (unseen movie -> global mean)
    user_mean    user mean rating before the target, shrunk to the global mean (no history -> global mean)
    mf           matrix factorisation (implicit ALS), user vector folded in from the history (mf.py)
    gbdt         HistGradientBoostingClassifier on user, movie and user-genre features (features.py)

popularity / movie_mean / user_mean / mf are raw scores; a one-feature logistic regression fitted on
the fit rows maps each to P(like) (monotone, so AUC is the raw score's) for log loss and ECE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.baselines import mf
from movierec.baselines.features import FEATURES, SHRINK, Histories, features, genre_matrix, histories
from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.io import atomic_write_json
from movierec.metrics import compute_metrics, ranking_metrics

FIT_SHARE = 0.1  # last share of pre-cutoff ratings used as fit rows
MAX_FIT_ROWS = 500_000  # GBDT fit ~20 s on 2 cores; 1M rows gained +0.002 AUC on 25M synthetic ratings
MF_FIT_ROWS = 5_000  # fit rows that calibrate mf (one slope and intercept; each needs a fold-in)
NAMES = ("constant", "popularity", "movie_mean", "user_mean", "mf", "gbdt")  # simplest first


def load_inputs(data_dir: str | Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """manifest, ratings, movies, eval examples and ranking candidates (empty when prepare wrote no
    lists) of a prepared data folder, each checked against the manifest's sha256 first."""
    data = DatasetDir(data_dir).require()
    manifest = data.manifest()
    if "cutoff_timestamp" not in manifest:
        raise UserError(f"{data.file(data.MANIFEST)}: no cutoff_timestamp (prepared by an older movierec?)")
    eval_name, files = data.eval_file.name, manifest.get("files") or {}
    missing = [n for n in (data.RATINGS, data.MOVIES, eval_name) if n not in files]
    if missing:
        raise UserError(f"{data.file(data.MANIFEST)}: lists no {', '.join(missing)} (prepared by an older movierec, "
                        "or not by `movierec prepare`); rerun `movierec prepare`")
    ranked = data.RANKING in files
    data.verify([data.RATINGS, data.MOVIES, eval_name] + [data.RANKING] * ranked)
    ratings = pd.read_parquet(data.file(data.RATINGS), columns=["userId", "movieId", "rating", "timestamp"])
    movies = pd.read_parquet(data.file(data.MOVIES), columns=["movieId", "genres"])
    examples = _frame(data, eval_name, ["user_id", "movie_id", "timestamp", "label", "warm"])
    ranking = (_frame(data, data.RANKING, ["list_id", "user_id", "movie_id", "timestamp", "relevant"]) if ranked
               else pd.DataFrame(columns=["list_id", "user_id", "movie_id", "timestamp", "relevant"]))
    return manifest, ratings, movies, examples, ranking


def _frame(data: DatasetDir, name: str, need: list[str]) -> pd.DataFrame:
    """The `need` fields of a prepared JSONL file (one line UserError when a field is missing)."""
    records = data.read_jsonl(name)
    missing = sorted(set(need) - set(records[0])) if records else need
    if missing:
        raise UserError(f"{data.file(name)}: lacks fields {', '.join(missing)}; rerun `movierec prepare`")
    return pd.DataFrame([[r[k] for k in need] for r in records], columns=need)


def like_threshold(manifest: dict) -> float:
    """The rating at or above which a user "likes" a movie, from the data config prepare recorded."""
    value = (manifest.get("config") or {}).get("like_threshold")
    if value is None:
        raise UserError("manifest.json: no config.like_threshold (prepared by an older movierec?)")
    return float(value)


def score_baselines(ratings: pd.DataFrame, movies: pd.DataFrame, examples: pd.DataFrame, cutoff: int,
                    threshold: float, min_history: int = 0, max_fit_rows: int = MAX_FIT_ROWS,
                    seed: int = 0, targets: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """P(like) per row of `examples` (user_id, movie_id, timestamp) for each baseline (what each may see:
    the module docstring). `targets` are the eval examples, left out of every history (default: `examples`;
    the ranking candidates are scored with them, so their histories skip the eval targets too).

    Returns:
        ({name: probabilities aligned with `examples`}, {facts about the fit for the output file}).
    """
    HistGradientBoostingClassifier, LogisticRegression = _sklearn()
    mf.als_class()
    from threadpoolctl import threadpool_limits

    pre = ratings[ratings.timestamp < cutoff]
    if pre.empty:
        raise UserError(f"no ratings before cutoff_timestamp {cutoff}: nothing to fit baselines on")
    split = int(pre.timestamp.quantile(1 - FIT_SHARE))
    before_split = pre[pre.timestamp < split]
    if before_split.empty:
        raise UserError("pre-cutoff ratings span a single moment: no history to compute baseline features from")
    fit, h_fit = _fit_rows(pre, split, min_history, max_fit_rows, seed)
    y_fit = (fit.rating.to_numpy() >= threshold).astype(int)
    if len(np.unique(y_fit)) < 2:
        raise UserError(f"the {len(fit):,} ratings in [{split}, cutoff) with at least {min_history} earlier ratings "
                        "have a single like label (or none): cannot fit baselines")

    n_movies = int(max(ratings.movieId.max(), examples.movie_id.max(), movies.movieId.max())) + 1
    genres = genre_matrix(movies, n_movies)
    ev_movies = examples.movie_id.to_numpy(np.int64)
    h_eval = _eval_histories(ratings, examples, examples if targets is None else targets, n_movies)
    x_fit = features(before_split, h_fit, fit.movieId.to_numpy(), genres, threshold)
    x_eval = features(pre, h_eval, ev_movies, genres, threshold)
    # mf is fitted once per setting and calibrated on a prefix of the (shuffled) fit rows: each needs a fold-in
    cal = np.arange(min(len(fit), MF_FIT_ROWS))
    raw_fit = _raw(x_fit, mf.scores(mf.fit(before_split, threshold, n_movies, seed), h_fit.take(cal),
                                    fit.movieId.to_numpy()[cal], threshold))
    raw_eval = _raw(x_eval, mf.scores(mf.fit(pre, threshold, n_movies, seed), h_eval, ev_movies, threshold))

    probs = {"constant": np.full(len(examples), float((pre.rating.to_numpy() >= threshold).mean()))}
    for name, score in raw_fit.items():
        lr = LogisticRegression().fit(score[:, None], y_fit[:len(score)])
        probs[name] = lr.predict_proba(raw_eval[name][:, None])[:, 1]
    gbdt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_leaf_nodes=31,
                                          early_stopping=True, random_state=seed)
    # OpenMP threads only pay off on big inputs; on small ones (tests, demo) they mostly wait on each other
    with threadpool_limits(limits=1 if len(x_fit) < 100_000 else None, user_api="openmp"):
        gbdt.fit(x_fit[FEATURES], y_fit)
        probs["gbdt"] = gbdt.predict_proba(x_eval[FEATURES])[:, 1]
    fit_info = {"history_ratings": len(before_split), "fit_rows": len(fit), "fit_split_timestamp": split,
                "fit_rows_min_history": min_history, "gbdt_iterations": int(gbdt.n_iter_), "features": FEATURES,
                "shrinkage": SHRINK, "mf": {**mf.PARAMS, "calibration_rows": len(cal)},
                "user_side": "each target's user's ratings strictly before its time (eval: other eval targets "
                             "excluded); movie side and fits: before the cutoff (fit rows: before the split)"}
    return {name: probs[name] for name in NAMES}, fit_info


def _fit_rows(pre: pd.DataFrame, split: int, min_history: int, max_fit_rows: int,
              seed: int) -> tuple[pd.DataFrame, Histories]:
    """Ratings in [split, cutoff) with at least min_history earlier ones, shuffled (any prefix is a random
    sample), at most max_fit_rows, and their histories among all pre-cutoff ratings."""
    window = pre[pre.timestamp >= split]
    h = histories(pre, window.userId.to_numpy(), window.timestamp.to_numpy())
    eligible = np.flatnonzero(h.end - h.start >= min_history)
    take = np.random.default_rng(seed).permutation(eligible)[:max_fit_rows]
    return window.iloc[take], h.take(take)


def _eval_histories(ratings: pd.DataFrame, examples: pd.DataFrame, targets: pd.DataFrame,
                    n_movies: int) -> Histories:
    """Each example's history: its user's ratings before its time, less the eval targets (as its prompt)."""
    users = examples.user_id.to_numpy(np.int64)
    theirs = ratings[ratings.userId.isin(np.unique(users))]
    skip = _pairs(theirs.userId, theirs.movieId, n_movies).isin(
        _pairs(targets.user_id.to_numpy(np.int64), targets.movie_id, n_movies))
    return histories(theirs[~skip.to_numpy()], users, examples.timestamp.to_numpy(np.int64))


def _raw(x: pd.DataFrame, mf_scores: np.ndarray) -> dict[str, np.ndarray]:
    """The one-number baselines' scores (mf's may cover a prefix of the rows only)."""
    return {"popularity": np.log1p(x.movie_n.to_numpy()), "movie_mean": x.movie_mean.to_numpy(),
            "user_mean": x.user_mean.to_numpy(), "mf": mf_scores}


def _pairs(users, movies, n_movies: int) -> pd.Series:
    """One int64 key per (user, movie)."""
    return pd.Series(np.asarray(users, dtype=np.int64) * n_movies + np.asarray(movies, dtype=np.int64))


def _sklearn():
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:
        raise UserError(f"the baselines need the package scikit-learn (pip install scikit-learn): {e}") from None
    return HistGradientBoostingClassifier, LogisticRegression


def run(data_dir: str | Path, ks: tuple[int, ...] = (1, 5, 10), n_boot: int = 1000) -> tuple[dict, pd.DataFrame]:
    """baselines.json's content for a prepared data folder, and P(like) per eval example and baseline."""
    start = time.perf_counter()
    _sklearn()  # a missing library stops before any work
    mf.als_class()
    manifest, ratings, movies, examples, ranking = load_inputs(data_dir)
    shortest = ranking.groupby("list_id").size().min() if len(ranking) else None
    if shortest is not None and max(ks) > shortest:
        raise UserError(f"--ks: k={max(ks)} exceeds the shortest ranking list ({shortest} candidates); lower it")
    cutoff = int(manifest["cutoff_timestamp"])
    threshold = like_threshold(manifest)
    print(f"[baselines {time.perf_counter() - start:5.1f}s] read {len(ratings):,} ratings, {len(examples):,} eval "
          f"examples, {len(ranking):,} ranking candidates; fitting (about a minute on 25M ratings)", file=sys.stderr)
    min_history = int((manifest.get("config") or {}).get("min_history", 0))
    cols = ["user_id", "movie_id", "timestamp"]
    rows = pd.concat([examples[cols], ranking[cols]], ignore_index=True).astype(np.int64)
    probs, fit_info = score_baselines(ratings, movies, rows, cutoff, threshold, min_history, targets=examples)
    labels, users, warm = examples.label.to_numpy(), examples.user_id.to_numpy(), examples.warm.to_numpy(bool)
    n = len(examples)
    results = {}
    for name, p in probs.items():
        results[name] = compute_metrics(labels, p[:n], users, warm=warm, n_boot=n_boot)
        if len(ranking):
            results[name]["ranking"] = ranking_metrics(ranking.list_id.to_numpy(), p[n:], ranking.relevant.to_numpy(),
                                                       ks, n_boot=n_boot)
    predictions = examples[["user_id", "movie_id", "label"]].assign(**{name: p[:n] for name, p in probs.items()})
    return {
        "cutoff_timestamp": cutoff,
        "like_threshold": threshold,
        "n_eval": n,
        "fit": fit_info,
        "baselines": results,
        "oracle": manifest.get("oracle"),  # synthetic data only: the generator's true probabilities
    }, predictions


def main(args: argparse.Namespace) -> int:
    from movierec.metrics.ranking import parse_ks
    from movierec.io import atomic_write_text

    ks = parse_ks(args.ks)
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0 (0: no intervals), got {args.bootstrap}")
    out = Path(args.out) if args.out else Path(args.data) / DatasetDir.BASELINES
    check_out(out, DatasetDir(args.data))
    result, predictions = run(args.data, ks, args.bootstrap)
    result["data_manifest_sha256"] = DatasetDir(args.data).manifest_sha256()
    # per example, for the report's paired comparison with the LLM (same examples, same users resampled)
    atomic_write_text(out.parent / DatasetDir.BASELINE_PREDICTIONS,
                      predictions.round(6).to_json(orient="records", lines=True))
    atomic_write_json(out, result)
    k = 10 if 10 in ks else max(ks)
    print(f"{'baseline':<12} {'AUC':>7} {'UAUC':>7} {'logloss':>8} {f'HR@{k}':>7} {f'NDCG@{k}':>8}")
    for name, m in result["baselines"].items():
        o, r = m["overall"], m.get("ranking") or {}
        print(f"{name:<12} {_fmt(o.get('auc')):>7} {_fmt(o.get('uauc')):>7} {_fmt(o.get('log_loss')):>8} "
              f"{_fmt(r.get(f'hr@{k}')):>7} {_fmt(r.get(f'ndcg@{k}')):>8}")
    if result["oracle"]:
        o = result["oracle"]["metrics"]["overall"]
        print(f"{'oracle':<12} {_fmt(o.get('auc')):>7} {_fmt(o.get('uauc')):>7} {_fmt(o.get('log_loss')):>8}"
              "  (true probabilities: the ceiling)")
    print(f"wrote {out} and {out.parent / DatasetDir.BASELINE_PREDICTIONS}")
    return 0


def check_out(out: Path, data: DatasetDir) -> None:
    """UserError unless --out (and the predictions file beside it) can be written without replacing
    anything `prepare` wrote: checked before the minute of fitting."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name the JSON file to write")
    if out.name == DatasetDir.BASELINE_PREDICTIONS:
        raise UserError(f"--out {out}: is the per-example predictions file written beside it; name another file")
    if data.path.is_dir() and out.parent.resolve() == data.path.resolve():
        files = (data.manifest().get("files") or {}) if data.file(data.MANIFEST).is_file() else {}
        if out.name in {*files, data.MANIFEST, data.DATASET_INFO, data.HASH_CACHE}:
            raise UserError(f"--out {out}: is a file `movierec prepare` wrote; name another file "
                            f"(default {data.BASELINES})")
    predictions = out.parent / DatasetDir.BASELINE_PREDICTIONS
    for path, ours in ((out, _written_here(out, "baselines")), (predictions, _written_here(predictions, "user_id"))):
        if path.exists() and not ours:
            raise UserError(f"--out {out}: {path} exists and was not written by `movierec baselines`; nothing was "
                            "changed: name a file in another folder")
    parent = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write there ({parent} is not a writable folder)")


def _written_here(path: Path, key: str) -> bool:
    """Whether `path` (JSON, or JSONL: its first line) is an object holding `key`, as `baselines` writes."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.read() if path.suffix == ".json" else f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and key in first


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"
