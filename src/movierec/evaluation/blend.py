"""The `llm+mf` blend: the fine-tuned LLM's P(Yes) and the mf baseline's P(like), averaged on the logit scale.

    blend_w = sigmoid(w * logit(P(Yes)) + (1 - w) * logit(P_mf(like)))     w = 0: mf, w = 1: the LLM

Logits, not probabilities: the two models are calibrated differently (a fine-tuned LLM's P(Yes) often
sits in a narrow band, mf's goes through a logistic map), and a probability average lets the one with
the wider spread decide the order whatever w says; a logit average is a logistic-regression stack whose
weights sum to 1. w is picked on a grid by AUC on the validation examples (data/split.py: train-period
targets the LLM never read, scored by an mf fitted before them), never on eval examples: AUC is what the
blend is meant to raise, and it ignores calibration, which one weight could not fix anyway.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from movierec.evaluation.metrics import auc

NAME = "llm+mf"
GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # steps of 0.05: finer moves validation AUC by noise only
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit
RULE = ("sigmoid(w * logit(P_llm) + (1 - w) * logit(P_mf)); w on the grid 0, 0.05, ..., 1 maximizing AUC on the "
        "validation examples (ties: the smallest w)")


def blend(p_llm: ArrayLike, p_mf: ArrayLike, weight: float) -> np.ndarray:
    """The blended probability per example (see the module docstring)."""
    def logit(p: ArrayLike) -> np.ndarray:
        p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
        return np.log(p) - np.log1p(-p)

    return 1.0 / (1.0 + np.exp(-(weight * logit(p_llm) + (1 - weight) * logit(p_mf))))


def choose_weight(labels: ArrayLike, p_llm: ArrayLike, p_mf: ArrayLike) -> tuple[float, list[float | None]]:
    """The grid weight with the highest AUC of the blend on these (validation) examples, and the AUC at each
    grid weight (None where undefined: a single label)."""
    aucs = [auc(labels, blend(p_llm, p_mf, w)) for w in GRID]
    if all(a is None for a in aucs):
        raise ValueError("validation labels hold a single class: no AUC to pick a weight by")
    best = int(np.argmax([-np.inf if a is None else a for a in aucs]))  # argmax: the first (smallest w) of ties
    return float(GRID[best]), aucs
