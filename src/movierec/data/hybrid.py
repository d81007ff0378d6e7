"""The hybrid prompt options of the data config: relevant history, user and candidate statistics, and a
collaborative filtering (CF) estimate. Every option is off by default (the reference prompt).

What each example may draw on is the rule of its history (split.py): its user's ratings strictly before
the target's timestamp, never an eval target; everyone else's ratings likewise strictly before it. Train
and eval examples follow one rule:

- Time windows. The ratings before the cutoff are cut into WINDOWS windows of equal rating count; the
  eval examples form one more window, from the cutoff on. An example's collaborative model (ALS, as the
  `mf` baseline: baselines/mf.py) is fitted on the ratings before its window's start, so it never saw
  the target's rating or a later one: out of sample for train examples exactly as for eval examples
  (whose model is fitted on the ratings before the cutoff). Train examples of the first window have no
  model (their CF estimate is "unavailable", their history the recent one).
- `cf_score`: the model's u . v, u folded in from the user's earlier ratings (as the mf baseline), as a
  probability through a logistic calibration fitted on up to CALIBRATION_ROWS ratings of the window just
  before the model's fit boundary (ratings it was fitted on: a little optimistic, but never a later one).
- `history_select: relevant`: the history_len earlier ratings whose movies are most similar to the
  candidate, shown oldest first (ReLLa); ties and movies without a vector: most recent first. A movie's
  vector is its row of the window's signed co-rating matrix (movies x users, +1 liked, -1 disliked) made
  unit length and reduced to SIMILARITY_DIMS by a randomized SVD; similarity is the cosine. Measured on
  ML-100K (docs/data.md): the mean of the shown ratings reaches eval AUC 0.745 with these vectors, 0.741
  with the exact co-rating cosine, 0.711 unsigned and 0.708 with the mf model's ALS factors (0.680 for
  the recent ratings): agreement in like/dislike is what makes an earlier rating tell about the candidate,
  and 32 numbers per movie keep it affordable at any catalogue size. A candidate without a vector
  (not rated before its window) falls back to recency.
- `user_stats`: count, mean and like rate of all the user's earlier ratings (not only the shown ones).
- `candidate_stats`: count and mean of everyone's ratings of the candidate before the target's time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from movierec.data.config import DataConfig
from movierec.data.movielens import MOVIE, RATING, TIMESTAMP, USER
from movierec.data.prompts import candidate_stats_line, cf_line, user_stats_line
from movierec.data.split import Examples, Split
from movierec.errors import UserError

SIMILARITY_DIMS = 32  # 64 was no better on ML-100K (eval AUC of the shown ratings' mean 0.743 vs 0.745)
WINDOWS = 8  # train windows of 1/8 of the pre-cutoff ratings: close to the eval period's 10% at quantile 0.9
CALIBRATION_ROWS = 5_000  # a 2-parameter logistic needs few; each costs a fold-in
PAIRS_PER_CHUNK = 1_000_000  # (example, earlier rating) pairs scored at once: ~130 MB of factors


@dataclass(frozen=True)
class Ratings:
    """prepare's ratings, sorted by (user, time, movie), and the rows a prompt may draw on (not eval targets)."""

    user: np.ndarray
    movie: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    visible: np.ndarray  # row indices, ascending

    @classmethod
    def of(cls, table: pa.Table, eval_targets: np.ndarray) -> Ratings:
        keep = np.ones(table.num_rows, dtype=bool)
        keep[eval_targets] = False
        return cls(table[USER].to_numpy(), table[MOVIE].to_numpy(), table[RATING].to_numpy().astype(np.float64),
                   table[TIMESTAMP].to_numpy(), np.flatnonzero(keep))

    def earlier(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions [lo, hi) in `visible` of each target's user's visible ratings strictly before it."""
        return self.earlier_at(self.user[target], self.ts[target])

    def earlier_at(self, user: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions [lo, hi) in `visible` of each user's visible ratings strictly before time ts."""
        key = _key(self.user, self.ts)
        first_of_user = np.searchsorted(self.user, user)
        first_of_second = np.searchsorted(key, _key(user, ts))
        before = np.searchsorted(self.visible, np.arange(len(self.user) + 1))  # visible rows before each row
        return before[first_of_user], before[first_of_second]


@dataclass(frozen=True)
class Window:
    start: int  # timestamp: the model is fitted on the visible ratings strictly before it
    model: Any  # baselines.mf.Model (cf_score), else None
    calibration: tuple[float, float]  # P(like) = sigmoid(a * u.v + b)
    vectors: np.ndarray | None  # [movieId, SIMILARITY_DIMS] unit vectors, 0 without ratings (relevant history)
    info: dict


def _key(a: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """One sortable int64 per (a, ts): rows sorted by (a, ts) have ascending keys."""
    return a.astype(np.int64) * (1 << 32) + (ts.astype(np.int64) - (-(1 << 31)))


def any_option(cfg: DataConfig) -> bool:
    return cfg.history_select != "recent" or cfg.candidate_stats or cfg.user_stats or cfg.cf_score


def describe(cfg: Mapping[str, Any]) -> str:
    """What a prompt shows, in words, from a data config's values (a manifest's `config`)."""
    n = cfg.get("history_len", "the")
    shown = (f"the {n} earlier ratings most similar to the candidate (relevant history)"
             if cfg.get("history_select") == "relevant" else f"the {n} latest earlier ratings")
    extra = [what for key, what in (("user_stats", "the user's rating statistics"),
                                    ("candidate_stats", "the candidate's rating statistics"),
                                    ("cf_score", "a collaborative filtering estimate")) if cfg.get(key)]
    return shown + (" plus " + ", ".join(extra[:-1]) + (" and " if len(extra) > 1 else "") + extra[-1] if extra else "")


def apply(table: pa.Table, parts: Split,
          cfg: DataConfig) -> tuple[Split, dict[str, tuple], dict[str, Any], Options | None]:
    """The split with relevant histories (when chosen), each split's extra prompt lines (user line or None,
    tail lines) for render_inputs, the manifest's record of the options, and the fitted Options (None when
    every option is off) that render the ranking lists' prompts by the same rules. Train, eval and
    validation examples get the same options by the same rules: the blend weight picked on validation
    examples is only right for the eval ones if the LLM sees the same prompt on both."""
    options = {k: getattr(cfg, k) for k in ("history_select", "candidate_stats", "user_stats", "cf_score")}
    names = ("train", "eval", "valid")  # validation examples are built as train examples are (split.py)
    if not any_option(cfg):
        return parts, {name: (None, []) for name in names}, {**options, "counts": None}, None
    r = Ratings.of(table, parts.eval.target)
    need = cfg.cf_score or cfg.history_select == "relevant"
    fitted = Options(r, fit_windows(r, window_starts(r.ts, parts.cutoff, cfg.cutoff_quantile), cfg) if need else [],
                     cfg)
    lines, counts, new = {}, {}, {}
    for name in [n for n in names if len(getattr(parts, n).target)]:
        ex = getattr(parts, name)
        new[name], lines[name], counts[name] = fitted.render(ex, r.user[ex.target], r.ts[ex.target],
                                                             r.movie[ex.target])
    record = {**options, "counts": counts,
              "windows": [{"fit_before": w.start, **w.info} for w in fitted.windows] if fitted.windows else None}
    return replace(parts, **new), lines, record, fitted


@dataclass(frozen=True)
class Options:
    """A data config's prompt options, fitted once (time windows, movie vectors, CF models) on prepare's
    ratings: renders the option parts of any prompt given its user, time and candidate movie."""

    r: Ratings
    windows: list[Window]
    cfg: DataConfig

    def render(self, ex: Examples, user: np.ndarray, ts: np.ndarray,
               movie: np.ndarray) -> tuple[Examples, tuple, dict[str, int]]:
        """For prompts of `user` at time `ts` about candidate `movie` (one each per example of `ex`, whose
        histories are the recency ones): the examples with relevant histories when chosen, the (user line or
        None, tail lines) for render_inputs, and the counts for the manifest. Only visible ratings strictly
        before `ts` are read."""
        r, cfg, windows = self.r, self.cfg, self.windows
        lo, hi = r.earlier_at(user, ts)
        k = window_of(ts, windows)
        c: dict[str, int] = {"examples": len(movie)}
        if cfg.history_select == "relevant":
            ex, fallback = relevant(r, ex, movie, lo, hi, k, windows, cfg.history_len)
            c |= {"relevant_history": int((~fallback).sum()), "recency_fallback": int(fallback.sum())}
        user_line, tail = None, []
        if cfg.user_stats:
            n, mean, like = user_stats(r, lo, hi, cfg.like_threshold)
            user_line = np.array([user_stats_line(*x) for x in zip(n.tolist(), mean.tolist(), like.tolist())],
                                 dtype=object)
            c["user_without_earlier_ratings"] = int((n == 0).sum())
        if cfg.candidate_stats:
            n, mean = candidate_stats(r, movie, ts)
            tail.append(np.array([candidate_stats_line(*x) for x in zip(n.tolist(), mean.tolist())], dtype=object))
            c["candidate_without_earlier_ratings"] = int((n == 0).sum())
        if cfg.cf_score:
            p = cf_scores(r, movie, lo, hi, k, windows, cfg.like_threshold)
            tail.append(np.array([cf_line(x) for x in np.round(p, 2).tolist()], dtype=object))
            c |= {"cf_score": int((~np.isnan(p)).sum()), "cf_unavailable": int(np.isnan(p).sum())}
        return ex, (user_line, tail), c


def window_starts(ts: np.ndarray, cutoff: int, cutoff_quantile: float) -> np.ndarray:
    """Ascending fit boundaries: WINDOWS - 1 quantiles of all timestamps below the cutoff, then the cutoff."""
    q = [cutoff_quantile * j / WINDOWS for j in range(1, WINDOWS)]
    return np.unique(np.append(np.quantile(ts, q, method="lower"), cutoff)).astype(np.int64)


def window_of(ts: np.ndarray, windows: list[Window]) -> np.ndarray:
    """Index of each timestamp's model: the latest window starting at or before it (-1: none)."""
    starts = np.array([w.start for w in windows], dtype=np.int64)
    return np.searchsorted(starts, ts, side="right") - 1


def fit_windows(r: Ratings, starts: np.ndarray, cfg: DataConfig,
                previous: int = np.iinfo(np.int64).min) -> list[Window]:
    """One calibrated ALS model (cf_score) and movie vectors (relevant history) per window start; the first
    model is calibrated on the ratings from `previous` on, each later one on the window before it."""
    from movierec.evaluation.baselines import mf

    key = "cf_score" if cfg.cf_score else "history_select"
    vis_ts = r.ts[r.visible]
    first = r.visible[vis_ts < starts[0]]
    users, movies = len(np.unique(r.user[first])), len(np.unique(r.movie[first]))
    if min(users, movies) < max(mf.FACTORS, SIMILARITY_DIMS):
        raise UserError(f"{key}: too few ratings to fit {mf.FACTORS} collaborative factors: the first of "
                        f"{len(starts)} time windows has {len(first):,} earlier ratings of {users} users and "
                        f"{movies} movies (at least {mf.FACTORS} of each needed); use more data or turn it off")
    n_movies = int(r.movie.max()) + 1
    windows = []
    for j, start in enumerate(starts.tolist()):
        rows = r.visible[vis_ts < start]
        fit = pd.DataFrame({"userId": r.user[rows], "movieId": r.movie[rows], "rating": r.rating[rows]})
        model, calibration, info = None, (0.0, 0.0), {"fit_ratings": len(rows)}
        if cfg.cf_score:
            model = mf.fit(fit, cfg.like_threshold, n_movies, cfg.seed)
            calibration, info["calibration_rows"] = _calibrate(r, model, previous, start, cfg, j)
            info["calibration"] = [round(x, 6) for x in calibration]
        vectors = _vectors(fit, cfg.like_threshold, n_movies, cfg.seed) if cfg.history_select == "relevant" else None
        windows.append(Window(start, model, calibration, vectors, info))
        previous = start
    return windows


def _calibrate(r: Ratings, model, lo_ts: int, hi_ts: int, cfg: DataConfig, j: int) -> tuple[tuple[float, float], int]:
    """Logistic (a, b) of like on u.v over a sample of the visible ratings in [lo_ts, hi_ts); the sample is
    drawn from positions only, so no rating value decides which ratings calibrate."""
    from sklearn.linear_model import LogisticRegression

    vis_ts = r.ts[r.visible]
    pool = r.visible[(vis_ts >= lo_ts) & (vis_ts < hi_ts)]
    rows = np.sort(np.random.default_rng([cfg.seed, 2, j]).permutation(pool)[:CALIBRATION_ROWS])
    lo, hi = r.earlier(rows)
    s = _fold_in(r, model, r.movie[rows], lo, hi, cfg.like_threshold)
    y = r.rating[rows] >= cfg.like_threshold
    if len(np.unique(y)) < 2:  # a single label: no slope to learn, the base rate
        rate = float(np.clip(y.mean() if len(y) else 0.5, 0.01, 0.99))
        return (0.0, float(np.log(rate / (1 - rate)))), len(rows)
    lr = LogisticRegression().fit(s[:, None], y)
    return (float(lr.coef_[0, 0]), float(lr.intercept_[0])), len(rows)


def _fold_in(r: Ratings, model, movies: np.ndarray, lo: np.ndarray, hi: np.ndarray, threshold: float) -> np.ndarray:
    from movierec.evaluation.baselines import mf
    from movierec.evaluation.baselines.features import Histories

    h = Histories(r.movie[r.visible].astype(np.int64), r.rating[r.visible], lo, hi)
    return mf.scores(model, h, movies.astype(np.int64), threshold)


def cf_scores(r: Ratings, movies: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: np.ndarray,
              windows: list[Window], threshold: float) -> np.ndarray:
    """Calibrated P(like) per candidate movie from its window's model, the user folded in from the visible
    ratings [lo, hi); NaN without a model or a candidate vector."""
    p = np.full(len(movies), np.nan)
    for j in np.unique(k[k >= 0]).tolist():
        w, mine = windows[j], np.flatnonzero(k == j)
        s = _fold_in(r, w.model, movies[mine], lo[mine], hi[mine], threshold)
        a, b = w.calibration
        fitted = w.model.column[movies[mine]] >= 0
        p[mine] = np.where(fitted, 1 / (1 + np.exp(-(a * s + b))), np.nan)
    return p


def user_stats(r: Ratings, lo: np.ndarray, hi: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """(count, mean rating, like rate) of the visible ratings at positions [lo, hi); 0 where none."""
    v = r.rating[r.visible]
    total = np.concatenate([[0.0], np.cumsum(v)])
    likes = np.concatenate([[0], np.cumsum(v >= threshold)])
    n = hi - lo
    safe = np.maximum(n, 1)
    return n, (total[hi] - total[lo]) / safe, (likes[hi] - likes[lo]) / safe


def candidate_stats(r: Ratings, m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean rating) of the visible ratings of each movie m strictly before time t."""
    rows = r.visible[np.lexsort((r.ts[r.visible], r.movie[r.visible]))]
    key = _key(r.movie[rows], r.ts[rows])
    total = np.concatenate([[0.0], np.cumsum(r.rating[rows])])
    lo = np.searchsorted(key, _key(m, np.full_like(t, -(1 << 31))))
    hi = np.searchsorted(key, _key(m, t))
    n = hi - lo
    return n, (total[hi] - total[lo]) / np.maximum(n, 1)


def relevant(r: Ratings, ex: Examples, cand: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: np.ndarray,
             windows: list[Window], history_len: int) -> tuple[Examples, np.ndarray]:
    """Examples whose histories are the history_len earlier visible ratings [lo, hi) most similar to the
    candidate movie `cand`, oldest first; and which examples fell back to recency (no window yet, or a
    candidate without a vector)."""
    n = len(ex.target)
    has = [(w.vectors != 0).any(1) for w in windows]
    fallback = k < 0
    for j in np.unique(k[k >= 0]).tolist():
        fallback[k == j] = ~has[j][cand[k == j]]
    length = hi - lo
    ends = np.cumsum(length)
    histories, owners = [], []
    first = 0
    while first < n:  # chunks of examples with at most PAIRS_PER_CHUNK earlier ratings (at least one example)
        last = max(first + 1, int(np.searchsorted(ends, (ends[first - 1] if first else 0) + PAIRS_PER_CHUNK,
                                                  side="right")))
        idx = np.arange(first, min(last, n))
        h, o = _select(r, idx, lo[idx], length[idx], cand[idx], k[idx], fallback[idx], windows, has, history_len)
        histories.append(h)
        owners.append(o)
        first = idx[-1] + 1
    history = np.concatenate(histories) if histories else np.zeros(0, dtype=np.int64)
    owner = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
    assert (np.bincount(owner, minlength=n) == ex.history_len).all()
    return Examples(ex.target, history, owner, ex.history_len), fallback


def _vectors(fit: pd.DataFrame, threshold: float, n_movies: int, seed: int) -> np.ndarray:
    """Unit movie vectors whose cosines approximate those of the signed co-rating rows (module docstring)."""
    from scipy.sparse import csr_matrix
    from sklearn.preprocessing import normalize
    from sklearn.utils.extmath import randomized_svd

    signs = np.where(fit.rating.to_numpy() >= threshold, 1.0, -1.0)
    users = fit.userId.to_numpy()
    m = csr_matrix((signs, (fit.movieId.to_numpy(), users)), shape=(n_movies, int(users.max()) + 1))
    u, s, _ = randomized_svd(normalize(m), SIMILARITY_DIMS, random_state=seed)
    return normalize((u * s).astype(np.float32))  # a movie without ratings keeps a zero row


def _select(r: Ratings, idx: np.ndarray, lo: np.ndarray, length: np.ndarray, cand: np.ndarray, k: np.ndarray,
            fallback: np.ndarray, windows: list[Window], has: list[np.ndarray],
            history_len: int) -> tuple[np.ndarray, np.ndarray]:
    """History rows and owners (examples `idx`) of one chunk, ranked by similarity then recency."""
    local = np.repeat(np.arange(len(idx)), length)
    pos = np.repeat(lo - np.cumsum(length) + length, length) + np.arange(len(local))  # positions in visible
    movie = r.movie[r.visible[pos]]
    sim = np.zeros(len(pos), dtype=np.float32)  # fallback examples: all equal, so recency decides
    for j in np.unique(k[~fallback]).tolist():
        pairs = np.flatnonzero((k[local] == j) & ~fallback[local])
        v, hist = windows[j].vectors, movie[pairs]
        s = (v[hist] * v[cand[local[pairs]]]).sum(1)
        sim[pairs] = np.where(has[j][hist], s, -2.0)  # a movie without a vector: after every other one
    order = np.lexsort((-pos, -sim, local))
    group_start = np.cumsum(length) - length
    rank = np.arange(len(order)) - group_start[local[order]]
    chosen = order[rank < history_len]
    chosen = chosen[np.lexsort((pos[chosen], local[chosen]))]  # oldest first within each example
    return r.visible[pos[chosen]], idx[local[chosen]]


def for_candidates(ratings: pd.DataFrame, cfg: DataConfig, user_id: int,
                   movie_ids: list[int]) -> tuple[pd.DataFrame, list[np.ndarray], str | None, list[list[str]]]:
    """`recommend`'s prompts by prepare's rules, each candidate a target rated now (after every known rating):
    the ratings sorted as prepare sorts them, the rows of it shown for each candidate, the user line, and the
    tail lines per candidate. Its one window starts now (models fitted on every rating), calibrated on the
    latest 1/WINDOWS of the pre-cutoff share of ratings, as long as prepare's windows."""
    known = ratings[["userId", "movieId", "rating", "timestamp"]]
    now = int(known.timestamp.max()) + 1
    new = pd.DataFrame({"userId": user_id, "movieId": movie_ids, "rating": 0.0, "timestamp": now})
    both = pd.concat([known, new], ignore_index=True).sort_values(["userId", "timestamp", "movieId"],
                                                                  kind="stable", ignore_index=True)
    target = np.flatnonzero((both.timestamp == now).to_numpy() & (both.userId == user_id).to_numpy())
    table = pa.table({USER: both.userId.to_numpy(), MOVIE: both.movieId.to_numpy(), RATING: both.rating.to_numpy(),
                      TIMESTAMP: both.timestamp.to_numpy()})
    r = Ratings.of(table, target)
    order = {m: i for i, m in enumerate(both.movieId.to_numpy()[target].tolist())}
    target = target[[order[m] for m in movie_ids]]  # the caller's order
    lo, hi = r.earlier(target)
    k = np.zeros(len(target), dtype=np.int64)
    windows = []
    if cfg.cf_score or cfg.history_select == "relevant":
        previous = int(np.quantile(known.timestamp, 1 - cfg.cutoff_quantile / WINDOWS, method="lower"))
        windows = fit_windows(r, np.array([now]), cfg, previous)
    length = np.minimum(hi - lo, cfg.history_len)
    ex = Examples(target, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), length)
    if cfg.history_select == "relevant":
        ex, _ = relevant(r, ex, r.movie[target], lo, hi, k, windows, cfg.history_len)
    else:
        ex = Examples(target, r.visible[np.concatenate([np.arange(b - n, b) for b, n in zip(hi, length)])],
                      np.repeat(np.arange(len(target)), length), length)
    shown = [ex.history[ex.owner == i] for i in range(len(target))]
    user_line = user_stats_line(*(x[0].item() for x in user_stats(r, lo[:1], hi[:1], cfg.like_threshold))) \
        if cfg.user_stats else None
    tails: list[list[str]] = [[] for _ in movie_ids]
    if cfg.candidate_stats:
        for t, n, mean in zip(tails, *candidate_stats(r, r.movie[target], r.ts[target])):
            t.append(candidate_stats_line(int(n), float(mean)))
    if cfg.cf_score:
        for t, p in zip(tails, np.round(cf_scores(r, r.movie[target], lo, hi, k, windows, cfg.like_threshold), 2)):
            t.append(cf_line(float(p)))
    return both, shown, user_line, tails
