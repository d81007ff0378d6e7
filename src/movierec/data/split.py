"""Temporal split without leakage: which ratings become train / eval targets, and their histories.

Rows are ratings sorted by (userId, timestamp, movieId) (see layouts.load).
- History: a target's history is the same user's ratings with a strictly smaller timestamp (never the
  target, never a rating from the same second), the `history_len` latest of them; within one second
  the larger movieId counts as later.
- Eval examples are independent: an eval target's history skips the other eval targets, so each eval
  rating is seen once, as its own answer, never inside another eval prompt (where its label would
  leak into another example, and a user's examples would score each other).
- Eligibility: a target needs at least `min_history` such earlier ratings.
- Cutoff: the `cutoff_quantile` of all rating timestamps (an actual timestamp, method "lower").
  Train targets are strictly earlier than it, eval targets at or after it, so every eval target is
  later than every train target. Histories of eval targets may hold ratings after the cutoff: they
  are the user's past at the time of the target, which is what a deployed model would see.
- Sampling: `n_train` and `n_eval` targets uniformly without replacement from the eligible ones,
  with independent streams from `seed` (changing n_train leaves the eval set unchanged).
- Validation (for choosing `evaluate`'s blend weight, never for training): up to n_eval eligible targets
  from the last VALID_SHARE of pre-cutoff time, [valid_from, cutoff), that the LLM never saw: neither a
  train target nor in any train example's history. Built as train examples are (their own stream from
  `seed`, so train and eval stay the same). The baselines fit their models before valid_from, so their
  scores there are out-of-sample too (baselines/__init__.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movierec.data.config import DataConfig
from movierec.errors import UserError

VALID_SHARE = 0.1  # last share of pre-cutoff time holding the validation targets (the baselines' fit window)


@dataclass(frozen=True)
class Examples:
    target: np.ndarray  # row of each example's target rating, in sampled order
    history: np.ndarray  # rows of all histories, example after example, oldest first
    owner: np.ndarray  # example index of each history row
    history_len: np.ndarray  # history rows per example


@dataclass(frozen=True)
class Split:
    cutoff: int
    train: Examples
    eval: Examples
    eligible_train: int
    eligible_eval: int
    valid: Examples
    valid_from: int
    eligible_valid: int


def split(user: np.ndarray, ts: np.ndarray, cfg: DataConfig) -> Split:
    """Sample train and eval examples from sorted ratings (see the module docstring for the rules)."""
    n = len(user)
    idx = np.arange(n, dtype=np.int64)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = user[1:] != user[:-1]
    new_second = new_user.copy()
    new_second[1:] |= ts[1:] != ts[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, idx, 0))
    second_start = np.maximum.accumulate(np.where(new_second, idx, 0))  # first row of the same second
    del idx, new_user, new_second
    earlier = second_start - user_start
    cutoff = int(np.quantile(ts, cfg.cutoff_quantile, method="lower"))
    eligible = earlier >= cfg.min_history
    train_pool = np.flatnonzero(eligible & (ts < cutoff))
    eval_pool = np.flatnonzero(eligible & (ts >= cutoff))
    if len(train_pool) < cfg.n_train or len(eval_pool) < cfg.n_eval:
        raise UserError(
            f"too few eligible examples: {len(train_pool):,} train targets before the cutoff {cutoff} and "
            f"{len(eval_pool):,} eval targets after it (with at least min_history={cfg.min_history} earlier "
            f"ratings), but n_train={cfg.n_train:,} and n_eval={cfg.n_eval:,} requested; lower them or "
            f"min_history, or move cutoff_quantile={cfg.cutoff_quantile}")
    train = np.random.default_rng([cfg.seed, 0]).choice(train_pool, cfg.n_train, replace=False)
    train_ex = _examples(train, second_start[train], earlier[train], cfg.history_len)
    chosen = np.random.default_rng([cfg.seed, 1]).choice(eval_pool, cfg.n_eval, replace=False)
    valid_from = window_start(ts[ts < cutoff])
    seen = np.zeros(n, dtype=bool)  # rows the LLM reads in training, as a target or in a history
    seen[train_ex.target] = seen[train_ex.history] = True
    valid_pool = np.flatnonzero(eligible & (ts >= valid_from) & (ts < cutoff) & ~seen)
    valid = np.random.default_rng([cfg.seed, 2]).choice(valid_pool, min(cfg.n_eval, len(valid_pool)), replace=False)
    return Split(cutoff, train_ex, _eval_examples(chosen, cfg, second_start, user_start, n),
                 len(train_pool), len(eval_pool),
                 _examples(valid, second_start[valid], earlier[valid], cfg.history_len), valid_from, len(valid_pool))


def window_start(pre_cutoff_ts: np.ndarray) -> int:
    """Start of the last VALID_SHARE of pre-cutoff timestamps: validation targets and the baselines' fit rows
    lie at or after it, and the baselines' validation-side models are fitted on ratings before it."""
    return int(np.quantile(np.asarray(pre_cutoff_ts), 1 - VALID_SHARE))


def _eval_examples(chosen: np.ndarray, cfg: DataConfig, second_start: np.ndarray, user_start: np.ndarray,
                   n_rows: int) -> Examples:
    """Eval examples whose histories skip every other eval target.

    Skipping never leaves fewer than min_history ratings: the eval targets among a target's earlier
    ratings are eligible themselves, so each lies at least min_history rows after its user's first.
    """
    kept = np.ones(n_rows, dtype=bool)
    kept[chosen] = False
    before = np.concatenate([[0], np.cumsum(kept)])  # kept rows before each row index
    earlier = before[second_start[chosen]] - before[user_start[chosen]]
    assert (earlier >= cfg.min_history).all()
    return _examples(chosen, before[second_start[chosen]], earlier, cfg.history_len, rows=np.flatnonzero(kept))


def _examples(target: np.ndarray, end: np.ndarray, earlier: np.ndarray, history_len: int,
              rows: np.ndarray | None = None) -> Examples:
    """History rows [end - h, end) per target, h = min(history_len, earlier); positions index `rows`
    (the rows a history may use) when given, else the rows themselves."""
    length = np.minimum(earlier, history_len)
    owner = np.repeat(np.arange(len(target)), length)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(length) - length, length)
    history = np.repeat(end - length, length) + offset
    return Examples(target, history if rows is None else rows[history], owner, length)
