"""`movierec synth`: ML-25M format, realistic structure, a learnable signal, determinism."""

from __future__ import annotations

import csv
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from movierec.cli import main as cli_main
from movierec.data import synth
from movierec.data.movielens import GENRE_NAMES, NO_GENRES
from movierec.errors import UserError


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert cli_main(["synth", "--out", str(out), "--users", "1000", "--movies", "800", "--ratings", "80000",
                     "--seed", "3"]) == 0
    return out, pd.read_csv(out / "ratings.csv"), pd.read_csv(out / "movies.csv")


def test_sizes():
    assert synth.sizes("full") == (162_541, 62_423, 25_000_095)
    assert synth.sizes("0.01") == (1_625, 6_242, 250_001)
    assert synth.sizes(None, users=300, movies=400, ratings=20_000) == (300, 400, 20_000)
    assert synth.sizes("0.01", ratings=40_000) == (1_625, 6_242, 40_000)
    for bad in ("2", "0", "half"):
        with pytest.raises(UserError, match="--scale"):
            synth.sizes(bad)
    with pytest.raises(UserError, match="each user rates 20"):
        synth.sizes(None, users=100, movies=400, ratings=1_000)


def test_format(generated):
    out, ratings, movies = generated
    assert (out / "ratings.csv").read_text().startswith("userId,movieId,rating,timestamp\n")
    assert (out / "movies.csv").read_text(encoding="utf-8").startswith("movieId,title,genres\n")
    lines = (out / "ratings.csv").read_text().splitlines()[1:6]
    assert all(re.fullmatch(r"\d+,\d+,[0-5]\.[05],\d{9,10}", line) for line in lines), lines
    assert ratings.rating.isin(np.arange(1, 11) / 2).all()
    assert ratings.equals(ratings.sort_values(["userId", "movieId"], ignore_index=True))  # as ML is
    # the csv module (RFC 4180 quoting) reads the same titles as pandas
    with open(out / "movies.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[1] for r in rows] == movies.title.tolist() and all(len(r) == 3 for r in rows)
    assert movies.title.str.fullmatch(r".+ \(\d{4}\)").all()
    assert movies.title.str.contains(",").any() and movies.title.str.contains('"').any()
    assert (~movies.title.map(str.isascii)).any()
    genres = movies.genres.str.split("|").explode()
    assert set(genres) <= set(GENRE_NAMES) | {NO_GENRES} and (movies.genres == NO_GENRES).any()


def test_structure(generated):
    _, ratings, movies = generated
    assert len(ratings) == 80_000 and ratings.userId.nunique() == 1000 and len(movies) == 800
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert ratings.movieId.isin(movies.movieId).all()
    per_user = ratings.groupby("userId").size()
    assert per_user.min() >= 20 and per_user.max() > 5 * per_user.median()  # heavy-tailed activity
    per_movie = ratings.groupby("movieId").size().sort_values(ascending=False)
    assert per_movie.iloc[: len(per_movie) // 10].sum() > 0.3 * len(ratings)  # power-law popularity
    years = pd.to_datetime(ratings.timestamp, unit="s").dt.year
    assert years.min() <= 2000 and years.max() >= 2018
    early = ratings[ratings.timestamp < synth.HALF_STARS_FROM]
    assert (early.rating % 1 == 0).all() and (ratings.rating % 1 == 0.5).any()
    assert 0.4 < (ratings.rating >= 4).mean() < 0.6 and 3.3 < ratings.rating.mean() < 3.7


def test_classical_models_find_the_signal(generated):
    """Biases give a clear AUC on a time split; a user's past ratings per genre add to it."""
    _, ratings, movies = generated
    cut = ratings.timestamp.quantile(0.8)
    train, test = ratings[ratings.timestamp < cut], ratings[ratings.timestamp >= cut]
    mean = train.rating.mean()
    user, movie = train.groupby("userId").rating.mean() - mean, train.groupby("movieId").rating.mean() - mean
    y = test.rating >= 4
    bias = test.userId.map(user).fillna(0) + test.movieId.map(movie).fillna(0)
    assert roc_auc_score(y, bias) > 0.65
    genre = movies.assign(genre=movies.genres.str.split("|")).explode("genre")[["movieId", "genre"]]
    residual = train.assign(res=train.rating - mean - train.userId.map(user) - train.movieId.map(movie))
    taste = residual.merge(genre, on="movieId").groupby(["userId", "genre"]).res.agg(["sum", "count"])
    taste = (taste["sum"] / (taste["count"] + 5)).rename("taste").reset_index()
    fit = (test.reset_index().merge(genre, on="movieId").merge(taste, on=["userId", "genre"], how="left")
           .groupby("index").taste.mean().reindex(test.index).fillna(0))
    warm = test.userId.isin(user.index)
    assert roc_auc_score(y[warm], (bias + fit)[warm]) > roc_auc_score(y[warm], bias[warm]) + 0.02


def test_same_seed_same_bytes(generated, tmp_path):
    out, _, _ = generated
    args = ["synth", "--users", "1000", "--movies", "800", "--ratings", "80000"]
    assert cli_main([*args, "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "b"), "--seed", "4"]) == 0
    for name in ("ratings.csv", "movies.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() != (out / name).read_bytes()


def test_existing_files_need_force(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--users", "30", "--movies", "100", "--ratings", "900"]
    assert cli_main(args) == 0
    assert cli_main(args) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli_main([*args, "--force"]) == 0


def test_truth_is_the_rating_models_like_probability(generated):
    """truth.parquet's probabilities are calibrated: within each bin of P(like), the share of ratings
    at or above the threshold matches the bin's mean probability (80,000 draws), at any threshold."""
    out, ratings, _ = generated
    truth = pd.read_parquet(out / synth.TRUTH_FILE)
    assert truth[["userId", "movieId"]].equals(ratings[["userId", "movieId"]].astype(truth.userId.dtype))
    for threshold in (3.0, 4.0, 4.5):
        p = synth.like_probability(truth.mu, truth.star_step, threshold)
        liked = (ratings.rating >= threshold).to_numpy()
        bins = pd.cut(p, np.linspace(0, 1, 11), include_lowest=True)
        table = pd.DataFrame({"p": p, "liked": liked}).groupby(bins, observed=True).mean()
        assert (table.p - table.liked).abs().max() < 0.03, table
        assert roc_auc_score(liked, p) > 0.8  # the ceiling sits well above any baseline
    assert (synth.like_probability(truth.mu, truth.star_step, 0.5) == 1).all()  # every rating is >= 0.5


def test_prompt_visible_signal(generated):
    """The candidate's genres and a user's past stars (what a prompt shows) predict likes on their own."""
    _, ratings, movies = generated
    liked = ratings.rating >= 4
    genre_rate = (ratings.assign(liked=liked).merge(movies, on="movieId").groupby("genres").liked.mean())
    by_movie = ratings.merge(movies, on="movieId").genres.map(genre_rate)
    assert roc_auc_score(liked, by_movie) > 0.56
    user_rate = liked.groupby(ratings.userId).transform("mean")
    assert roc_auc_score(liked, user_rate) > 0.65
