"""`compute_metrics`: the one block format used everywhere (evaluate, baselines, report):
overall, and warm/cold when the caller says which examples are warm."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, f1_score, log_loss

from movierec.evaluation.metrics.binary import _as_probs, auc, ece, uauc
from movierec.evaluation.metrics.bootstrap import _check_n_boot, bootstrap_ci95

BLOCK_KEYS = ("n", "auc", "auc_ci95", "uauc", "uauc_ci95", "log_loss", "log_loss_ci95", "accuracy", "f1",
              "positive_rate", "predicted_positive_rate", "ece")


def _block(y: np.ndarray, p: np.ndarray, users: np.ndarray, threshold: float, n_bins: int, n_boot: int,
           seed: int) -> dict:
    if y.size == 0:
        return {"n": 0}
    pred = (p >= threshold).astype(np.int64)
    ci = bootstrap_ci95(y, p, users, n_boot, seed)
    return {
        "n": int(y.size),
        "auc": auc(y, p),
        "auc_ci95": ci["auc_ci95"],
        "uauc": uauc(y, p, users),
        "uauc_ci95": ci["uauc_ci95"],
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "log_loss_ci95": ci["log_loss_ci95"],
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(pred.mean()),
        "ece": ece(y, p, n_bins),
    }


def compute_metrics(labels: ArrayLike, probs: ArrayLike, user_ids: ArrayLike, warm: ArrayLike | None = None,
                    threshold: float = 0.5, n_bins: int = 10, n_boot: int = 1000, seed: int = 0) -> dict:
    """Metric blocks for binary Yes/No predictions.

    Args:
        labels: 0/1 truth per example.
        probs: P(label = 1) per example, in [0, 1].
        user_ids: user per example (for UAUC and the user-level bootstrap).
        warm: optional bool per example; adds "warm" and "cold" blocks.
        threshold: a prediction is positive when prob >= threshold (accuracy, F1, predicted rate).
        n_bins: equal-width bins for ECE.
        n_boot: user-level bootstrap resamples for the 95% intervals (0: no intervals). Each block
            resamples its own users (see `movierec.evaluation.metrics.bootstrap`).
        seed: the bootstrap's seed; the same seed gives the same intervals.

    Returns:
        {"overall": block} plus "warm"/"cold" blocks, each with the keys in BLOCK_KEYS: AUC/UAUC/ECE None
        where undefined, each *_ci95 a [low, high] percentile interval or None (undefined, or n_boot=0);
        an empty group's block is {"n": 0}.
    """
    _check_n_boot(n_boot)
    y, p = _as_probs(labels, probs)
    users = np.asarray(user_ids).ravel()
    if users.size != y.size:
        raise ValueError(f"user_ids and labels differ in length: {users.size} vs {y.size}")
    out = {"overall": _block(y, p, users, threshold, n_bins, n_boot, seed)}
    if warm is not None:
        w = np.asarray(warm, dtype=bool).ravel()
        if w.size != y.size:
            raise ValueError(f"warm and labels differ in length: {w.size} vs {y.size}")
        out["warm"] = _block(y[w], p[w], users[w], threshold, n_bins, n_boot, seed)
        out["cold"] = _block(y[~w], p[~w], users[~w], threshold, n_bins, n_boot, seed)
    return out
