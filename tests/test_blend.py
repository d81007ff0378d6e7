"""The llm+mf blend and its validation examples: a blend, its weight picked without eval labels, on
train-period targets the LLM never read."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec.evaluation import compare
from movierec.evaluation.blend import GRID, blend, choose_weight
from movierec.evaluation.metrics import auc
from movierec.folders.datadir import DatasetDir


def test_blend_is_a_blend_of_its_parts():
    rng = np.random.default_rng(0)
    p_llm, p_mf = rng.uniform(0.01, 0.99, 200), rng.uniform(0.01, 0.99, 200)
    np.testing.assert_allclose(blend(p_llm, p_mf, 0.0), p_mf, rtol=1e-9)
    np.testing.assert_allclose(blend(p_llm, p_mf, 1.0), p_llm, rtol=1e-9)
    mid = blend(p_llm, p_mf, 0.5)  # between its parts, the logit average
    assert ((mid >= np.minimum(p_llm, p_mf) - 1e-12) & (mid <= np.maximum(p_llm, p_mf) + 1e-12)).all()
    np.testing.assert_allclose(blend([0.5], [0.9], 0.5), [0.75])  # sqrt(9) = 3 -> 3 / (1 + 3)
    assert np.isfinite(blend([0.0, 1.0], [1.0, 0.0], 0.3)).all()  # clipped before the logit


def _examples(rng, n, informative):
    """Labels and two scores: the `informative` one ("llm" or "mf") tracks the label, the other is noise."""
    y = rng.integers(0, 2, n)
    signal, noise = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1, n)))), rng.uniform(0, 1, n)
    return y, (signal, noise) if informative == "llm" else (noise, signal)


def _case(informative_valid, rng):
    """Records and P(Yes) for eval and validation examples, and Baselines holding mf's scores for both."""
    y_e, (llm_e, mf_e) = _examples(rng, 400, "llm")
    y_v, (llm_v, mf_v) = _examples(rng, 300, informative_valid)
    users_e, users_v = rng.integers(0, 40, 400), rng.integers(0, 40, 300)
    records = [{"user_id": int(u), "movie_id": i, "label": int(y)} for i, (u, y) in enumerate(zip(users_e, y_e))]
    valid = [{"user_id": int(u), "movie_id": 1000 + i} for i, u in enumerate(users_v)]
    base_eval = pd.DataFrame({"user_id": users_e, "movie_id": range(400), "label": y_e, "mf": mf_e,
                              "gbdt": mf_e * 0.5 + llm_e * 0.1})
    base_valid = pd.DataFrame({"user_id": users_v, "movie_id": range(1000, 1300), "label": y_v, "mf": mf_v})
    result = {"baselines": {"mf": {"overall": {"auc": auc(y_e, mf_e)}},
                            "gbdt": {"overall": {"auc": auc(y_e, base_eval.gbdt)}}}}
    return records, llm_e, valid, llm_v, compare.Baselines(Path("b.json"), result, base_eval, base_valid)


def test_weight_is_picked_on_validation_labels_never_on_eval_labels():
    records, llm, valid, llm_v, base = _case("llm", np.random.default_rng(1))
    pair, b, note = compare.compare(records, llm, valid, llm_v, base, n_boot=50)
    assert note is None and b["weight"] >= 0.8 and b["validation"]["n"] == 300  # the LLM is the informative one
    assert pair["baseline"] == b["paired"]["baseline"] == "gbdt"  # the best baseline by its AUC
    # permuting the eval labels changes the eval metrics, never the weight or what it was picked on
    perm = np.random.default_rng(2).permutation(len(records))
    shuffled = [{**r, "label": records[i]["label"]} for r, i in zip(records, perm)]
    base2 = compare.Baselines(base.path, base.result, base.eval.assign(label=base.eval.label.to_numpy()[perm]),
                              base.valid)
    _, b2, _ = compare.compare(shuffled, llm, valid, llm_v, base2, n_boot=50)
    assert (b2["weight"], b2["validation"]) == (b["weight"], b["validation"])
    assert b2["metrics"]["overall"]["auc"] != b["metrics"]["overall"]["auc"]
    # ... while validation examples where mf is the informative one move it toward mf
    records, llm, valid, llm_v, base = _case("mf", np.random.default_rng(1))
    assert compare.compare(records, llm, valid, llm_v, base, n_boot=50)[1]["weight"] <= 0.2


def test_the_blend_is_compared_with_each_of_its_parts():
    """`vs_parts`: the blend minus the LLM and minus mf, paired on the same examples (a = the blend)."""
    records, llm, valid, llm_v, base = _case("llm", np.random.default_rng(1))
    _, b, _ = compare.compare(records, llm, valid, llm_v, base, n_boot=50)
    y = np.array([r["label"] for r in records])
    for part, scores in (("llm", llm), ("mf", base.eval.mf.to_numpy())):
        d = b["vs_parts"][part]["comparison"]["auc"]
        assert d["a"] == pytest.approx(b["metrics"]["overall"]["auc"]) and d["b"] == pytest.approx(auc(y, scores))
        assert d["diff"] == pytest.approx(d["a"] - d["b"]) and d["diff_ci95"][0] <= d["diff"] <= d["diff_ci95"][1]
    assert b["vs_parts"]["mf"]["comparison"]["auc"]["diff"] > 0.1  # the informative LLM carries the blend


def test_choose_weight_grid_and_ties():
    y = np.array([0, 0, 1, 1])
    w, aucs = choose_weight(y, [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])  # equal parts: every w ties
    assert w == 0.0 and len(aucs) == len(GRID) and set(aucs) == {1.0}
    with pytest.raises(ValueError, match="single class"):
        choose_weight([1, 1], [0.2, 0.3], [0.4, 0.5])


def test_no_validation_examples_no_blend_but_the_paired_comparison():
    records, llm, valid, llm_v, base = _case("llm", np.random.default_rng(3))
    pair, b, note = compare.compare(records, llm, [], np.empty(0), base, n_boot=0)
    assert b is None and "holds no validation examples" in note and pair["comparison"]["auc"]["diff"] is not None
    # data with validation examples but baselines run without them: the fix is rerunning baselines
    _, b, note = compare.compare(records, llm, valid, llm_v, compare.Baselines(base.path, base.result, base.eval, None),
                                 n_boot=0)
    assert b is None and "baselines_validation.jsonl beside b.json" in note and "rerun `movierec baselines`" in note


def test_baselines_of_other_examples_give_no_comparison_rather_than_one_on_a_few_rows():
    """`movierec baselines` scores every eval and validation example of its data: files that cover fewer are
    another data's, and a comparison on the few rows they share would be a different, smaller test."""
    records, llm, valid, llm_v, base = _case("llm", np.random.default_rng(5))
    few = compare.Baselines(base.path, base.result, base.eval.iloc[: len(base.eval) // 2], base.valid)
    pair, b, note = compare.compare(records, llm, valid, llm_v, few, n_boot=0)
    assert pair is None and b is None and f"scores {len(base.eval) // 2:,} of the {len(records):,} eval" in note
    few = compare.Baselines(base.path, base.result, base.eval, base.valid.iloc[:3])
    pair, b, note = compare.compare(records, llm, valid, llm_v, few, n_boot=0)
    assert pair is not None and b is None and f"scores 3 of the {len(valid):,} validation examples" in note
    assert note.endswith("rerun `movierec baselines`")


def _written(tmp_path, rng=np.random.default_rng(4)):
    """baselines.json and its per-example files, as `movierec baselines` writes them."""
    *_, base = _case("llm", rng)
    (tmp_path / "baselines.json").write_text(json.dumps({**base.result, "data_manifest_sha256": "d" * 64}))
    for name, frame in ((DatasetDir.BASELINE_PREDICTIONS, base.eval), (DatasetDir.BASELINE_VALIDATION, base.valid)):
        (tmp_path / name).write_text(frame.to_json(orient="records", lines=True))
    return tmp_path / "baselines.json"


@pytest.mark.parametrize("name, edit, message", [
    (DatasetDir.BASELINE_VALIDATION, lambda rows: [], "holds no examples"),
    (DatasetDir.BASELINE_VALIDATION, lambda rows: [{k: v for k, v in rows[0].items() if k != "mf"}, *rows[1:]],
     "mf missing on some lines"),
    (DatasetDir.BASELINE_VALIDATION, lambda rows: [{**rows[0], "mf": None}, *rows[1:]], "mf missing on some lines"),
    (DatasetDir.BASELINE_VALIDATION, lambda rows: [{**rows[0], "mf": "abc"}, *rows[1:]], "mf holds values that are not"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [{**rows[0], "gbdt": 1.5}, *rows[1:]], "gbdt holds values that are"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [{**rows[0], "mf": True}, *rows[1:]], "mf holds values that are"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [{**rows[0], "label": 2}, *rows[1:]], "label holds values other"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [{**rows[0], "user_id": "u1"}, *rows[1:]], "user_id holds values"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [*rows, rows[3]], "appears on more than one line (1 repeats)"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [{k: v for k, v in r.items() if k != "gbdt"} for r in rows],
     "gbdt missing on some lines"),
    (DatasetDir.BASELINE_PREDICTIONS, lambda rows: [*rows[:-1], [1, 2]], "not JSON lines of objects"),
    (DatasetDir.BASELINE_VALIDATION, lambda rows: [*rows[:-1], None], "not JSON lines of objects"),
])
def test_damaged_baseline_files_stop_evaluate_before_scoring_with_one_line(tmp_path, name, edit, message):
    """Read (and checked) before the LLM scores anything: one line that says which file and to rerun baselines."""
    from movierec.errors import UserError

    path = _written(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    with pytest.raises(UserError) as e:
        compare.load_baselines(path, "d" * 64)
    assert str(e.value).startswith(f"{tmp_path / name}: ") and message in str(e.value)
    assert str(e.value).endswith("rerun `movierec baselines`") and "\n" not in str(e.value)
    if "repeats" in message:  # the ids as written: integers
        assert re.search(r"user \d+, movie \d+ appears", str(e.value)), str(e.value)


def test_a_baseline_named_like_a_column_is_refused(tmp_path):
    from movierec.errors import UserError

    path = _written(tmp_path)
    result = json.loads(path.read_text())
    result["baselines"]["label"] = {"overall": {"auc": 0.99}}
    path.write_text(json.dumps(result))
    with pytest.raises(UserError, match="a baseline named 'label', a column of the per-example files"):
        compare.load_baselines(path, "d" * 64)


def test_a_baselines_json_with_malformed_entries_picks_among_the_well_formed(tmp_path):
    path = _written(tmp_path)
    result = json.loads(path.read_text())
    result["baselines"].update({"odd": [], "text": {"overall": {"auc": "0.99"}}, "flag": {"overall": {"auc": True}},
                                "bare": {"overall": None}})
    path.write_text(json.dumps(result))
    base, note = compare.load_baselines(path, "d" * 64)
    assert note is None and compare.best_baseline(base.result) in {"mf", "gbdt"}


def test_validation_examples_are_train_period_targets_the_llm_never_read(prepared_data):
    """Recomputed from the raw ratings: every validation target lies in [valid_from, cutoff), has
    min_history earlier ratings, and is neither a train target nor in any train example's shown history."""
    data = DatasetDir(prepared_data)
    m = data.manifest()
    read = lambda name: pd.read_json(data.file(name), lines=True, convert_dates=False)  # noqa: E731
    train, valid, evals = read(DatasetDir.jsonl_name(data.TRAIN_NAME)), read(data.VALID), read(
        DatasetDir.jsonl_name(data.EVAL_NAME))
    cfg = m["config"]
    assert len(valid) == m["counts"]["valid"] == min(cfg["n_eval"], m["counts"]["eligible_valid"]) > 20
    assert list(valid.columns) == list(train.columns)  # built as train examples are
    assert valid.timestamp.between(m["valid_from_timestamp"], m["cutoff_timestamp"] - 1).all()
    ratings = pd.read_parquet(data.file(data.RATINGS)).sort_values(["userId", "timestamp", "movieId"])
    shown = set()  # (user, movie) of every rating a train prompt shows: the latest history_len strictly earlier
    by_user = {u: g for u, g in ratings.groupby("userId")}
    for t in train.itertuples():
        earlier = by_user[t.user_id][by_user[t.user_id].timestamp < t.timestamp]
        assert len(earlier) >= t.history_len
        shown |= {(t.user_id, mv) for mv in earlier.movieId.to_numpy()[len(earlier) - t.history_len:]}
    keys = set(zip(valid.user_id, valid.movie_id))
    assert len(keys) == len(valid)
    assert not keys & set(zip(train.user_id, train.movie_id)) and not keys & set(zip(evals.user_id, evals.movie_id))
    assert not keys & shown
    for v in valid.itertuples():
        assert (by_user[v.user_id].timestamp < v.timestamp).sum() >= cfg["min_history"]
    assert json.loads(data.file(data.DATASET_INFO).read_text()).keys() == {data.TRAIN_NAME, data.EVAL_NAME}
