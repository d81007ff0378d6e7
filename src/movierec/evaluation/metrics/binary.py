"""Binary Yes/No metrics on one set of predictions: pure functions over arrays, backed by scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score


def _as_arrays(labels: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probs differ in length: {y.size} vs {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("probs must be finite")
    return y, p


def _as_probs(labels: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, p = _as_arrays(labels, probs)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1]")
    return y, p


def auc(labels: ArrayLike, probs: ArrayLike) -> float | None:
    """ROC AUC, or None when only one class is present (AUC is undefined then)."""
    y, p = _as_arrays(labels, probs)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def per_user_auc(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike) -> pd.Series:
    """AUC of each user who has both a positive and a negative example, indexed by user id (sorted).

    Per-user AUC is the Mann-Whitney statistic from average ranks within the user, which equals
    `roc_auc_score` per user (ties count one half) without a Python loop over users.
    """
    y, p = _as_arrays(labels, probs)
    users = np.asarray(user_ids).ravel()
    if users.size != y.size:
        raise ValueError(f"user_ids and labels differ in length: {users.size} vs {y.size}")
    df = pd.DataFrame({"u": users, "y": y, "p": p})
    df["rank"] = df.groupby("u")["p"].rank(method="average")
    df["pos_rank"] = df["rank"] * df["y"]
    g = df.groupby("u").agg(n=("y", "size"), n_pos=("y", "sum"), pos_rank=("pos_rank", "sum"))
    g = g[(g.n_pos > 0) & (g.n_pos < g.n)]
    return (g.pos_rank - g.n_pos * (g.n_pos + 1) / 2) / (g.n_pos * (g.n - g.n_pos))


def uauc(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike) -> float | None:
    """Mean per-user AUC over users who have both a positive and a negative example (None if none has)."""
    per_user = per_user_auc(labels, probs, user_ids)
    return None if per_user.empty else float(per_user.mean())


def example_log_loss(labels: ArrayLike, probs: ArrayLike) -> np.ndarray:
    """Each example's log loss, clipped as `sklearn.metrics.log_loss` clips (float64 eps), so that any
    weighted mean of these equals `log_loss(..., sample_weight=w)`."""
    y, p = _as_probs(labels, probs)
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(np.where(y == 1, p, 1 - p), eps, 1 - eps))


def calibration_bins(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins over [0, 1]: per non-empty bin the mean prediction, the share of positives
    and the count. Bins are [lo, hi) except the last, which includes 1.0."""
    y, p = _as_probs(labels, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    keep = count > 0
    return pd.DataFrame({
        "lo": edges[:-1][keep], "hi": edges[1:][keep], "count": count[keep],
        "mean_pred": sum_p[keep] / count[keep], "frac_pos": sum_y[keep] / count[keep],
    })


def ece(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> float | None:
    """Expected calibration error: count-weighted mean |mean prediction - share of positives|."""
    bins = calibration_bins(labels, probs, n_bins)
    if bins.empty:
        return None
    gap = (bins.mean_pred - bins.frac_pos).abs()
    return float((gap * bins["count"]).sum() / bins["count"].sum())
