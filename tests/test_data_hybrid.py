"""Hybrid prompt options (data/hybrid.py): reference data byte-identical, every new field recomputed by a plain
loop from the raw ratings, leakage checked by perturbing the target's rating and later ones, bad options."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import prepare, read_jsonl, synth_input, write_config

from movierec.evaluation.baselines import mf
from movierec.evaluation.baselines.features import Histories
from movierec.cli import main as cli_main
from movierec.data import hybrid, synth
from movierec.data.prompts import candidate_stats_line, render_input, user_stats_line
from movierec.folders.datadir import DatasetDir

ROOT = Path(__file__).resolve().parents[1]
JSONL = [DatasetDir.jsonl_name(DatasetDir.TRAIN_NAME), DatasetDir.jsonl_name(DatasetDir.EVAL_NAME)]
# sha256 of (train, eval) jsonl prepared by the code before the hybrid options existed (commit 05d6570)
DEMO_SMALL = ("f2d17a88713cc3e2acc3c3e4289f8c6a789e14d7bf8165a5a5e7a16662502e49",
              "46577c5621776e0f1ba56aedecadb844243220f8488ad1714e24873e772cc81f")
DEMO = ("53efbf8d2139acc25cd8f1e4dbb6d910b8f4b89448bbc9fed4d9cc39a6c52423",
        "a8afd9658f26c5617a77ee85ae52d13c7647a25bad816f11191d88c8197fbe0c")
ML100K = ("cbd4841d84385ab56707af69bb3d5290490abe5104862ab646e4f9a4bdbc4b11",
          "6b71c58e6525c1b95ae304b6fe2150e15cf57a4d7caf01068ceeeda3c3247586")
ALL_ON = {"history_select": "relevant", "candidate_stats": True, "user_stats": True, "cf_score": True}


def _hashes(folder: Path) -> tuple[str, ...]:
    return tuple(hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in JSONL)


def test_reference_configs_prepare_the_same_bytes(prepared_data, tmp_path):
    """conftest's prepared_data is demo.yaml on a small synthetic set; demo.yaml itself runs here too."""
    assert _hashes(prepared_data) == DEMO_SMALL
    assert cli_main(["prepare", "--config", str(ROOT / "configs/data/demo.yaml"), "--override",
                     f"input={tmp_path / 'raw'}", "--out", str(tmp_path / "out")]) == 0
    assert _hashes(tmp_path / "out") == DEMO
    options = json.loads((tmp_path / "out" / "manifest.json").read_text())["prompt_options"]
    assert options == {"history_select": "recent", "candidate_stats": False, "user_stats": False, "cf_score": False,
                       "counts": None}


def test_reference_ml100k_prepares_the_same_bytes(ml100k_prepared):
    assert _hashes(ml100k_prepared) == ML100K


@pytest.fixture(scope="module")
def hybrid_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("hybrid")
    raw = base / "raw"
    synth.write(raw, 300, 150, 12_000, 0)  # the smallest window needs >= 32 users: synth's users arrive over time
    config = write_config(base / "data.yaml", input=str(raw), out_dir=str(base / "out"), ranking_users=8,
                          ranking_negatives=15, **ALL_ON)
    assert prepare(config) == 0
    return base, raw, config


def _load(out: Path) -> tuple[list[dict], list[dict], dict]:
    return (read_jsonl(out / JSONL[0]), read_jsonl(out / JSONL[1]),
            json.loads((out / "manifest.json").read_text()))


def _valid(out: Path) -> list[dict]:
    """The validation examples (the blend weight's): built as train examples, options included."""
    return read_jsonl(out / DatasetDir.VALID)


def _ranking(out: Path) -> list[dict]:
    """The ranking lists' candidates: prompts as of the list's ranking time (`timestamp`), options included."""
    return read_jsonl(out / DatasetDir.RANKING)


def test_every_field_recomputed_by_a_plain_loop(hybrid_data):
    base, raw, _ = hybrid_data
    train, eval_, manifest = _load(base / "out")
    valid, ranking = _valid(base / "out"), _ranking(base / "out")
    assert len(valid) > 20 and {r["kind"] for r in ranking} == {"target", "sampled"}
    ratings = pd.read_csv(raw / "ratings.csv").sort_values(["userId", "timestamp", "movieId"], ignore_index=True)
    movies = pd.read_parquet(base / "out" / "movies.parquet").set_index("movieId")
    cfg, cutoff = manifest["config"], manifest["cutoff_timestamp"]
    threshold, k_max = cfg["like_threshold"], cfg["history_len"]
    eval_keys = {(e["user_id"], e["movie_id"]) for e in eval_}
    visible = ratings[[(u, m) not in eval_keys for u, m in zip(ratings.userId, ratings.movieId)]]
    ts = ratings.timestamp.to_numpy()
    starts = [int(np.quantile(ts, cfg["cutoff_quantile"] * j / hybrid.WINDOWS, method="lower"))
              for j in range(1, hybrid.WINDOWS)] + [cutoff]
    assert starts == [w["fit_before"] for w in manifest["prompt_options"]["windows"]]
    n_movies = int(ratings.movieId.max()) + 1
    fits = [visible[visible.timestamp < s] for s in starts]
    vectors = [hybrid._vectors(f, threshold, n_movies, cfg["seed"]) for f in fits]
    models = [mf.fit(f, threshold, n_movies, cfg["seed"]) for f in fits]
    cf_checks, fallbacks = [], 0
    for ex in train + eval_ + valid + ranking:
        u, m, t = ex["user_id"], ex["movie_id"], ex["timestamp"]
        earlier = [row for row in visible[visible.userId == u].itertuples() if row.timestamp < t]
        j = max((i for i, s in enumerate(starts) if s <= t), default=None)
        if j is None or not vectors[j][m].any():
            shown, fallbacks = earlier[-k_max:], fallbacks + 1
        else:
            v = vectors[j]
            hist = np.array([row.movieId for row in earlier])
            sim = np.where(v[hist].any(1), (v[hist] * v[m]).sum(1), -2.0)
            best = sorted(range(len(earlier)), key=lambda i: (-sim[i], -i))[:k_max]
            shown = [earlier[i] for i in sorted(best)]
        user_r = [row.rating for row in earlier]
        movie_r = visible.rating[(visible.movieId == m) & (visible.timestamp < t)].tolist()
        expected = render_input(
            [movies.at[row.movieId, "title"] for row in shown], [row.rating for row in shown],
            movies.at[m, "title"], movies.at[m, "genres"], threshold,
            user_stats_line(len(user_r), np.mean(user_r) if user_r else 0.0,
                            np.mean(np.array(user_r) >= threshold) if user_r else 0.0),
            [candidate_stats_line(len(movie_r), np.mean(movie_r) if movie_r else 0.0)])
        text, cf = ex["input"].rsplit("\n", 1)
        assert text == expected, (ex, expected)
        assert ex.get("history_len", len(shown)) == len(shown)  # ranking lines carry no history_len
        cf_checks.append((ex, j, earlier, cf))
    _check_cf(cf_checks, models, manifest, threshold)
    counts = manifest["prompt_options"]["counts"]
    assert sum(counts[name]["recency_fallback"] for name in ("train", "eval", "valid", "ranking")) == fallbacks
    assert counts["valid"]["examples"] == len(valid) and counts["ranking"]["examples"] == len(ranking)
    assert counts["train"]["relevant_history"] + counts["train"]["recency_fallback"] == len(train)


def _check_cf(checks: list, models: list, manifest: dict, threshold: float) -> None:
    """Each estimate is the calibrated u . v of its window's model (fitted before the window), u folded in
    from the user's earlier visible ratings; unavailable without a window or a candidate vector."""
    windows = manifest["prompt_options"]["windows"]
    unavailable = 0
    for j in {c[1] for c in checks}:
        mine = [c for c in checks if c[1] == j]
        if j is None:
            assert all(c[3].endswith("unavailable") for c in mine)
            unavailable += len(mine)
            continue
        movie = np.concatenate([[r.movieId for r in c[2]] for c in mine]).astype(np.int64)
        rating = np.concatenate([[r.rating for r in c[2]] for c in mine]).astype(np.float64)
        ends = np.cumsum([len(c[2]) for c in mine])
        cands = np.array([c[0]["movie_id"] for c in mine])
        s = mf.scores(models[j], Histories(movie, rating, ends - [len(c[2]) for c in mine], ends), cands, threshold)
        a, b = windows[j]["calibration"]
        for c, score, fitted in zip(mine, s, models[j].column[cands] >= 0):
            if not fitted:
                assert c[3].endswith("unavailable")
                unavailable += 1
                continue
            p = float(c[3].split("estimate: ")[1].split(" ")[0])
            assert abs(p - 1 / (1 + np.exp(-(a * score + b)))) < 0.0051, (c[0], p, score)
    counts = manifest["prompt_options"]["counts"]
    assert sum(counts[name]["cf_unavailable"] for name in ("train", "eval", "valid", "ranking")) == unavailable


def _perturbed(raw: Path, dest: Path, flip) -> Path:
    """A copy of the raw folder whose ratings where flip(ratings) holds switch like <-> dislike."""
    shutil.copytree(raw, dest)
    r = pd.read_csv(raw / "ratings.csv")
    mask = flip(r)
    r.loc[mask, "rating"] = np.where(r.rating[mask] >= 4.0, 1.0, 5.0)
    r.to_csv(dest / "ratings.csv", index=False, float_format="%.1f")
    return dest


def test_no_field_moves_when_the_target_or_a_later_rating_changes(hybrid_data):
    """Flip every rating from a train target's time on (its own included): every prompt of a target at
    or before that time stays byte for byte the same, relevant history, statistics and CF estimate alike.
    Flip the eval targets and every rating after the middle eval target: train prompts and the earlier
    eval prompts stay the same (an eval prompt never sees another eval target)."""
    base, raw, config = hybrid_data
    train, eval_, _ = _load(base / "out")
    train = train + _valid(base / "out")  # validation targets lie in the train period, built by the same rules
    t_train = sorted(e["timestamp"] for e in train)[len(train) // 2]
    t_eval = sorted(e["timestamp"] for e in eval_)[len(eval_) // 2]
    eval_keys = pd.Series([(e["user_id"], e["movie_id"]) for e in eval_])
    cases = [(lambda r: r.timestamp >= t_train, t_train),
             (lambda r: (r.timestamp >= t_eval) | pd.Series(list(zip(r.userId, r.movieId))).isin(eval_keys), t_eval)]
    for i, (flip, t) in enumerate(cases):
        out = base / f"perturbed{i}"
        assert prepare(config, "--input", str(_perturbed(raw, base / f"raw{i}", flip)), "--out", str(out)) == 0
        before = {(e["user_id"], e["movie_id"]): e for e in train + eval_}
        new_train, new_eval, _ = _load(out)
        new_train += _valid(out)
        after = {(e["user_id"], e["movie_id"]): e for e in new_train + new_eval}
        assert before.keys() == after.keys()
        kept = [k for k, e in before.items() if e["timestamp"] <= t]
        assert all(before[k]["input"] == after[k]["input"] for k in kept)
        moved = [k for k, e in before.items() if e["timestamp"] > t and e["input"] != after[k]["input"]]
        assert moved, "the perturbation changed no later prompt: the check would pass for any code"
        own = [k for k in kept if before[k]["timestamp"] == t]
        assert own and all(before[k]["label"] != after[k]["label"] for k in own)  # its own rating was flipped


def test_bad_options_fail_before_anything_is_written(tmp_path, capsys):
    raw = synth_input(tmp_path / "raw")
    out = tmp_path / "out"
    config = write_config(tmp_path / "bad.yaml", input=str(raw), out_dir=str(out), history_select="foo")
    assert prepare(config) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: history_select:") and "recent, relevant" in err[0]
    assert not out.exists()
    tiny = tmp_path / "tiny"
    synth.write(tiny, 40, 20, 1500, 0)
    config = write_config(tmp_path / "small.yaml", input=str(tiny), out_dir=str(out), n_train=20, n_eval=10,
                          ranking_users=0, cf_score=True)
    assert prepare(config) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[prepare")]
    assert len(err) == 1 and err[0].startswith("error: cf_score: too few ratings"), err  # after reading: data-sized
    assert not out.exists()


def test_recommend_renders_the_same_fields(hybrid_data):
    """recommend's prompt for a candidate rated 'now', given the ratings before an eval target's time
    (less the eval targets), carries the same statistics lines as prepare's prompt for that target, and a
    relevant history of the user's own ratings."""
    from movierec.evaluation.recommend import build_records

    base, _, _ = hybrid_data
    _, eval_, manifest = _load(base / "out")
    ratings = pd.read_parquet(base / "out" / "ratings.parquet")
    movies = pd.read_parquet(base / "out" / "movies.parquet")
    targets = pd.MultiIndex.from_tuples([(e["user_id"], e["movie_id"]) for e in eval_])
    for ex in sorted(eval_, key=lambda e: e["timestamp"])[:3]:
        known = ratings[(ratings.timestamp < ex["timestamp"])
                        & ~pd.MultiIndex.from_arrays([ratings.userId, ratings.movieId]).isin(targets)]
        (record,) = build_records(manifest, known, movies, ex["user_id"], [ex["movie_id"]])
        mine, theirs = record["input"].split("\n"), ex["input"].split("\n")
        assert [x for x in mine if x.startswith("The ")] == [x for x in theirs if x.startswith("The ")]
        assert mine[-4:-1] == theirs[-4:-1]  # candidate, genres, candidate statistics
        assert re.fullmatch(r"Collaborative filtering estimate: (0\.\d\d chance of liking|unavailable)", mine[-1])
        shown = [x for x in mine if x.startswith("- ") and x != "- (none)"]
        titles = set(movies.set_index("movieId").title[known[known.userId == ex["user_id"]].movieId])
        assert len(shown) == ex["history_len"] and all(x[2:].rsplit(":", 1)[0] in titles for x in shown)


def test_describe_says_what_the_prompt_shows():
    """The report and the model card describe the prompt from the manifest's data config."""
    from movierec.data.hybrid import describe

    assert describe({"history_len": 10}) == "the 10 latest earlier ratings"
    assert describe({"history_len": 5, "history_select": "relevant", "cf_score": True}) == (
        "the 5 earlier ratings most similar to the candidate (relevant history) plus a collaborative filtering estimate")
    assert describe({"history_len": 10, "user_stats": True, "candidate_stats": True, "cf_score": True}).endswith(
        "plus the user's rating statistics, the candidate's rating statistics and a collaborative filtering estimate")


@pytest.mark.parametrize("options", [False, True], ids=["reference", "all-options"])
def test_a_ranking_list_shows_its_first_target_the_eval_prompt(options, hybrid_data, prepared_data):
    """A list ranks as of its user's first eval target: that target's candidate prompt is the eval example's
    own, byte for byte, with or without prompt options (the LLM scores the same text in both places)."""
    out = hybrid_data[0] / "out" if options else prepared_data
    _, eval_, _ = _load(out)
    by_key = {(e["user_id"], e["movie_id"], e["timestamp"]): e["input"] for e in eval_}
    firsts = [r for r in _ranking(out) if (r["user_id"], r["movie_id"], r["timestamp"]) in by_key]
    assert len(firsts) >= len({r["list_id"] for r in _ranking(out)})  # every list's first target is there
    assert all(r["input"] == by_key[(r["user_id"], r["movie_id"], r["timestamp"])] for r in firsts)
