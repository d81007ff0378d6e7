"""Recommendation-quality metrics: pure functions over arrays, backed by scikit-learn.

`compute_metrics` is the one block format used everywhere (evaluate, baselines, report):
overall, and warm/cold when the caller says which users are warm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

BLOCK_KEYS = ("n", "auc", "uauc", "log_loss", "accuracy", "f1", "positive_rate", "predicted_positive_rate", "ece")


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


def auc(labels: ArrayLike, probs: ArrayLike) -> float | None:
    """ROC AUC, or None when only one class is present (AUC is undefined then)."""
    y, p = _as_arrays(labels, probs)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def uauc(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike) -> float | None:
    """Mean per-user AUC over users who have both a positive and a negative example.

    Per-user AUC is the Mann-Whitney statistic from average ranks within the user, which equals
    `roc_auc_score` per user (ties count one half) without a Python loop over users.
    """
    y, p = _as_arrays(labels, probs)
    df = pd.DataFrame({"u": np.asarray(user_ids).ravel(), "y": y, "p": p})
    if len(df) != y.size:
        raise ValueError("user_ids and labels differ in length")
    df["rank"] = df.groupby("u")["p"].rank(method="average")
    df["pos_rank"] = df["rank"] * df["y"]
    g = df.groupby("u").agg(n=("y", "size"), n_pos=("y", "sum"), pos_rank=("pos_rank", "sum"))
    g = g[(g.n_pos > 0) & (g.n_pos < g.n)]
    if g.empty:
        return None
    n_neg = g.n - g.n_pos
    per_user = (g.pos_rank - g.n_pos * (g.n_pos + 1) / 2) / (g.n_pos * n_neg)
    return float(per_user.mean())


def calibration_bins(labels: ArrayLike, probs: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins over [0, 1]: per non-empty bin the mean prediction, the share of positives
    and the count. Bins are [lo, hi) except the last, which includes 1.0."""
    y, p = _as_arrays(labels, probs)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1]")
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


def _block(y: np.ndarray, p: np.ndarray, users: np.ndarray, threshold: float, n_bins: int) -> dict:
    if y.size == 0:
        return {"n": 0}
    pred = (p >= threshold).astype(np.int64)
    return {
        "n": int(y.size),
        "auc": auc(y, p),
        "uauc": uauc(y, p, users),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(pred.mean()),
        "ece": ece(y, p, n_bins),
    }


def compute_metrics(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike, warm: ArrayLike | None = None,
                    threshold: float = 0.5, n_bins: int = 10) -> dict:
    """Metric blocks for binary Yes/No predictions.

    Args:
        labels: 0/1 truth per example.
        probs: P(label = 1) per example, in [0, 1].
        user_ids: user per example (for UAUC).
        warm: optional bool per example; adds "warm" and "cold" blocks.
        threshold: a prediction is positive when prob >= threshold (accuracy, F1, predicted rate).
        n_bins: equal-width bins for ECE.

    Returns:
        {"overall": block} plus "warm"/"cold" blocks, each with the keys in BLOCK_KEYS
        (AUC/UAUC/ECE None where undefined); an empty group's block is {"n": 0}.
    """
    y, p = _as_arrays(labels, probs)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probs must lie in [0, 1]")
    users = np.asarray(user_ids).ravel()
    if users.size != y.size:
        raise ValueError(f"user_ids and labels differ in length: {users.size} vs {y.size}")
    out = {"overall": _block(y, p, users, threshold, n_bins)}
    if warm is not None:
        w = np.asarray(warm, dtype=bool).ravel()
        if w.size != y.size:
            raise ValueError(f"warm and labels differ in length: {w.size} vs {y.size}")
        out["warm"] = _block(y[w], p[w], users[w], threshold, n_bins)
        out["cold"] = _block(y[~w], p[~w], users[~w], threshold, n_bins)
    return out
