import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from movierec.evaluation.metrics import (
    BLOCK_KEYS,
    auc,
    calibration_bins,
    compute_metrics,
    ece,
    uauc,
)

# Hand fixture: users 1 and 2 have both labels, user 3 only a negative.
LABELS = [1, 0, 1, 0, 1, 0]
PROBS = [0.9, 0.2, 0.6, 0.7, 0.4, 0.1]
USERS = [1, 1, 1, 2, 2, 3]
WARM = [True, True, True, False, False, False]


def test_overall_block_by_hand():
    m = compute_metrics(LABELS, PROBS, USERS)
    assert set(m) == {"overall"}
    b = m["overall"]
    assert set(b) == set(BLOCK_KEYS)
    assert b["n"] == 6
    # positives {.9,.6,.4} vs negatives {.2,.7,.1}: .9 beats 3, .6 beats 2, .4 beats 2 -> 7/9
    assert b["auc"] == pytest.approx(7 / 9)
    # user 1: both positives above its negative -> 1; user 2: .4 < .7 -> 0; user 3 skipped -> (1+0)/2
    assert b["uauc"] == pytest.approx(0.5)
    # probabilities of the true class: .9 .8 .6 .3 .4 .9, whose product is .6**6 -> -ln(.6)
    assert b["log_loss"] == pytest.approx(-math.log(0.6))
    # predictions at 0.5: 1 0 1 1 0 0 -> 4 of 6 right; TP=2 FP=1 FN=1 -> F1 = 2/3
    assert b["accuracy"] == pytest.approx(4 / 6)
    assert b["f1"] == pytest.approx(2 / 3)
    assert b["positive_rate"] == pytest.approx(0.5)
    assert b["predicted_positive_rate"] == pytest.approx(0.5)
    # ten bins: every example alone in its bin -> ECE = mean |p - y| = (.1+.2+.4+.7+.6+.1)/6
    assert b["ece"] == pytest.approx(2.1 / 6)


def test_warm_and_cold_blocks_by_hand():
    m = compute_metrics(LABELS, PROBS, USERS, warm=WARM)
    assert m["warm"]["n"] == 3 and m["cold"]["n"] == 3
    assert m["warm"]["auc"] == pytest.approx(1.0)
    assert m["warm"]["uauc"] == pytest.approx(1.0)
    # cold: positive .4 vs negatives .7 and .1 -> 1/2; only user 2 has both labels -> 0
    assert m["cold"]["auc"] == pytest.approx(0.5)
    assert m["cold"]["uauc"] == pytest.approx(0.0)
    # threshold moves accuracy: at 0.35 the cold predictions are 1 1 0 -> 2 of 3 right
    assert compute_metrics(LABELS, PROBS, USERS, warm=WARM, threshold=0.35)["cold"]["accuracy"] == pytest.approx(2 / 3)


def test_empty_group_and_single_class():
    m = compute_metrics([1, 1], [0.8, 0.3], [5, 5], warm=[True, True])
    assert m["cold"] == {"n": 0}
    assert m["warm"]["auc"] is None and m["warm"]["uauc"] is None
    assert m["warm"]["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.3)) / 2)
    assert auc([0, 0, 0], [0.1, 0.2, 0.3]) is None


def test_ece_with_shared_bins_by_hand():
    labels, probs = [0, 1, 0, 1], [0.1, 0.3, 0.2, 0.8]
    # two bins: [0, .5) holds .1 .3 .2 (mean .2, 1/3 positive, gap 2/15), [.5, 1] holds .8 (gap .2)
    # ECE = (3 * 2/15 + 1 * .2) / 4 = .15
    assert ece(labels, probs, n_bins=2) == pytest.approx(0.15)
    bins = calibration_bins(labels, probs, n_bins=2)
    assert bins["count"].tolist() == [3, 1]
    frac_pos, mean_pred = calibration_curve(labels, probs, n_bins=2)
    np.testing.assert_allclose(bins.frac_pos, frac_pos)
    np.testing.assert_allclose(bins.mean_pred, mean_pred)


def test_uauc_matches_sklearn_per_user_with_ties():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 600)
    labels = rng.integers(0, 2, 600)
    probs = rng.integers(0, 5, 600) / 4  # many ties
    expected = [roc_auc_score(labels[users == u], probs[users == u])
                for u in np.unique(users) if len(set(labels[users == u])) == 2]
    assert uauc(labels, probs, users) == pytest.approx(np.mean(expected))
    assert auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="length"):
        compute_metrics([1, 0], [0.5], [1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_metrics([1, 0], [0.5, 1.5], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        compute_metrics([2, 0], [0.5, 0.5], [1, 1])
