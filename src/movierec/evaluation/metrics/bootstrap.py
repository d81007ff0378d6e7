"""User-level bootstrap: 95% intervals for AUC, UAUC and log loss, and paired model comparisons.

A user's examples are not independent (one taste behind them all), so a resample draws USERS with
replacement, as many as there are, and an example weighs its user's multiplicity. The percentile
interval over `n_boot` resamples is reported; resamples where a metric is undefined (one class only)
are left out of its interval.

Speed: every statistic is a ratio of sums that are linear in the resample's user counts m. Log loss
and UAUC are m @ (per-user sums); AUC, with the negatives sorted by score once, is a running sum of
gathered user counts read off at each positive (see `_AucIndex`). So the data are summarised once and
a chunk of resamples costs a few gathers, one cumulative sum and matrix products: no sort and no
sklearn call per resample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import log_loss

from movierec.evaluation.metrics.binary import (
    _as_arrays,
    _as_probs,
    auc,
    example_log_loss,
    per_user_auc,
    uauc,
)

METRICS = ("auc", "uauc", "log_loss")
HIGHER_IS_BETTER = {"auc": True, "uauc": True, "log_loss": False}
CHUNK = 16  # resamples evaluated together; small enough for the gathered arrays to stay in cache (64: 2-3x slower)


def resample_counts(n_users: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """User multiplicities, in chunks of up to CHUNK resamples: float arrays (chunk, n_users), row b
    counting how often each user was drawn among n_users draws with replacement. The draws depend only
    on (n_users, n_boot, seed), so two models scored on the same users see the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, CHUNK):
        rows = min(CHUNK, n_boot - start)
        drawn = rng.integers(0, n_users, size=(rows, n_users)) + n_users * np.arange(rows)[:, None]
        # bincount over (row, user) pairs: ~10x faster than rng.multinomial for many users
        yield np.bincount(drawn.ravel(), minlength=rows * n_users).reshape(rows, n_users).astype(np.float64)


def ci95(stats: ArrayLike) -> list[float] | None:
    """[2.5th, 97.5th] percentile of the finite values (linear interpolation); None when there are none."""
    s = np.asarray(stats, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    lo, hi = np.percentile(s, [2.5, 97.5])
    return [float(lo), float(hi)]


class _AucIndex:
    """Weighted AUC for many weight vectors over units (users, or single examples) at once.

    Negatives are sorted by score once; each positive records how many negatives score below it (`lo`)
    and at most its score (`hi`). For unit weights m, a positive's credit is the negative weight below
    it plus half the tied negative weight, 0.5 * (cum[lo] + cum[hi]) with cum the running negative
    weight, as `roc_auc_score` counts. With integer weights every sum is exact.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, units: np.ndarray, n_units: int):
        is_pos = y == 1
        order = np.argsort(p[~is_pos], kind="stable")
        neg_p = p[~is_pos][order]
        self.neg_units, self.pos_units = units[~is_pos][order], units[is_pos]
        self.lo = np.searchsorted(neg_p, p[is_pos], side="left")
        self.hi = np.searchsorted(neg_p, p[is_pos], side="right")
        self.tied = np.flatnonzero(self.lo != self.hi)
        self.n_pos = np.bincount(self.pos_units, minlength=n_units).astype(np.float64)
        self.n_neg = np.bincount(self.neg_units, minlength=n_units).astype(np.float64)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        """AUC for each row of unit weights m (rows, n_units); NaN where a row weighs a class zero."""
        cum = np.zeros((m.shape[0], self.neg_units.size + 1))
        np.cumsum(np.take(m, self.neg_units, axis=1), axis=1, out=cum[:, 1:])  # np.take: ~10x m[:, idx]
        credit = np.take(cum, self.lo, axis=1)
        if self.tied.size:
            credit[:, self.tied] = 0.5 * (credit[:, self.tied] + cum[:, self.hi[self.tied]])
        num = np.einsum("rn,rn->r", np.take(m, self.pos_units, axis=1), credit)
        den = (m @ self.n_pos) * (m @ self.n_neg)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)


def weighted_auc(labels: ArrayLike, probs: ArrayLike, sample_weight: ArrayLike) -> float | None:
    """ROC AUC with example weights, equal to `roc_auc_score(labels, probs, sample_weight=w)`;
    None when either class has zero weight."""
    y, p = _as_arrays(labels, probs)
    w = np.asarray(sample_weight, dtype=np.float64).ravel()
    if w.size != y.size:
        raise ValueError(f"sample_weight and labels differ in length: {w.size} vs {y.size}")
    value = _AucIndex(y, p, np.arange(y.size), y.size)(w[None, :])[0]
    return None if np.isnan(value) else float(value)


def _user_codes(user_ids: ArrayLike, n: int) -> tuple[np.ndarray, int]:
    users = np.asarray(user_ids).ravel()
    if users.size != n:
        raise ValueError(f"user_ids and labels differ in length: {users.size} vs {n}")
    if n == 0:
        raise ValueError("no examples to bootstrap")
    uniq, codes = np.unique(users, return_inverse=True)
    return codes.ravel(), uniq.size


class _UserSums:
    """One model's predictions summarised for the bootstrap (built once, then evaluated per chunk)."""

    def __init__(self, y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_users: int):
        self.auc = _AucIndex(y, p, codes, n_users)
        per_user = per_user_auc(y, p, codes)  # indexed by user code
        self.user_auc = np.zeros(n_users)
        self.user_auc[per_user.index.to_numpy()] = per_user.to_numpy()
        self.has_auc = np.zeros(n_users)
        self.has_auc[per_user.index.to_numpy()] = 1.0
        self.loss = np.bincount(codes, weights=example_log_loss(y, p), minlength=n_users)
        self.count = np.bincount(codes, minlength=n_users).astype(np.float64)

    def stats(self, m: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric for each row of user counts m (chunk, n_users); NaN where undefined."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"auc": self.auc(m),
                    "uauc": (m @ self.user_auc) / (m @ self.has_auc),
                    "log_loss": (m @ self.loss) / (m @ self.count)}


def _check_n_boot(n_boot: int) -> None:
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a whole number >= 0, got {n_boot}")


def user_bootstrap(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """AUC, UAUC and log loss of each user-level resample.

    Returns:
        {"auc", "uauc", "log_loss"} -> float array of n_boot values, NaN where the resample leaves the
        metric undefined. Resample b weighs each example by its user's count in row b of
        `resample_counts(n_users, n_boot, seed)`, users numbered in sorted order of their ids.
    """
    _check_n_boot(n_boot)
    y, p = _as_probs(labels, probs)
    codes, n_users = _user_codes(user_ids, y.size)
    sums = _UserSums(y, p, codes, n_users)
    parts = [sums.stats(m) for m in resample_counts(n_users, n_boot, seed)]
    return {k: np.concatenate([s[k] for s in parts]) if parts else np.empty(0) for k in METRICS}


def bootstrap_ci95(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, list[float] | None]:
    """{"auc_ci95", "uauc_ci95", "log_loss_ci95"} -> [low, high] or None (undefined, or n_boot=0)."""
    if n_boot == 0:
        return {f"{k}_ci95": None for k in METRICS}
    return {f"{k}_ci95": ci95(v) for k, v in user_bootstrap(labels, probs, user_ids, n_boot, seed).items()}


def _points(y: np.ndarray, p: np.ndarray, users: np.ndarray) -> dict[str, float | None]:
    return {"auc": auc(y, p), "uauc": uauc(y, p, users), "log_loss": float(log_loss(y, p, labels=[0, 1]))}


def paired_bootstrap(labels: ArrayLike, probs_a: ArrayLike, probs_b: ArrayLike, user_ids: ArrayLike,
                     n_boot: int = 1000, seed: int = 0) -> dict:
    """Model a vs model b on the same examples, each resample of users applied to both.

    Returns:
        {"n_boot", "seed", "users", and for each of "auc", "uauc", "log_loss":
         {"a", "b": the full-data values, "diff": a - b, "diff_ci95": [low, high] of a - b over resamples,
          "share_a_better": share of resamples where a is better (AUC/UAUC higher, log loss LOWER),
          a tie counting one half}}; None where undefined.
    """
    _check_n_boot(n_boot)
    y, pa = _as_probs(labels, probs_a)
    _, pb = _as_probs(labels, probs_b)
    codes, n_users = _user_codes(user_ids, y.size)
    sa, sb = _UserSums(y, pa, codes, n_users), _UserSums(y, pb, codes, n_users)
    diffs: dict[str, list[np.ndarray]] = {k: [np.empty(0)] for k in METRICS}
    for m in resample_counts(n_users, n_boot, seed):
        a, b = sa.stats(m), sb.stats(m)
        for k in METRICS:
            diffs[k].append(a[k] - b[k])
    point_a, point_b = _points(y, pa, codes), _points(y, pb, codes)
    out: dict = {"n_boot": int(n_boot), "seed": seed, "users": n_users}
    for k in METRICS:
        d = np.concatenate(diffs[k])
        d = d[np.isfinite(d)]
        better = d if HIGHER_IS_BETTER[k] else -d
        a, b = point_a[k], point_b[k]
        out[k] = {"a": a, "b": b, "diff": None if a is None or b is None else a - b, "diff_ci95": ci95(d),
                  "share_a_better": float(np.mean((better > 0) + 0.5 * (better == 0))) if d.size else None}
    return out
