import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from movierec.cli import main
from movierec.evaluation.baselines import NAMES, run, score_baselines
from movierec.evaluation.baselines.features import features, genre_matrix, histories
from movierec.evaluation.metrics import auc
from movierec.folders.datadir import DatasetDir

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
CUTOFF = 1_500_000_000
MIN_HISTORY = 5


def write_data(folder, seed=0, n_users=300, n_movies=200, n_ratings=30_000):
    """A prepared-data folder with a taste signal: rating = movie quality + user x genre taste + noise.

    As `prepare` does, the eval targets are a sample (half) of the post-cutoff ratings with at least
    MIN_HISTORY earlier ones, so the others form the users' post-cutoff histories; the last tenth of the
    users are cold (every rating after the cutoff). Some targets share their second with another rating
    of their user, which no history may hold.
    """
    rng = np.random.default_rng(seed)
    movie_genres = rng.random((n_movies, len(GENRES))) < 0.3
    movies = pd.DataFrame({
        "movieId": np.arange(1, n_movies + 1, dtype=np.int32),
        "title": [f"Movie {i} (2000)" for i in range(1, n_movies + 1)],
        "genres": ["|".join(g for g, on in zip(GENRES, row) if on) or "(no genres listed)" for row in movie_genres],
    })
    taste = rng.normal(0, 1.0, (n_users, len(GENRES)))
    quality = rng.normal(0, 0.6, n_movies)
    u = rng.integers(0, n_users, n_ratings)
    m = rng.integers(0, n_movies, n_ratings)
    score = 3.4 + quality[m] + (taste[u] * movie_genres[m]).sum(1) / 1.5 + rng.normal(0, 0.6, n_ratings)
    ratings = pd.DataFrame({
        "userId": (u + 1).astype(np.int32), "movieId": (m + 1).astype(np.int32),
        "rating": (np.clip(np.round(score * 2) / 2, 0.5, 5.0)).astype(np.float32),
        "timestamp": rng.integers(CUTOFF - 10**8, CUTOFF + 10**7, n_ratings).astype(np.int64),
    })
    newcomers = ratings.userId > 0.9 * n_users
    ratings.loc[newcomers, "timestamp"] = rng.integers(CUTOFF, CUTOFF + 10**7, newcomers.sum())
    ratings = ratings.drop_duplicates(["userId", "movieId"]).sort_values(["userId", "timestamp"], ignore_index=True)
    earlier = ratings.groupby("userId").cumcount().to_numpy()
    pool = np.flatnonzero((ratings.timestamp >= CUTOFF).to_numpy() & (earlier >= MIN_HISTORY))
    target = np.zeros(len(ratings), dtype=bool)
    target[rng.choice(pool, len(pool) // 2, replace=False)] = True
    user = ratings.userId.to_numpy()
    follower = np.flatnonzero(target[:-1] & ~target[1:] & (user[1:] == user[:-1]))
    ratings.loc[follower[:40] + 1, "timestamp"] = ratings.timestamp.to_numpy()[follower[:40]]  # same second
    warm_users = set(ratings.userId[ratings.timestamp < CUTOFF])
    examples = [{"user_id": int(r.userId), "movie_id": int(r.movieId), "timestamp": int(r.timestamp),
                 "rating": float(r.rating), "label": int(r.rating >= 4.0), "warm": int(r.userId) in warm_users,
                 "instruction": "Will the user like it?", "input": "...", "output": "Yes" if r.rating >= 4 else "No"}
                for r in ratings[target].itertuples()]
    manifest = {"cutoff_timestamp": CUTOFF, "config": {"like_threshold": 4.0, "min_history": MIN_HISTORY}}
    DatasetDir(folder).write_outputs({"ratings.parquet": ratings.to_parquet(), "movies.parquet": movies.to_parquet(),
                                      "movielens_qwen3_eval.jsonl": "".join(json.dumps(e) + "\n" for e in examples
                                                                            ).encode()}, manifest)
    return folder


def load(folder):
    examples = pd.read_json(folder / "movielens_qwen3_eval.jsonl", lines=True, convert_dates=False)
    return pd.read_parquet(folder / "ratings.parquet"), pd.read_parquet(folder / "movies.parquet"), examples


def score(ratings, movies, examples):
    return score_baselines(ratings, movies, examples, CUTOFF, 4.0, MIN_HISTORY)[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def result(data_dir):
    return run(data_dir)[0]


@pytest.fixture(scope="module")
def scored(data_dir):
    ratings, movies, examples = load(data_dir)
    return ratings, movies, examples, score(ratings, movies, examples)


def test_output_shape_and_models_learn_taste(result):
    assert set(result["baselines"]) == set(NAMES)
    assert result["cutoff_timestamp"] == CUTOFF and result["n_eval"] > 500
    for blocks in result["baselines"].values():
        assert set(blocks) == {"overall", "warm", "cold"} and blocks["cold"]["n"] > 100
        assert 0 < blocks["overall"]["log_loss"] < 1.0
    b = {name: m["overall"] for name, m in result["baselines"].items()}
    assert b["constant"]["auc"] == pytest.approx(0.5)
    assert b["movie_mean"]["auc"] > 0.55  # quality signal
    assert b["gbdt"]["auc"] > 0.65  # quality + taste signal
    assert b["gbdt"]["auc"] > b["movie_mean"]["auc"]
    assert b["gbdt"]["log_loss"] < b["constant"]["log_loss"]
    # collaborative filtering finds the user x genre taste on top of the movie's quality; popularity is
    # noise here (movies drawn uniformly). Measured: mf 0.84, movie_mean 0.77, popularity 0.50; 0.75 when
    # the fold-in ignores whether the history's ratings were liked
    assert b["mf"]["auc"] > b["popularity"]["auc"] + 0.2 and b["mf"]["uauc"] > b["popularity"]["uauc"] + 0.2
    assert b["mf"]["auc"] > b["movie_mean"]["auc"] + 0.04


def test_no_baseline_sees_its_target_time_or_other_targets(scored):
    """Flip every rating at or after a time T and every eval target's rating (and label): no example
    at or before T may move, while later examples do (their histories hold flipped ratings)."""
    ratings, movies, examples, base = scored
    key = ratings.userId.astype(np.int64) * 10**6 + ratings.movieId
    is_target = key.isin(examples.user_id.astype(np.int64) * 10**6 + examples.movie_id).to_numpy()
    ts = ratings.timestamp.to_numpy()
    shared = np.unique(ts[is_target][np.isin(ts[is_target], ts[~is_target])])  # a target's second, shared
    assert len(shared) > 10
    for t in [*examples.timestamp.quantile([0.3, 0.7]).astype(np.int64), shared[len(shared) // 2]]:
        poisoned = ratings.copy()
        hit = (ts >= t) | is_target
        poisoned.loc[hit, "rating"] = (5.5 - poisoned.rating[hit]).astype(np.float32)
        flipped = examples.assign(label=1 - examples.label, rating=5.5 - examples.rating)
        probs = score(poisoned, movies, flipped)
        seen = (examples.timestamp <= t).to_numpy()
        assert seen.sum() > 50 and (~seen).sum() > 50
        for name in NAMES:
            np.testing.assert_allclose(probs[name][seen], base[name][seen], rtol=1e-9, err_msg=name)
        for name in ("user_mean", "mf", "gbdt", "gbdt+mf"):  # the poison reaches what may see it
            assert np.abs(probs[name][~seen] - base[name][~seen]).max() > 0.01, name


def test_gbdt_mf_fit_rows_get_an_mf_score_that_never_saw_their_rating(scored, monkeypatch):
    """The mf feature of gbdt+mf's fit rows: flip one fit row's own rating and its feature stays; rows after
    it (whose histories hold it) move."""
    import movierec.evaluation.baselines as b

    ratings, movies, examples, _ = scored
    calls = []
    real = b.mf.scores
    monkeypatch.setattr(b.mf, "scores", lambda *a: calls.append(real(*a)) or calls[-1])
    pre = ratings[ratings.timestamp < CUTOFF]
    fit, _ = b._fit_rows(pre, b.window_start(pre.timestamp.to_numpy()), MIN_HISTORY, 2000, 0)
    row = fit.index[0]
    score_baselines(ratings, movies, examples, CUTOFF, 4.0, MIN_HISTORY, max_fit_rows=2000)
    flipped = ratings.copy()
    flipped.loc[row, "rating"] = np.float32(5.5 - ratings.rating[row])
    score_baselines(flipped, movies, examples, CUTOFF, 4.0, MIN_HISTORY, max_fit_rows=2000)
    before, after = calls[0], calls[2]  # each run: the fit rows' scores first, then the eval examples'
    assert len(before) == len(fit) and before[0] == after[0]
    later = ((fit.userId == ratings.userId[row]) & (fit.timestamp > ratings.timestamp[row])).to_numpy()
    assert later.any() and np.abs(before[later] - after[later]).max() > 1e-6


def test_cold_users_are_scored_from_their_history(scored):
    ratings, _, examples, probs = scored
    cold = ~examples.warm.to_numpy(bool)
    assert cold.sum() > 100
    # user_mean of a cold example is its user's mean over the ratings before it, eval targets excluded
    key = ratings.userId.astype(np.int64) * 10**6 + ratings.movieId
    known = ratings[~key.isin(examples.user_id.astype(np.int64) * 10**6 + examples.movie_id)]
    pre = ratings[ratings.timestamp < CUTOFF]
    by_hand = []
    for ex in examples[cold].itertuples():
        h = known[(known.userId == ex.user_id) & (known.timestamp < ex.timestamp)]
        assert len(h) > 0
        by_hand.append((h.rating.sum() + 10 * pre.rating.mean()) / (len(h) + 10))
    p = probs["user_mean"][cold]
    assert len(np.unique(p)) > 5 * examples.user_id[cold].nunique()  # not one value per user: per moment
    assert np.all(np.diff(p[np.argsort(by_hand, kind="stable")]) >= -1e-12)  # a monotone map of it
    labels = examples.label.to_numpy()[cold]
    assert auc(labels, p) > 0.6
    assert auc(labels, probs["mf"][cold]) > auc(labels, probs["movie_mean"][cold]) + 0.02  # the user's taste
    assert auc(labels, probs["gbdt"][cold]) > 0.65


def test_histories_and_features_match_brute_force():
    rng = np.random.default_rng(3)
    n = 400
    known = pd.DataFrame({"userId": rng.integers(1, 6, n), "movieId": rng.integers(1, 30, n),
                          "rating": rng.integers(1, 11, n) / 2, "timestamp": rng.integers(0, 60, n)})
    movies = pd.DataFrame({"movieId": np.arange(1, 30), "genres": rng.choice(["Drama", "Comedy|Drama", "Horror"], 29)})
    genres = genre_matrix(movies, 30)
    users, times = rng.integers(1, 7, 50), rng.integers(-1, 62, 50)  # user 6 has no ratings
    times[:10] = known.timestamp[:10]  # targets in a second that holds ratings, which must not count
    items = rng.integers(1, 30, 50)
    x = features(known, histories(known, users, times), items, genres, threshold=4.0)
    for i, (user, t, item) in enumerate(zip(users, times, items)):
        h = known[(known.userId == user) & (known.timestamp < t)]
        assert x.user_n[i] == len(h)
        assert x.user_mean[i] == pytest.approx((h.rating.sum() + 10 * known.rating.mean()) / (len(h) + 10))
        assert x.genre_n[i] == (genres[h.movieId] @ genres[item]).sum()


def test_features_by_hand():
    stats = pd.DataFrame({"userId": [1, 1, 2], "movieId": [1, 2, 1], "rating": [5.0, 3.0, 4.0], "timestamp": [1, 2, 3]})
    movies = pd.DataFrame({"movieId": [1, 2, 3], "genres": ["Drama", "Comedy|Drama", "Comedy"]})
    genres = genre_matrix(movies, 4)
    x = features(stats, histories(stats, np.array([1, 3]), np.array([9, 9])), np.array([3, 3]), genres, threshold=4.0)
    mu = 4.0  # global mean rating; like rate 2/3
    # user 1: two ratings summing 8, shrunk with 10 pseudo-ratings at 4 -> 48/12; user 3 has no history -> global mean
    assert x.user_mean.tolist() == pytest.approx([48 / 12, mu])
    assert x.user_n.tolist() == [2, 0]
    # movie 3 is unseen; user 1 rated one comedy (movie 2: 3.0, not liked) -> genre_n 1
    assert x.movie_n.tolist() == [0, 0] and x.movie_mean.tolist() == pytest.approx([mu, mu])
    assert x.genre_n.tolist() == [1, 0]
    user_like = (1 + 10 * 2 / 3) / 12
    assert x.genre_like[0] == pytest.approx((0 + 10 * user_like) / 11)
    # a history ending before the user's second rating holds the first only
    x = features(stats, histories(stats, np.array([1]), np.array([2])), np.array([3]), genres, threshold=4.0)
    assert x.user_n.tolist() == [1] and x.user_mean[0] == pytest.approx((5 + 10 * mu) / 11)


def test_cli_writes_file_and_rejects_missing_inputs(data_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["baselines", "--data", str(data_dir), "--out", str(out), "--bootstrap", "0"]) == 0
    assert set(json.loads(out.read_text())["baselines"]) == set(NAMES)
    predictions = pd.read_json(tmp_path / "baselines_predictions.jsonl", lines=True)
    assert list(predictions.columns) == ["user_id", "movie_id", "label", *NAMES]
    assert len(predictions) == json.loads(out.read_text())["n_eval"]
    for args, message in [(["--ks", "0"], "--ks"), (["--bootstrap", "-1"], "--bootstrap"), (["--out", str(tmp_path)], "is a folder")]:
        assert main(["baselines", "--data", str(data_dir), *args]) == 2
        assert message in capsys.readouterr().err
    (data_dir / "ratings.parquet").touch()  # same bytes: still accepted (sizes and sha256 match)
    edited = tmp_path / "edited"
    shutil.copytree(data_dir, edited)
    with open(edited / "movielens_qwen3_eval.jsonl", "a") as f:
        f.write("{}\n")
    assert main(["baselines", "--data", str(edited)]) == 2
    assert "changed since `movierec prepare` wrote it" in capsys.readouterr().err
    assert main(["baselines", "--data", str(tmp_path / "nope")]) == 2
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "manifest.json").write_text('{"cutoff_timestamp": 1, "files": {}}')
    shutil.copy(data_dir / "dataset_info.json", tmp_path / "partial")
    assert main(["baselines", "--data", str(tmp_path / "partial")]) == 2
    assert "ratings.parquet" in capsys.readouterr().err


def test_missing_library_is_one_line(data_dir, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "implicit" or m.startswith("implicit.")] + ["implicit"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import implicit...` now raises ImportError
    assert main(["baselines", "--data", str(data_dir), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install implicit" in err[0], err
    assert not (tmp_path / "b.json").exists()


def test_runs_on_prepare_output(prepared_data):
    """The folder `movierec prepare` writes is a valid input (same manifest and file formats)."""
    result, predictions, validation = run(prepared_data)
    manifest = json.loads((prepared_data / "manifest.json").read_text())
    assert len(predictions) == result["n_eval"] and set(NAMES) <= set(predictions.columns)
    # the stacked baseline, and mf on the validation examples (for evaluate's blend weight): sane AUCs
    assert result["baselines"]["gbdt+mf"]["overall"]["auc"] > 0.65 and result["fit"]["gbdt+mf"]["fit_rows"] > 500
    valid = pd.read_json(prepared_data / DatasetDir.VALID, lines=True)
    assert validation[["user_id", "movie_id", "label"]].equals(valid[["user_id", "movie_id", "label"]])
    assert auc(validation.label, validation.mf) > 0.6 and result["fit"]["validation_rows"] == len(valid)
    assert result["fit"]["fit_split_timestamp"] == manifest["valid_from_timestamp"]
    lists = manifest["ranking"]["users"]
    for name, blocks in result["baselines"].items():  # every baseline ranks the prepared candidate lists
        assert blocks["ranking"]["users"] == lists and 0 <= blocks["ranking"]["hr@10"] <= 1, name
    # constant ties every candidate: ties count pessimistically, so it ranks no better than last
    assert result["baselines"]["constant"]["ranking"]["mrr"] < result["baselines"]["popularity"]["ranking"]["mrr"]
    assert result["n_eval"] == manifest["counts"]["eval"]
    assert result["cutoff_timestamp"] == manifest["cutoff_timestamp"]
    assert result["fit"]["fit_rows_min_history"] == manifest["config"]["min_history"]
    for blocks in result["baselines"].values():
        assert blocks["warm"]["n"] + blocks["cold"]["n"] == result["n_eval"]


def test_real_ml100k_mf_beats_popularity(ml100k_prepared):
    b = run(ml100k_prepared)[0]["baselines"]
    overall = {name: blocks["overall"] for name, blocks in b.items()}
    assert overall["mf"]["auc"] > overall["popularity"]["auc"] + 0.05, overall
    assert overall["mf"]["uauc"] > overall["popularity"]["uauc"] + 0.03, overall
    # cold users (70% of the eval users) are told apart by their post-cutoff history
    assert b["user_mean"]["cold"]["auc"] > 0.55 and b["mf"]["cold"]["auc"] > 0.68


def test_out_never_replaces_prepared_files_and_bad_args_stop_before_fitting(prepared_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    for out, message in [(data / "manifest.json", "is a file `movierec prepare` wrote"),
                         (data / "ranking.jsonl", "is a file `movierec prepare` wrote"),
                         (data / "baselines_predictions.jsonl", "per-example predictions file"),
                         (data / "manifest.json" / "b.json", "is not a writable folder")]:
        assert main(["baselines", "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert main(["baselines", "--data", str(data), "--ks", "1000"]) == 2
    assert "exceeds the shortest ranking list" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before


def test_prepare_again_removes_the_baselines_of_the_old_data(tmp_path):
    from conftest import ROOT

    raw, data = tmp_path / "raw", tmp_path / "data"
    assert main(["synth", "--out", str(raw), "--users", "120", "--movies", "60", "--ratings", "3000", "--seed", "2"]) == 0
    args = ["prepare", "--config", str(ROOT / "configs/data/demo.yaml"), "--input", str(raw), "--out", str(data),
            "--override", "n_train=100", "--override", "n_eval=40"]
    assert main(args) == 0
    assert main(["baselines", "--data", str(data), "--bootstrap", "0"]) == 0
    written = ("baselines.json", "baselines_predictions.jsonl", "baselines_validation.jsonl")
    assert all((data / name).is_file() for name in written)
    assert main(args[:-1] + ["n_eval=30"]) == 0  # other eval examples: the fitted baselines no longer apply
    assert not any((data / name).exists() for name in written)
