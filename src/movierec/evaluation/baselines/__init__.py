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

    split = the 90% quantile of pre-cutoff timestamps (data/split.py's window_start: the validation
            examples `prepare` holds out for evaluate's blend weight lie after it too)
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
    gbdt+mf      the same, given mf's raw score u . v as one more feature (stacked); a fit row's score
                 comes from factors fitted before the split (never saw its rating), an eval row's is mf's

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

from movierec.data.fields import (
    LABEL,
    LIST_ID,
    MOVIE_ID,
    RELEVANT,
    USER_ID,
    WARM,
)
from movierec.data.movielens import TIMESTAMP
from movierec.data.split import window_start
from movierec.errors import UserError
from movierec.evaluation.baselines import mf
from movierec.evaluation.baselines.features import (
    FEATURES,
    SHRINK,
    Histories,
    features,
    genre_matrix,
    histories,
)
from movierec.evaluation.metrics import compute_metrics, ranking_metrics
from movierec.folders.datadir import DatasetDir
from movierec.folders.io import atomic_write_json

MAX_FIT_ROWS = 500_000  # GBDT fit ~20 s on 2 cores; 1M rows gained +0.002 AUC on 25M synthetic ratings
MF_FIT_ROWS = 5_000  # fit rows that calibrate mf (one slope and intercept; each needs a fold-in)
# fit rows of gbdt+mf: each needs mf's fold-in from its whole history; all of them on the small data sets
# (ML-100K has ~8,000), a sample on the large ones, to keep the fold-in's sparse matrix small
STACK_FIT_ROWS = 100_000
NAMES = ("constant", "popularity", "movie_mean", "user_mean", "mf", "gbdt", "gbdt+mf")  # simplest first


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
    ratings = pd.read_parquet(data.file(data.RATINGS), columns=["userId", "movieId", "rating", TIMESTAMP])
    movies = pd.read_parquet(data.file(data.MOVIES), columns=["movieId", "genres"])
    examples = _frame(data, eval_name, [USER_ID, MOVIE_ID, TIMESTAMP, LABEL, WARM])
    ranking = (_frame(data, data.RANKING, [LIST_ID, USER_ID, MOVIE_ID, TIMESTAMP, RELEVANT]) if ranked
               else pd.DataFrame(columns=[LIST_ID, USER_ID, MOVIE_ID, TIMESTAMP, RELEVANT]))
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
                    seed: int = 0, targets: pd.DataFrame | None = None,
                    valid: pd.DataFrame | None = None) -> tuple[dict, dict, np.ndarray | None]:
    """P(like) per row of `examples` (user_id, movie_id, timestamp) for each baseline (what each may see:
    the module docstring). `targets` are the eval examples, left out of every history (default: `examples`;
    the ranking candidates are scored with them, so their histories skip the eval targets too).

    Returns:
        ({name: probabilities aligned with `examples`}, {facts about the fit for the output file}, mf's
        P(like) per `valid` row (validation examples in [split, cutoff), scored as the fit rows are: by
        factors fitted before the split, so out-of-sample), or None without `valid`).
    """
    _, LogisticRegression = _sklearn()
    mf.als_class()
    pre = ratings[ratings.timestamp < cutoff]
    if pre.empty:
        raise UserError(f"no ratings before cutoff_timestamp {cutoff}: nothing to fit baselines on")
    split = window_start(pre.timestamp.to_numpy())
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
    # mf is fitted once per setting. A fit row's score comes from factors fitted before the split, so they never
    # saw its rating; each needs a fold-in, so only a prefix of the (shuffled) fit rows is scored: the first
    # MF_FIT_ROWS calibrate mf, the first STACK_FIT_ROWS fit gbdt+mf
    early = mf.fit(before_split, threshold, n_movies, seed)
    n_mf = min(len(fit), max(MF_FIT_ROWS, STACK_FIT_ROWS))
    mf_fit = mf.scores(early, h_fit.take(np.arange(n_mf)), fit.movieId.to_numpy()[:n_mf], threshold)
    mf_eval = mf.scores(mf.fit(pre, threshold, n_movies, seed), h_eval, ev_movies, threshold)
    raw_fit, raw_eval = _raw(x_fit, mf_fit[:MF_FIT_ROWS]), _raw(x_eval, mf_eval)
    probs, maps = {"constant": np.full(len(examples), float((pre.rating.to_numpy() >= threshold).mean()))}, {}
    for name, score in raw_fit.items():
        maps[name] = LogisticRegression().fit(score[:, None], y_fit[:len(score)])
        probs[name] = maps[name].predict_proba(raw_eval[name][:, None])[:, 1]
    probs["gbdt"], iterations = _gbdt(x_fit[FEATURES], y_fit, x_eval[FEATURES], seed)
    probs["gbdt+mf"], stack_iterations = _gbdt(x_fit[FEATURES].iloc[:n_mf].assign(mf=mf_fit), y_fit[:n_mf],
                                               x_eval[FEATURES].assign(mf=mf_eval), seed)
    valid_mf = None if valid is None else _validation(valid, pre, split, early, maps["mf"], threshold)
    fit_info = _fit_info(len(before_split), len(fit), split, min_history, iterations, n_mf, stack_iterations, valid)
    return {name: probs[name] for name in NAMES}, fit_info, valid_mf


def _fit_info(history: int, n_fit: int, split: int, min_history: int, iterations: int, n_mf: int,
              stack_iterations: int, valid: pd.DataFrame | None) -> dict:
    """What baselines.json says of the fits."""
    return {"history_ratings": history, "fit_rows": n_fit, "fit_split_timestamp": split,
            "fit_rows_min_history": min_history, "gbdt_iterations": iterations, "features": FEATURES,
            "shrinkage": SHRINK, "mf": {**mf.PARAMS, "calibration_rows": min(n_fit, MF_FIT_ROWS)},
            "gbdt+mf": {"fit_rows": n_mf, "iterations": stack_iterations, "features": [*FEATURES, "mf"],
                        "mf_feature": "u . v (mf's raw score); fit rows: factors fitted before the split, so "
                                      "out-of-sample; eval rows: the mf baseline's own (fitted before the cutoff)"},
            "validation_rows": 0 if valid is None else len(valid),
            "user_side": "each target's user's ratings strictly before its time (eval: other eval targets "
                         "excluded); movie side and fits: before the cutoff (fit rows: before the split)"}


def _gbdt(x_fit: pd.DataFrame, y_fit: np.ndarray, x_eval: pd.DataFrame, seed: int) -> tuple[np.ndarray, int]:
    """P(like) of x_eval's rows from a HistGradientBoostingClassifier fitted on (x_fit, y_fit); its iterations."""
    from threadpoolctl import threadpool_limits

    HistGradientBoostingClassifier, _ = _sklearn()
    gbdt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_leaf_nodes=31,
                                          early_stopping=True, random_state=seed)
    # OpenMP threads only pay off on big inputs; on small ones (tests, demo) they mostly wait on each other
    with threadpool_limits(limits=1 if len(x_fit) < 100_000 else None, user_api="openmp"):
        gbdt.fit(x_fit, y_fit)
        return gbdt.predict_proba(x_eval)[:, 1], int(gbdt.n_iter_)


def _validation(valid: pd.DataFrame, pre: pd.DataFrame, split: int, early: mf.Model, calibration,
                threshold: float) -> np.ndarray:
    """mf's P(like) per validation example, as for a fit row: factors fitted before the split (which every
    validation target follows: prepare takes them from the same window), the user folded in from their
    pre-cutoff ratings before the target (a train prompt's history rule), mf's calibration map."""
    if len(valid) and valid.timestamp.min() < split:
        raise UserError(f"validation examples before the baselines' split {split}: prepared by another movierec "
                        "version? rerun `movierec prepare`")
    h = histories(pre, valid.user_id.to_numpy(np.int64), valid.timestamp.to_numpy(np.int64))
    raw = mf.scores(early, h, valid.movie_id.to_numpy(np.int64), threshold)
    return calibration.predict_proba(raw[:, None])[:, 1] if len(valid) else np.empty(0)


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


def run(data_dir: str | Path, ks: tuple[int, ...] = (1, 5, 10),
        n_boot: int = 1000) -> tuple[dict, pd.DataFrame, pd.DataFrame | None]:
    """baselines.json's content for a prepared data folder, P(like) per eval example and baseline, and mf's
    P(like) per validation example (None when prepare wrote none)."""
    start = time.perf_counter()
    _sklearn()  # a missing library stops before any work
    mf.als_class()
    manifest, ratings, movies, examples, ranking = load_inputs(data_dir)
    shortest = ranking.groupby(LIST_ID).size().min() if len(ranking) else None
    if shortest is not None and max(ks) > shortest:
        raise UserError(f"--ks: k={max(ks)} exceeds the shortest ranking list ({shortest} candidates); lower it")
    cutoff = int(manifest["cutoff_timestamp"])
    threshold = like_threshold(manifest)
    print(f"[baselines {time.perf_counter() - start:5.1f}s] read {len(ratings):,} ratings, {len(examples):,} eval "
          f"examples, {len(ranking):,} ranking candidates; fitting (about a minute on 25M ratings)", file=sys.stderr)
    min_history = int((manifest.get("config") or {}).get("min_history", 0))
    cols = [USER_ID, MOVIE_ID, TIMESTAMP]
    rows = pd.concat([examples[cols], ranking[cols]], ignore_index=True).astype(np.int64)
    valid = _valid_examples(data_dir, manifest)
    probs, fit_info, valid_mf = score_baselines(ratings, movies, rows, cutoff, threshold, min_history,
                                                targets=examples, valid=valid)
    labels, users, warm = examples.label.to_numpy(), examples.user_id.to_numpy(), examples.warm.to_numpy(bool)
    n = len(examples)
    results = {}
    for name, p in probs.items():
        results[name] = compute_metrics(labels, p[:n], users, warm=warm, n_boot=n_boot)
        if len(ranking):
            results[name]["ranking"] = ranking_metrics(ranking.list_id.to_numpy(), p[n:], ranking.relevant.to_numpy(),
                                                       ks, n_boot=n_boot)
    predictions = examples[[USER_ID, MOVIE_ID, LABEL]].assign(**{name: p[:n] for name, p in probs.items()})
    validation = None if valid is None else valid[[USER_ID, MOVIE_ID, LABEL]].assign(mf=valid_mf)
    return {
        "cutoff_timestamp": cutoff,
        "like_threshold": threshold,
        "n_eval": n,
        "fit": fit_info,
        "baselines": results,
        "oracle": manifest.get("oracle"),  # synthetic data only: the generator's true probabilities
    }, predictions, validation


def _valid_examples(data_dir: str | Path, manifest: dict) -> pd.DataFrame | None:
    """The validation examples prepare held out (None for a folder prepared without them)."""
    data = DatasetDir(data_dir)
    if data.VALID not in (manifest.get("files") or {}):
        return None
    data.verify([data.VALID])
    return _frame(data, data.VALID, [USER_ID, MOVIE_ID, TIMESTAMP, LABEL])


def main(args: argparse.Namespace) -> int:
    from movierec.folders.io import atomic_write_text

    ks = args.ks
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: must be >= 0 (0: no intervals), got {args.bootstrap}")
    out = Path(args.out) if args.out else Path(args.data) / DatasetDir.BASELINES
    check_out(out, DatasetDir(args.data))
    result, predictions, validation = run(args.data, ks, args.bootstrap)
    result["data_manifest_sha256"] = DatasetDir(args.data).manifest_sha256()
    # per example, for evaluate's paired comparison with the LLM (same examples, same users resampled) and its
    # llm+mf blend, whose weight it picks on the validation examples
    atomic_write_text(out.parent / DatasetDir.BASELINE_PREDICTIONS,
                      predictions.round(6).to_json(orient="records", lines=True))
    valid_out = out.parent / DatasetDir.BASELINE_VALIDATION
    if validation is not None:
        atomic_write_text(valid_out, validation.round(6).to_json(orient="records", lines=True))
    else:
        valid_out.unlink(missing_ok=True)  # an older one belongs to other data
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
    print(f"wrote {out} and {out.parent / DatasetDir.BASELINE_PREDICTIONS}"
          + (f" and {valid_out}" if validation is not None else ""))
    return 0


def check_out(out: Path, data: DatasetDir) -> None:
    """UserError unless --out (and the predictions file beside it) can be written without replacing
    anything `prepare` wrote: checked before the minute of fitting."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name the JSON file to write")
    if out.name in (DatasetDir.BASELINE_PREDICTIONS, DatasetDir.BASELINE_VALIDATION):
        raise UserError(f"--out {out}: is a per-example predictions file written beside it; name another file")
    if data.path.is_dir() and out.parent.resolve() == data.path.resolve():
        files = (data.manifest().get("files") or {}) if data.file(data.MANIFEST).is_file() else {}
        if out.name in {*files, data.MANIFEST, data.DATASET_INFO, data.HASH_CACHE}:
            raise UserError(f"--out {out}: is a file `movierec prepare` wrote; name another file "
                            f"(default {data.BASELINES})")
    predictions = out.parent / DatasetDir.BASELINE_PREDICTIONS
    for path, ours in ((out, _written_here(out, "baselines")), (predictions, _written_here(predictions, USER_ID))):
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
