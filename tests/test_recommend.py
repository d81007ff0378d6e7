"""`movierec recommend` on a real tiny run: ranked, unrated, as many as asked; bad input exits 2."""

import re

import pandas as pd
import pytest

from movierec.cli import main


def recommend(run, *args):
    return main(["recommend", "--run", str(run), "--device", "cpu", *args])


def test_recommends_top_k_unrated_movies(demo_run, prepared_data, capsys):
    ratings = pd.read_parquet(prepared_data / "ratings.parquet")
    user = int(ratings["userId"].iloc[0])
    assert recommend(demo_run, "--user", str(user), "--top-k", "7") == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+)\. P\(Yes\)=([0-9.]+)\s+(\d+)\s+(.+)$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 8))
    probs = [float(r[1]) for r in rows]
    assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)
    movies = [int(r[2]) for r in rows]
    seen = set(ratings.loc[ratings["userId"] == user, "movieId"])
    assert len(set(movies)) == 7 and not seen & set(movies)


def test_explicit_candidates(demo_run, prepared_data, capsys):
    movies = pd.read_parquet(prepared_data / "movies.parquet")["movieId"].head(3).tolist()
    user = int(pd.read_parquet(prepared_data / "ratings.parquet")["userId"].iloc[0])
    assert recommend(demo_run, "--user", str(user), "--candidates", ",".join(map(str, movies))) == 0
    out = capsys.readouterr().out
    assert "top 3 of 3 candidates" in out
    twice = ",".join(map(str, [movies[0], movies[0], movies[1], movies[0]]))
    assert recommend(demo_run, "--user", str(user), "--candidates", twice) == 0
    out = capsys.readouterr().out
    assert "top 2 of 2 candidates" in out and out.count(f" {movies[0]}  ") == 1  # each movie once


@pytest.mark.parametrize("args, message", [
    (["--user", "999999"], "no ratings for this user"),
    (["--user", "1", "--candidates", "1,x"], "--candidates"),
    (["--user", "1", "--candidates", ","], "--candidates: no movie id"),
    (["--user", "1", "--top-k", "0"], "--top-k"),
    (["--user", "1", "--checkpoint", "all"], "--checkpoint"),
])
def test_bad_inputs(demo_run, capsys, args, message):
    assert recommend(demo_run, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_missing_run_and_no_checkpoints(tmp_path, capsys):
    assert recommend(tmp_path / "nope", "--user", "1") == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "llamafactory_train.yaml").write_text("output_dir: x\n")
    assert recommend(tmp_path / "run", "--user", "1") == 2
    assert "is not a movierec run" in capsys.readouterr().err
