"""The `mf` baseline: matrix factorisation by alternating least squares (the `implicit` library), with
each target's user vector folded in from its own history.

implicit's ALS factorises a matrix of confidences; a liked rating enters as +1 (preference 1) and a
disliked one as -1 (preference 0), both scaled by ALPHA, and an unrated pair counts as preference 0
with confidence 1, so with a large ALPHA it is close to a ridge factorisation of like/dislike over the
rated pairs, and u . v ranks the movies a user would like. The item vectors are fitted
once; a target's user vector is then solved from its history alone (implicit's `recalculate_user`: the
exact least-squares step of ALS with the item vectors fixed), so a user whose ratings came after the
fit, or whose latest ratings did, is scored from what they rated before the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from movierec.errors import UserError
from movierec.evaluation.baselines.features import Histories

# Chosen on the fit rows' AUC (never the eval's) of the demo data, ML-100K and the full-size synthetic
# set: the larger ALPHA, the more the ratings' like/dislike and the less "was it rated at all" shapes
# the vectors (fit AUC 0.71 -> 0.81 on the 25M set from alpha 10 to 10,000, +0.01 to +0.03 on the
# small ones); a ridge of 4-5x ALPHA was best on the small sets (2x lost 0.01-0.03 everywhere, 8x
# gained 0.015 on the 25M set and lost 0.02 on the small ones); 64 factors and 10-15 iterations were no
# better than 32 and 5, which are cheaper (two fits take ~30 s on 25M ratings on 2 cores).
FACTORS = 32
REGULARIZATION = 50_000.0
ALPHA = 10_000.0  # confidence of a rating; an unrated pair has confidence 1
ITERATIONS = 5
PARAMS = {"library": "implicit", "model": "AlternatingLeastSquares", "factors": FACTORS,
          "regularization": REGULARIZATION, "alpha": ALPHA, "iterations": ITERATIONS}


@dataclass(frozen=True)
class Model:
    als: object  # implicit.cpu.als.AlternatingLeastSquares
    column: np.ndarray  # movieId -> column of the fitted matrix, -1 for a movie without fitted ratings


def als_class():
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as e:
        raise UserError(f"the mf baseline needs the package implicit (pip install implicit): {e}") from None
    return AlternatingLeastSquares


def fit(stats: pd.DataFrame, threshold: float, n_movies: int, seed: int = 0) -> Model:
    """ALS on the like/dislike matrix of `stats` ratings (users and movies renumbered densely)."""
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    users, movies = stats.userId.to_numpy(), stats.movieId.to_numpy()
    row, column = _dense(users, int(users.max()) + 1), _dense(movies, n_movies)
    signs = np.where(stats.rating.to_numpy() >= threshold, 1.0, -1.0).astype(np.float32)
    matrix = csr_matrix((signs, (row[users], column[movies])), shape=(row.max() + 1, column.max() + 1))
    with threadpool_limits(limits=1, user_api="blas"):  # implicit runs its own threads (and warns otherwise)
        als = als_class()(factors=FACTORS, regularization=REGULARIZATION, alpha=ALPHA, iterations=ITERATIONS,
                           random_state=seed)
        als.fit(matrix, show_progress=False)
    return Model(als, column)


def _dense(ids: np.ndarray, size: int) -> np.ndarray:
    """id -> 0, 1, 2, ... in id order for the ids present, -1 for the others (a linear-time np.unique)."""
    present = np.bincount(ids, minlength=size) > 0
    return np.where(present, np.cumsum(present) - 1, -1)


def scores(model: Model, h: Histories, movies: np.ndarray, threshold: float) -> np.ndarray:
    """u . v per target: u folded in from the target's history, v the candidate's fitted vector (0 unfitted)."""
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    length = h.end - h.start
    owner = np.repeat(np.arange(len(length)), length)
    rows = np.repeat(h.start - np.cumsum(length) + length, length) + np.arange(len(owner))
    col = model.column[h.movie[rows]]
    seen = col >= 0  # history movies first rated after the fit carry no vector
    signs = np.where(h.rating[rows[seen]] >= threshold, 1.0, -1.0).astype(np.float32)
    matrix = csr_matrix((signs, (owner[seen], col[seen])), shape=(len(length), len(model.als.item_factors)))
    with threadpool_limits(limits=1, user_api="blas"):
        user = model.als.recalculate_user(np.arange(len(length)), matrix)
    c = model.column[movies]
    item = np.where((c >= 0)[:, None], model.als.item_factors[np.maximum(c, 0)], 0.0)
    return (np.asarray(user, dtype=np.float64).reshape(len(length), -1) * item).sum(1)
