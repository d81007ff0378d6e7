"""Ranking metrics over candidate lists: HR@k, NDCG@k (binary gains) and MRR, with user-level intervals.

A list is one user's candidates (their liked eval targets are the relevant ones; their other eval
targets and sampled unrated movies are not). Input is flat: one row per candidate with its list id.

Ties are broken PESSIMISTICALLY: within equal scores the non-relevant candidates rank first. The rule
is deterministic and gives a lower bound; a constant scorer (or a coarse one, e.g. popularity counts)
earns no credit from ties, where "average" or input-order rules would hand it chance-level or
order-dependent hits. `tied_relevant_share` says how much the rule mattered: the share of relevant
candidates tied with a non-relevant one of the same list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from movierec.evaluation.metrics.bootstrap import _check_n_boot, ci95, resample_counts


def _ranks(codes: np.ndarray, scores: np.ndarray, rel: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, float]:
    """1-based rank of each candidate within its list (score descending, non-relevant first among ties),
    and the share of relevant candidates tied with a non-relevant one."""
    order = np.lexsort((rel, -scores, codes))
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(codes.size, dtype=np.int64)
    rank[order] = np.arange(codes.size) - starts[codes[order]] + 1
    c, s, r = codes[order], scores[order], rel[order]
    block = np.cumsum(np.r_[True, (c[1:] != c[:-1]) | (s[1:] != s[:-1])]) - 1  # tie blocks, in sorted order
    has_nonrel = np.bincount(block, weights=(~r).astype(np.float64)) > 0
    n_rel = r.sum()
    tied = float((r & has_nonrel[block]).sum() / n_rel) if n_rel else 0.0
    return rank, tied


def ranking_metrics(list_ids: ArrayLike, scores: ArrayLike, relevant: ArrayLike, ks: Sequence[int] = (1, 5, 10),
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """Hit rate, NDCG and MRR over candidate lists.

    Args:
        list_ids: list (user) of each candidate.
        scores: each candidate's score, higher = recommended first.
        relevant: whether each candidate is relevant (bool or 0/1).
        ks: cut-offs; each must be <= the length of every scored list.
        n_boot: list-level (= user-level) bootstrap resamples for 95% intervals; 0: none.
        seed: the bootstrap's seed.

    Returns:
        {"hr@k", "ndcg@k" for each k, "mrr": means over the lists that hold a relevant candidate,
         "hr@k_ci95", "ndcg@k_ci95", "mrr_ci95": [low, high] or None (n_boot=0),
         "users": lists scored, "users_without_relevant": lists left out (no relevant candidate),
         "candidates_per_user": {"mean", "min", "max"} over the scored lists,
         "tied_relevant_share": see the module docstring}.
        hr@k: share of lists with a relevant candidate in the top k. ndcg@k: DCG@k (gain 1/log2(rank+1)
        per relevant candidate) over the ideal DCG of min(relevant count, k) relevant candidates on top.
        mrr: mean of 1 / rank of the first relevant candidate. With no scored list every metric is None.

    Raises:
        ValueError: mismatched lengths, non-finite scores, bad ks, or a k longer than a scored list.
    """
    _check_n_boot(n_boot)
    ids, s, rel, ks = _checked(list_ids, scores, relevant, ks)
    uniq, codes = np.unique(ids, return_inverse=True)
    codes = codes.ravel()
    sizes = np.bincount(codes, minlength=uniq.size)
    n_rel = np.bincount(codes, weights=rel, minlength=uniq.size).astype(np.int64)
    keep = n_rel > 0
    out: dict = {}
    if not keep.any():
        for k in ks:
            out.update({f"hr@{k}": None, f"hr@{k}_ci95": None, f"ndcg@{k}": None, f"ndcg@{k}_ci95": None})
        return {**out, "mrr": None, "mrr_ci95": None, "users": 0, "users_without_relevant": int(uniq.size),
                "candidates_per_user": None, "tied_relevant_share": None}
    shortest = int(np.argmin(np.where(keep, sizes, np.iinfo(np.int64).max)))
    if max(ks) > sizes[shortest]:
        raise ValueError(f"k={max(ks)} exceeds the shortest candidate list ({sizes[shortest]} candidates, list "
                         f"{uniq[shortest]}): lower k or give every user at least {max(ks)} candidates")

    rank, tied = _ranks(codes, s, rel, sizes)
    per_list = _per_list(rank, codes, rel, n_rel, keep, ks)

    n_lists = int(keep.sum())
    boot = {name: [] for name in per_list}
    for m in resample_counts(n_lists, n_boot, seed):
        for name, v in per_list.items():
            boot[name].append(m @ v / n_lists)
    for name, v in per_list.items():
        out[name] = float(v.mean())
        out[f"{name}_ci95"] = ci95(np.concatenate(boot[name])) if n_boot else None
    kept = sizes[keep]
    return {**out, "users": n_lists, "users_without_relevant": int(uniq.size - n_lists),
            "candidates_per_user": {"mean": float(kept.mean()), "min": int(kept.min()), "max": int(kept.max())},
            "tied_relevant_share": tied}


def _checked(list_ids: ArrayLike, scores: ArrayLike, relevant: ArrayLike,
             ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """ranking_metrics' inputs as flat arrays (relevant as bool) and ks as ints, or a ValueError saying why not."""
    ids = np.asarray(list_ids).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    rel_in = np.asarray(relevant).ravel()
    if not ids.size == s.size == rel_in.size:
        raise ValueError(f"list_ids, scores and relevant differ in length: {ids.size}, {s.size}, {rel_in.size}")
    if not np.isin(rel_in, (0, 1)).all():
        raise ValueError("relevant must be bool or 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be whole numbers >= 1, got {ks}")
    return ids, s, rel_in.astype(bool), ks


def _per_list(rank: np.ndarray, codes: np.ndarray, rel: np.ndarray, n_rel: np.ndarray, keep: np.ndarray,
              ks: list[int]) -> dict[str, np.ndarray]:
    """HR@k, NDCG@k and the reciprocal rank of every list that holds a relevant candidate."""
    n = n_rel.size
    rr, rc = rank[rel], codes[rel]
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, rc, rr)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))
    per_list = {}
    for k in ks:
        per_list[f"hr@{k}"] = (first <= k).astype(np.float64)
        dcg = np.bincount(rc, weights=np.where(rr <= k, 1.0 / np.log2(rr + 1), 0.0), minlength=n)
        per_list[f"ndcg@{k}"] = dcg / ideal[np.clip(np.minimum(n_rel, k), 1, None) - 1]
    per_list["mrr"] = 1.0 / np.where(keep, first, 1)
    return {name: v[keep] for name, v in per_list.items()}
