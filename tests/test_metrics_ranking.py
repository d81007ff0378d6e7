import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from movierec.evaluation.metrics import ranking_metrics

# List "a": relevant candidates at ranks 2 and 4 of 5. List "b": its one relevant candidate ranks first of 6.
# List "c": nothing relevant, so it is left out of every mean.
IDS = ["a"] * 5 + ["b"] * 6 + ["c"] * 3
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5] + [0.1, 0.2, 0.3, 0.4, 0.5, 0.05] + [0.3, 0.2, 0.1]
RELEVANT = [0, 1, 0, 1, 0] + [0, 0, 0, 0, 1, 0] + [0, 0, 0]
L3, L5 = 1 / math.log2(3), 1 / math.log2(5)  # gains at ranks 2 and 4


def test_ranking_by_hand():
    r = ranking_metrics(IDS, SCORES, RELEVANT, ks=(1, 3, 5), n_boot=0)
    assert r["users"] == 2 and r["users_without_relevant"] == 1
    assert r["candidates_per_user"] == {"mean": 5.5, "min": 5, "max": 6}
    # a: nothing at rank 1, a hit within 3; b: a hit at rank 1
    assert (r["hr@1"], r["hr@3"], r["hr@5"]) == (0.5, 1.0, 1.0)
    # a: ndcg@1 = 0; ndcg@3 = gain at rank 2 over the ideal of two relevant on top (1 + 1/log2 3);
    #    ndcg@5 adds the gain at rank 4. b: 1 everywhere.
    assert r["ndcg@1"] == pytest.approx(0.5)
    assert r["ndcg@3"] == pytest.approx((L3 / (1 + L3) + 1) / 2)
    assert r["ndcg@5"] == pytest.approx(((L3 + L5) / (1 + L3) + 1) / 2)
    assert r["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["tied_relevant_share"] == 0.0
    assert r["hr@1_ci95"] is None and r["mrr_ci95"] is None
    keys = {f"{m}@{k}{s}" for m in ("hr", "ndcg") for k in (1, 3, 5) for s in ("", "_ci95")}
    assert set(r) == keys | {"mrr", "mrr_ci95", "users", "users_without_relevant", "candidates_per_user",
                             "tied_relevant_share"}


def test_ties_are_broken_pessimistically_and_input_order_does_not_matter():
    # a constant scorer: the relevant candidate goes below the four tied non-relevant ones -> rank 5
    r = ranking_metrics([1] * 5, [0.5] * 5, [1, 0, 0, 0, 0], ks=(1, 5), n_boot=0)
    assert (r["hr@1"], r["hr@5"]) == (0.0, 1.0)
    assert r["ndcg@5"] == pytest.approx(1 / math.log2(6))
    assert r["mrr"] == pytest.approx(1 / 5)
    assert r["tied_relevant_share"] == 1.0
    # .7 is shared by two relevant and one non-relevant: the non-relevant takes rank 2, relevant 3 and 4
    scores, rel = [0.9, 0.7, 0.7, 0.7, 0.1], [0, 1, 0, 1, 0]
    r = ranking_metrics([1] * 5, scores, rel, ks=(2, 5), n_boot=0)
    assert r["hr@2"] == 0.0 and r["mrr"] == pytest.approx(1 / 3)
    assert r["ndcg@5"] == pytest.approx((1 / math.log2(4) + L5) / (1 + L3))
    # ties among relevant candidates alone cost nothing
    r = ranking_metrics([1] * 3, [0.9, 0.9, 0.1], [1, 1, 0], ks=(2,), n_boot=0)
    assert r["ndcg@2"] == 1.0 and r["tied_relevant_share"] == 0.0
    # the same candidates in any order give the same numbers
    ids = np.array(IDS + [7] * 5, dtype=object)
    scores = np.array(SCORES + scores)
    rel = np.array(RELEVANT + rel)
    perm = np.random.default_rng(0).permutation(ids.size)
    assert ranking_metrics(ids.astype(str), scores, rel, ks=(1, 3, 5), n_boot=50) == ranking_metrics(
        ids[perm].astype(str), scores[perm], rel[perm], ks=(1, 3, 5), n_boot=50)


def test_ndcg_matches_sklearn_and_hr_mrr_match_a_loop():
    rng = np.random.default_rng(2)
    n_lists, per = 40, 20
    rel = rng.random((n_lists, per)) < 0.2
    rel[:, 0] |= ~rel.any(axis=1)  # every list holds a relevant candidate
    scores = rng.random((n_lists, per)) + 0.3 * rel  # distinct scores
    ids = np.repeat(np.arange(n_lists), per)
    r = ranking_metrics(ids, scores.ravel(), rel.ravel(), ks=(1, 5, 10, 20), n_boot=0)
    ranks = [np.argsort(-s) for s in scores]
    first = np.array([1 + np.flatnonzero(rel[i][order])[0] for i, order in enumerate(ranks)])
    for k in (1, 5, 10, 20):
        assert r[f"ndcg@{k}"] == pytest.approx(ndcg_score(rel.astype(float), scores, k=k), abs=1e-12)
        assert r[f"hr@{k}"] == pytest.approx(np.mean(first <= k))
    assert r["mrr"] == pytest.approx(np.mean(1 / first))


def test_k_longer_than_a_list_is_a_clear_error():
    with pytest.raises(ValueError, match=r"k=10 exceeds the shortest candidate list \(5 candidates, list a\)"):
        ranking_metrics(IDS, SCORES, RELEVANT, ks=(1, 10))
    # list "c" (3 candidates) holds nothing relevant and is not scored, so k=5 is fine
    assert ranking_metrics(IDS, SCORES, RELEVANT, ks=(5,), n_boot=0)["users"] == 2
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(IDS, SCORES, RELEVANT, ks=(0,))
    with pytest.raises(ValueError, match="length"):
        ranking_metrics(IDS, SCORES[:-1], RELEVANT)
    with pytest.raises(ValueError, match="finite"):
        ranking_metrics([1, 1], [0.5, float("nan")], [1, 0], ks=(1,))


def test_no_relevant_anywhere_gives_none():
    r = ranking_metrics([1, 1, 2], [0.1, 0.2, 0.3], [0, 0, 0], ks=(1,))
    assert r["users"] == 0 and r["users_without_relevant"] == 2
    assert r["hr@1"] is None and r["mrr"] is None and r["hr@1_ci95"] is None


def test_ranking_intervals():
    rng = np.random.default_rng(3)
    n_lists, per = 400, 30
    ids = np.repeat(np.arange(n_lists), per)
    rel = rng.random(ids.size) < 0.1
    rel[::per] = True
    scores = rng.random(ids.size) + 0.5 * rel
    r = ranking_metrics(ids, scores, rel, ks=(5,), seed=1)
    for name in ("hr@5", "ndcg@5", "mrr"):
        lo, hi = r[f"{name}_ci95"]
        assert lo < r[name] < hi
    assert r == ranking_metrics(ids, scores, rel, ks=(5,), seed=1)
    few = ids < 40
    r_few = ranking_metrics(ids[few], scores[few], rel[few], ks=(5,), seed=1)
    assert r_few["mrr_ci95"][1] - r_few["mrr_ci95"][0] > 2 * (r["mrr_ci95"][1] - r["mrr_ci95"][0])
    perfect = ranking_metrics(ids, rel.astype(float), rel, ks=(1, 5))
    assert perfect["hr@1_ci95"] == [1.0, 1.0] and perfect["ndcg@5_ci95"] == [1.0, 1.0]
