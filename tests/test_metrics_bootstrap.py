import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from movierec.evaluation.metrics import (
    BLOCK_KEYS,
    auc,
    ci95,
    compute_metrics,
    paired_bootstrap,
    resample_counts,
    uauc,
    user_bootstrap,
    weighted_auc,
)

# Two users, one positive and one negative each. User "A" is ranked perfectly, user "B" inverted.
# A resample draws two users: AA (prob 1/4), AB (1/2) or BB (1/4).
#   AUC:  AA -> 1; BB -> 0; AB pools positives {.9, .4} vs negatives {.2, .7}: .9 beats both, .4 beats .2 -> 3/4
#   UAUC: AA -> 1; AB -> (1 + 0) / 2; BB -> 0
#   log loss: mean of -ln(prob of the true class) over the drawn users' examples
TWO_LABELS = [1, 0, 1, 0]
TWO_PROBS = [0.9, 0.2, 0.4, 0.7]
TWO_USERS = ["A", "A", "B", "B"]
LOSS_A = [-math.log(0.9), -math.log(0.8)]
LOSS_B = [-math.log(0.4), -math.log(0.3)]


def _data(n_users, per_user=5, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    labels = rng.integers(0, 2, users.size)
    probs = 1 / (1 + np.exp(-(labels - 0.5 + rng.normal(0, 1.5, users.size))))
    return labels, probs, users


def test_weighted_auc_by_hand_and_like_sklearn():
    # positive .8 (weight 2) beats negative .3 (w 1), loses to .9 (w 1) -> 2; positive .3 (w 1) ties .3 -> 1/2
    # -> 2.5 over (2 + 1) * (1 + 1) pairs of weight = 5/12
    labels, probs, w = [1, 0, 1, 0], [0.8, 0.3, 0.3, 0.9], [2, 1, 1, 1]
    assert weighted_auc(labels, probs, w) == pytest.approx(5 / 12)
    assert roc_auc_score(labels, probs, sample_weight=w) == pytest.approx(5 / 12)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    probs = rng.integers(0, 7, 500) / 6  # many ties, across classes too
    for weights in (rng.integers(0, 4, 500), rng.random(500), np.ones(500)):
        assert weighted_auc(labels, probs, weights) == pytest.approx(
            roc_auc_score(labels, probs, sample_weight=weights), abs=1e-12)
    assert weighted_auc([1, 0, 1], [0.2, 0.3, 0.4], [1, 0, 1]) is None  # the only negative weighs nothing


def test_two_user_fixture_by_hand():
    n_boot = 1000
    boot = user_bootstrap(TWO_LABELS, TWO_PROBS, TWO_USERS, n_boot=n_boot, seed=0)
    counts_a = np.concatenate(list(resample_counts(2, n_boot, 0)))[:, 0]  # users in sorted order: "A" first
    assert set(counts_a) == {0, 1, 2}
    np.testing.assert_allclose(boot["auc"], np.choose(counts_a.astype(int), [0.0, 0.75, 1.0]))
    np.testing.assert_allclose(boot["uauc"], np.choose(counts_a.astype(int), [0.0, 0.5, 1.0]))
    losses = [np.mean(LOSS_B), np.mean(LOSS_A + LOSS_B), np.mean(LOSS_A)]
    np.testing.assert_allclose(boot["log_loss"], np.choose(counts_a.astype(int), losses))
    # each user is drawn with probability 1/2: AA ~ 1/4 of resamples, AB ~ 1/2
    assert np.mean(counts_a == 2) == pytest.approx(0.25, abs=0.05)
    assert np.mean(counts_a == 1) == pytest.approx(0.5, abs=0.05)
    # 1/4 of resamples at each end, so the 2.5th and 97.5th percentiles are the extremes
    assert ci95(boot["auc"]) == [0.0, 1.0]


def test_each_resample_equals_sklearn_with_user_multiplicity_weights():
    labels, probs, users = _data(60, per_user=4, seed=3)
    probs = np.round(probs, 1)  # ties within and across users
    users = users * 7 + 3  # ids need not be 0..n-1
    boot = user_bootstrap(labels, probs, users, n_boot=40, seed=5)
    counts = np.concatenate(list(resample_counts(60, 40, 5)))
    codes = np.unique(users, return_inverse=True)[1]
    for b in range(40):
        w = counts[b][codes]
        assert boot["auc"][b] == pytest.approx(roc_auc_score(labels, probs, sample_weight=w), abs=1e-12)
        assert boot["log_loss"][b] == pytest.approx(log_loss(labels, probs, sample_weight=w), abs=1e-12)
        # UAUC of the resample built for real: example i repeated w_i times, and copy c of user u
        # (its examples' c-th repeats) a user of its own, u * 1000 + c
        w = w.astype(int)
        rows = np.repeat(np.arange(labels.size), w)
        copy = np.concatenate([np.arange(k) for k in w])
        assert boot["uauc"][b] == pytest.approx(uauc(labels[rows], probs[rows], users[rows] * 1000 + copy), abs=1e-12)


def test_constant_and_perfect_predictors_have_degenerate_intervals():
    labels, _, users = _data(50)
    const = compute_metrics(labels, np.full(labels.size, 0.5), users)["overall"]
    assert const["auc_ci95"] == [0.5, 0.5] and const["uauc_ci95"] == [0.5, 0.5]
    assert const["log_loss_ci95"] == pytest.approx([math.log(2), math.log(2)])
    perfect = compute_metrics(labels, labels * 0.8 + 0.1, users)["overall"]
    assert perfect["auc_ci95"] == [1.0, 1.0] and perfect["uauc_ci95"] == [1.0, 1.0]


def test_intervals_widen_with_fewer_users_and_repeat_with_the_seed():
    labels, probs, users = _data(1000)
    few = users < 50

    def width(ci):
        return ci[1] - ci[0]

    many_m = compute_metrics(labels, probs, users)["overall"]
    few_m = compute_metrics(labels[few], probs[few], users[few])["overall"]
    for key in ("auc_ci95", "uauc_ci95", "log_loss_ci95"):
        assert width(few_m[key]) > 2 * width(many_m[key])
        point = many_m[key.removesuffix("_ci95")]
        assert many_m[key][0] < point < many_m[key][1]
    assert compute_metrics(labels, probs, users, seed=7) == compute_metrics(labels, probs, users, seed=7)
    assert compute_metrics(labels, probs, users, seed=7)["overall"]["auc_ci95"] != many_m["auc_ci95"]


def test_resampling_users_is_wider_than_resampling_examples_when_users_differ():
    # each user is all-good or all-bad for the model: examples of a user move together, so resampling
    # users must give a wider AUC interval than resampling examples (every example its own user)
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(40), 25)
    labels = rng.integers(0, 2, users.size)
    good = (users % 2 == 0)
    probs = np.where(good == (labels == 1), 0.8, 0.2) + rng.uniform(-0.1, 0.1, users.size)
    by_user = compute_metrics(labels, probs, users)["overall"]["auc_ci95"]
    by_example = compute_metrics(labels, probs, np.arange(users.size))["overall"]["auc_ci95"]
    assert by_user[1] - by_user[0] > 2 * (by_example[1] - by_example[0])


def test_compute_metrics_ci_keys_and_switch():
    labels, probs, users = _data(30)
    warm = users % 2 == 0
    m = compute_metrics(labels, probs, users, warm=warm, n_boot=200, seed=1)
    for block in m.values():
        assert set(block) == set(BLOCK_KEYS)
        assert all(len(block[k]) == 2 for k in ("auc_ci95", "uauc_ci95", "log_loss_ci95"))
    # a segment resamples its own users: the warm interval is the one computed on warm examples alone
    assert m["warm"]["auc_ci95"] == compute_metrics(labels[warm], probs[warm], users[warm], n_boot=200,
                                                    seed=1)["overall"]["auc_ci95"]
    off = compute_metrics(labels, probs, users, warm=warm, n_boot=0)
    assert off["overall"]["auc_ci95"] is None and off["cold"]["log_loss_ci95"] is None
    assert {k: v for k, v in off["overall"].items() if not k.endswith("_ci95")} == {
        k: v for k, v in m["overall"].items() if not k.endswith("_ci95")}
    one_class = compute_metrics([1, 1, 1], [0.8, 0.3, 0.6], [1, 2, 3])["overall"]
    assert one_class["auc_ci95"] is None and one_class["uauc_ci95"] is None
    assert one_class["log_loss_ci95"] is not None
    with pytest.raises(ValueError, match="n_boot"):
        compute_metrics(labels, probs, users, n_boot=-1)


def test_paired_bootstrap_by_hand():
    # model a is the two-user fixture, model b a constant: AUC difference per resample is AUC(a) - 1/2,
    # positive unless the resample is BB (1/4 of resamples)
    const = [0.5] * 4
    r = paired_bootstrap(TWO_LABELS, TWO_PROBS, const, TWO_USERS, n_boot=1000, seed=0)
    assert set(r) == {"n_boot", "seed", "users", "auc", "uauc", "log_loss"}
    assert r["users"] == 2 and r["n_boot"] == 1000
    assert set(r["auc"]) == {"a", "b", "diff", "diff_ci95", "share_a_better"}
    assert r["auc"]["a"] == pytest.approx(0.75) and r["auc"]["b"] == pytest.approx(0.5)
    assert r["auc"]["diff"] == pytest.approx(0.25)
    assert r["auc"]["diff_ci95"] == [-0.5, 0.5]
    counts_a = np.concatenate(list(resample_counts(2, 1000, 0)))[:, 0]
    assert r["auc"]["share_a_better"] == pytest.approx(np.mean(counts_a > 0))
    # log loss: lower is better. a's mean loss is .164 on AA, .612 on AB, 1.060 on BB; b's is ln 2 = .693
    assert r["log_loss"]["share_a_better"] == pytest.approx(np.mean(counts_a > 0))
    assert r["log_loss"]["diff"] == pytest.approx(np.mean(LOSS_A + LOSS_B) - math.log(2))


def test_paired_bootstrap_shares_resamples_and_handles_equal_models():
    labels, probs, users = _data(200)
    other = np.clip(probs + np.random.default_rng(9).normal(0, 0.2, probs.size), 0, 1)
    r = paired_bootstrap(labels, probs, other, users, n_boot=300, seed=2)
    a = user_bootstrap(labels, probs, users, n_boot=300, seed=2)
    b = user_bootstrap(labels, other, users, n_boot=300, seed=2)
    for k in ("auc", "uauc", "log_loss"):
        assert r[k]["diff_ci95"] == ci95(a[k] - b[k])
    assert r["auc"]["share_a_better"] == pytest.approx(np.mean(a["auc"] > b["auc"]))
    assert r["auc"]["diff"] == pytest.approx(auc(labels, probs) - auc(labels, other))
    assert r["auc"]["share_a_better"] > 0.9  # noise added to b hurts it
    same = paired_bootstrap(labels, probs, probs, users, n_boot=100)
    for k in ("auc", "uauc", "log_loss"):
        assert same[k]["diff"] == 0 and same[k]["diff_ci95"] == [0.0, 0.0]
        assert same[k]["share_a_better"] == 0.5  # ties count one half


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        user_bootstrap([1, 0], [0.5, 0.5], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paired_bootstrap([1, 0], [0.5, 0.5], [0.5, 1.5], [1, 2])
    with pytest.raises(ValueError, match="n_boot"):
        user_bootstrap([1, 0], [0.5, 0.5], [1, 2], n_boot=2.5)


def test_ci95_is_the_percentile_interval_of_defined_resamples():
    # 0..40: the 2.5th percentile sits at position 0.025 * 40 = 1, the 97.5th at 39 (linear interpolation)
    assert ci95(np.arange(41.0)) == [1.0, 39.0]
    assert ci95(np.r_[np.arange(41.0), np.nan, np.nan]) == [1.0, 39.0]  # undefined resamples are left out
    assert ci95([np.nan]) is None and ci95([]) is None
