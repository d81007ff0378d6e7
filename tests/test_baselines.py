import json

import numpy as np
import pandas as pd
import pytest

from movierec.baselines import NAMES, features, genre_matrix, run
from movierec.cli import main

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
CUTOFF = 1_500_000_000


def write_data(folder, seed=0, n_users=300, n_movies=200, n_ratings=30_000):
    """A prepared-data folder with a taste signal: rating = movie quality + user x genre taste + noise."""
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
    newcomers = ratings.userId > 0.9 * n_users  # cold users: every rating after the cutoff
    ratings.loc[newcomers, "timestamp"] = rng.integers(CUTOFF, CUTOFF + 10**7, newcomers.sum())
    ratings = ratings.drop_duplicates(["userId", "movieId"]).reset_index(drop=True)
    post = ratings[ratings.timestamp >= CUTOFF]
    warm_users = set(ratings.userId[ratings.timestamp < CUTOFF])
    examples = [{"user_id": int(r.userId), "movie_id": int(r.movieId), "timestamp": int(r.timestamp),
                 "rating": float(r.rating), "label": int(r.rating >= 4.0), "warm": int(r.userId) in warm_users,
                 "instruction": "Will the user like it?", "input": "...", "output": "Yes" if r.rating >= 4 else "No"}
                for r in post.itertuples()]
    folder.mkdir(parents=True, exist_ok=True)
    ratings.to_parquet(folder / "ratings.parquet")
    movies.to_parquet(folder / "movies.parquet")
    (folder / "movielens_qwen3_eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (folder / "manifest.json").write_text(json.dumps({"cutoff_timestamp": CUTOFF, "config": {"like_threshold": 4.0}}))
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def result(data_dir):
    return run(data_dir)


def test_output_shape_and_gbdt_learns_taste(result):
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


def test_post_cutoff_ratings_are_never_used(data_dir, result, tmp_path):
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("movies.parquet", "movielens_qwen3_eval.jsonl", "manifest.json"):
        (changed / name).write_bytes((data_dir / name).read_bytes())
    ratings = pd.read_parquet(data_dir / "ratings.parquet")
    post = ratings.timestamp >= CUTOFF
    ratings.loc[post, "rating"] = (5.5 - ratings.loc[post, "rating"]).astype(np.float32)  # flip every taste
    ratings.to_parquet(changed / "ratings.parquet")
    assert run(changed)["baselines"] == result["baselines"]


def test_features_by_hand():
    history = pd.DataFrame({"userId": [1, 1, 2], "movieId": [1, 2, 1], "rating": [5.0, 3.0, 4.0]})
    movies = pd.DataFrame({"movieId": [1, 2, 3], "genres": ["Drama", "Comedy|Drama", "Comedy"]})
    genres = genre_matrix(movies, 4)
    x = features(history, genres, np.array([1, 3]), np.array([3, 3]), threshold=4.0, n_users=4)
    mu = 4.0  # global mean rating; like rate 2/3
    # user 1: two ratings summing 8, shrunk with 10 pseudo-ratings at 4 -> 48/12; cold user 3 -> global mean
    assert x.user_mean.tolist() == pytest.approx([48 / 12, mu])
    assert x.user_n.tolist() == [2, 0]
    # movie 3 is unseen; user 1 rated one comedy (movie 2: 3.0, not liked) -> genre_n 1
    assert x.movie_n.tolist() == [0, 0] and x.movie_mean.tolist() == pytest.approx([mu, mu])
    assert x.genre_n.tolist() == [1, 0]
    user_like = (1 + 10 * 2 / 3) / 12
    assert x.genre_like[0] == pytest.approx((0 + 10 * user_like) / 11)


def test_cli_writes_file_and_rejects_missing_inputs(data_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["baselines", "--data", str(data_dir), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["baselines"]) == set(NAMES)
    assert main(["baselines", "--data", str(tmp_path / "nope")]) == 2
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "manifest.json").write_text("{}")
    assert main(["baselines", "--data", str(tmp_path / "partial")]) == 2
    assert "ratings.parquet" in capsys.readouterr().err


def test_runs_on_prepare_output(prepared_data):
    """The folder `movierec prepare` writes is a valid input (same manifest and file formats)."""
    result = run(prepared_data)
    manifest = json.loads((prepared_data / "manifest.json").read_text())
    assert result["n_eval"] == manifest["counts"]["eval"]
    assert result["cutoff_timestamp"] == manifest["cutoff_timestamp"]
    for blocks in result["baselines"].values():
        assert blocks["warm"]["n"] + blocks["cold"]["n"] == result["n_eval"]
