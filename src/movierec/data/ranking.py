"""Ranking lists: for eval users with a liked eval target, their eval targets plus sampled unrated movies.

Each list is scored as of the user's ranking time, the timestamp of their first eval target: every
candidate's prompt shows the same history, the user's latest ratings strictly before that time
(so no eval target), as a deployed recommender would rank a slate. Relevant = the liked targets.
The other candidates are the user's not-liked targets and `ranking_negatives` movies the user never
rated, sampled with the seed in proportion to their number of ratings (popularity-weighted: uniform
negatives are mostly obscure movies, which any popularity signal ranks last, so the metrics would
mostly measure popularity; weighting by popularity makes the list resemble what a user is shown).
The lists are written once by `prepare` (ranking.jsonl), so every model and every rerun ranks the
same candidates. With prompt options (data/hybrid.py) each candidate's prompt carries them as an eval
example's would, as of the ranking time: relevant history for that candidate, statistics and the CF
estimate from the visible ratings before it.
"""

from __future__ import annotations

import json

import numpy as np

from movierec.data.config import DataConfig
from movierec.data.fields import LIST_ID, MOVIE_ID, RELEVANT, USER_ID
from movierec.data.hybrid import Options
from movierec.data.movielens import (
    GENRES,
    MOVIE,
    RATING,
    TIMESTAMP,
    TITLE,
    USER,
    MovieLens,
)
from movierec.data.prompts import render_inputs
from movierec.data.split import Examples


def ranking_lines(data: MovieLens, eval_target: np.ndarray, eval_label: np.ndarray, cfg: DataConfig,
                  options: Options | None = None) -> tuple[bytes, dict, dict | None]:
    """ranking.jsonl's bytes (one line per candidate), the manifest's summary of the lists, and the prompt
    options' counts (None without options)."""
    r = data.ratings
    user, movie, ts, rating = (r[c].to_numpy() for c in (USER, MOVIE, TIMESTAMP, RATING))
    movie_ids = data.movies[MOVIE].to_numpy()
    titles = data.movies[TITLE].to_numpy(zero_copy_only=False)
    genres = data.movies[GENRES].to_numpy(zero_copy_only=False)
    rng = np.random.default_rng([cfg.seed, 2])

    eligible = np.unique(user[eval_target[eval_label.astype(bool)]])  # users with a liked eval target
    chosen = np.sort(rng.choice(eligible, min(cfg.ranking_users, len(eligible)), replace=False))
    counts = np.bincount(np.searchsorted(movie_ids, movie), minlength=len(movie_ids)).astype(np.float64)
    starts = np.searchsorted(user, chosen, side="left")  # ratings are sorted by (user, timestamp, movie)
    ends = np.searchsorted(user, chosen, side="right")
    rows, sizes = [], []  # (user, ranking time, movie, relevant, kind, history rows) per candidate
    for u, lo, hi in zip(chosen.tolist(), starts.tolist(), ends.tolist()):
        targets = eval_target[user[eval_target] == u]
        t0 = int(ts[targets].min())
        before = np.arange(lo, hi)[ts[lo:hi] < t0][-cfg.history_len:]
        weights = counts.copy()
        weights[np.searchsorted(movie_ids, movie[lo:hi])] = 0  # never a movie the user rated
        n_neg = min(cfg.ranking_negatives, int((weights > 0).sum()))
        negatives = rng.choice(len(movie_ids), n_neg, replace=False, p=weights / weights.sum()) if n_neg else []
        candidates = [(int(movie[t]), int(rating[t] >= cfg.like_threshold), "target") for t in targets]
        candidates += [(int(movie_ids[m]), 0, "sampled") for m in negatives]
        sizes.append(len(candidates))
        for movie_id, relevant, kind in candidates:
            rows.append((u, t0, movie_id, relevant, kind, before))
    # recency histories: the user's latest ratings before the ranking time (no eval target); no target row exists
    user_of, t0_of, cand = (np.array([x[i] for x in rows], dtype=np.int64) for i in range(3))
    length = np.array([len(x[5]) for x in rows], dtype=np.int64)
    ex = Examples(np.full(len(rows), -1, dtype=np.int64),
                  np.concatenate([x[5] for x in rows]).astype(np.int64) if rows else np.zeros(0, dtype=np.int64),
                  np.repeat(np.arange(len(rows)), length), length)
    user_lines, tails, option_counts = None, (), None
    if options is not None:  # each candidate its own relevant history, statistics and estimate
        ex, (user_lines, tails), option_counts = options.render(ex, user_of, t0_of, cand)
    pos = np.searchsorted(movie_ids, cand)
    texts = render_inputs(ex.owner, titles[np.searchsorted(movie_ids, movie[ex.history])], rating[ex.history],
                          titles[pos], genres[pos], cfg.like_threshold, user_lines, tails)
    lines = [json.dumps({LIST_ID: u, USER_ID: u, MOVIE_ID: movie_id, RELEVANT: relevant, "kind": kind, TIMESTAMP: t0,
                         "instruction": cfg.instruction, "input": text}, ensure_ascii=False)
             for (u, t0, movie_id, relevant, kind, _), text in zip(rows, texts)]
    summary = {"users": len(chosen), "eligible_users": len(eligible), "negatives": cfg.ranking_negatives,
               "sampling": "popularity-weighted unrated movies",
               "candidates": int(sum(sizes)), "candidates_per_list": {"min": min(sizes, default=0),
                                                                      "max": max(sizes, default=0)}}
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b"", summary, option_counts

