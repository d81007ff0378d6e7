"""Features of targets (user, movie, time): movie side from a fixed set of ratings, user side from the
user's own ratings strictly before the target's time.

Everything is vectorised: a user's ratings are one contiguous, time-sorted slice of the known ratings,
so any sum over "the user's ratings before time t" is a difference of two cumulative sums, whatever the
number of targets (500,000 fit rows or 5,000 eval examples) and the length of their histories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SHRINK = 10.0  # pseudo-ratings pulling a mean toward its prior: a movie with 10 ratings sits halfway
FEATURES = ["user_n", "user_mean", "user_like", "user_bias", "movie_n", "movie_mean", "movie_like",
            "genre_n", "genre_like", "genre_mean"]


@dataclass(frozen=True)
class Histories:
    """The ratings targets may draw on, sorted by user then time, and each target's slice of them:
    rows [start, end) are its user's ratings with a timestamp strictly below the target's."""

    movie: np.ndarray
    rating: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def take(self, idx: np.ndarray) -> Histories:
        """The histories of targets `idx` only (same known ratings)."""
        return Histories(self.movie, self.rating, self.start[idx], self.end[idx])


def histories(known: pd.DataFrame, users: np.ndarray, times: np.ndarray) -> Histories:
    """Each target's (users[i], times[i]) history among `known` ratings (userId, movieId, rating, timestamp)."""
    users, times = np.asarray(users, dtype=np.int64), np.asarray(times, dtype=np.int64)
    known = known[known.userId.isin(np.unique(users))]  # only the targets' users matter
    u = known.userId.to_numpy(np.int64)
    t = known.timestamp.to_numpy(np.int64)
    order = np.lexsort((t, u))
    u, t = u[order], t[order]
    # one sortable int64 key per (user, time); users * span + offset stays far below 2**63
    t0 = min(t.min(initial=times.min()), times.min())
    span = max(t.max(initial=times.max()), times.max()) - t0 + 1
    key = u * span + (t - t0)
    return Histories(known.movieId.to_numpy(np.int64)[order], known.rating.to_numpy(np.float64)[order],
                     np.searchsorted(key, users * span), np.searchsorted(key, users * span + (times - t0)))


def genre_matrix(movies: pd.DataFrame, size: int) -> np.ndarray:
    """Bool matrix [movieId, genre]; "(no genres listed)" and unknown movies have no genre."""
    g = movies.set_index("movieId")["genres"].str.get_dummies(sep="|")
    g = g.drop(columns=["(no genres listed)"], errors="ignore")
    out = np.zeros((size, g.shape[1]), dtype=np.float32)
    ids = g.index.to_numpy()
    keep = ids < size
    out[ids[keep]] = g.to_numpy(dtype=np.float32)[keep]
    return out


def _shrunk(total: np.ndarray, count: np.ndarray, prior) -> np.ndarray:
    return (total + SHRINK * prior) / (count + SHRINK)


def _slice_sums(values: np.ndarray, h: Histories) -> np.ndarray:
    """Sum of `values` (one per known rating) over each target's history."""
    cum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cum[h.end] - cum[h.start]


def features(stats: pd.DataFrame, h: Histories, movies: np.ndarray, genres: np.ndarray,
             threshold: float) -> pd.DataFrame:
    """Features of the targets whose histories are `h` and candidates `movies`.

    Movie-side features (and the global mean and like rate every shrinkage pulls toward) come from
    `stats` ratings; user-side ones from each target's history, all of it (a mean over a user's
    whole past is steadier than over the latest 10, and cumulative sums make length free).
    """
    r = stats.rating.to_numpy(np.float64)
    like = r >= threshold
    mu, like_rate = r.mean(), like.mean()
    n_movies = genres.shape[0]
    m = stats.movieId.to_numpy()
    m_n = np.bincount(m, minlength=n_movies).astype(np.float64)
    m_mean = _shrunk(np.bincount(m, weights=r, minlength=n_movies), m_n, mu)
    m_like = _shrunk(np.bincount(m, weights=like, minlength=n_movies), m_n, like_rate)

    h_like = (h.rating >= threshold).astype(np.float64)
    u_n = (h.end - h.start).astype(np.float64)
    u_mean = _shrunk(_slice_sums(h.rating, h), u_n, mu)
    u_like = _shrunk(_slice_sums(h_like, h), u_n, like_rate)
    u_bias = _shrunk(_slice_sums(h.rating - m_mean[h.movie], h), u_n, 0.0)  # how much kinder than others

    # ratings of the target's genres in the history, weighted by genres shared (as a user x genre
    # table pooled over the target's genres would be), one genre column at a time to stay small
    target_genres = genres[movies]
    g_n, g_like, g_sum = (np.zeros(len(movies)) for _ in range(3))
    for k in np.flatnonzero(target_genres.any(0)):
        in_k = genres[h.movie, k].astype(np.float64)
        g_n += target_genres[:, k] * _slice_sums(in_k, h)
        g_like += target_genres[:, k] * _slice_sums(in_k * h_like, h)
        g_sum += target_genres[:, k] * _slice_sums(in_k * h.rating, h)
    return pd.DataFrame({
        "user_n": u_n, "user_mean": u_mean, "user_like": u_like, "user_bias": u_bias,
        "movie_n": m_n[movies], "movie_mean": m_mean[movies], "movie_like": m_like[movies],
        "genre_n": g_n,
        "genre_like": _shrunk(g_like, g_n, u_like),
        "genre_mean": _shrunk(g_sum, g_n, u_mean),
    })
