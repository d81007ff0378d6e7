"""Synthetic data in the MovieLens-25M format, with structure a recommender can learn (`movierec synth`).

Power-law movie popularity; log-normal user activity with at least 20 ratings per user (as in ML);
each user rates within an activity window between 1995 and 2019; whole stars before 2003 (as in ML)
and for a share of users. A rating is user bias + movie quality + the user's affinity for the movie's
genres + noise, so classical recommenders score well above chance. Everything is vectorised numpy and
a function of the seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from movierec.data.movielens import (
    GENRE_NAMES,
    MOVIE,
    MOVIES_CSV,
    NO_GENRES,
    RATING,
    RATINGS_CSV,
    TIMESTAMP,
    USER,
)
from movierec.errors import UserError
from movierec.folders.io import atomic_write_bytes

ML25M_SIZES = (162_541, 62_423, 25_000_095)  # users, movies, ratings
FIRST_TS, LAST_TS = 789_652_009, 1_574_327_703  # first and last ML-25M timestamps (1995-01-09, 2019-11-21)
HALF_STARS_FROM = 1_045_526_400  # 2003-02-18: MovieLens offers half stars from then on
MIN_PER_USER = 20
DAY = 86_400
# share of movies per genre, roughly as in ML-25M (Drama and Comedy dominate, IMAX is rare)
GENRE_WEIGHTS = np.array([.12, .07, .05, .04, .27, .09, .09, .40, .04, .006, .09, .004, .02, .05, .12,
                          .06, .13, .03, .02])
WORDS = np.array((
    "Night Day Love War Time Dark Light Blood City Dream Man Woman Girl Boy King Queen Star Moon Sun River "
    "Road House Home Heart Fire Ice Storm Ghost Secret Shadow Last First Lost Wild Silent Golden Broken "
    "Hidden Little Big Long Deep Red Blue Black White Green Summer Winter Story Legend Kingdom Empire Island "
    "Ocean Sky Mountain Forest Garden Street Bridge Train Journey Escape Return Revenge Promise Letter Song "
    "Dance Game Hunter Killer Angel Devil Family Brother Sister Father Mother Child Friend Stranger Doctor "
    "Detective Captain Soldier Spy Thief Witness Prisoner Paradise Heaven World Planet Machine Code Mirror "
    "Window Door Room Key Edge Zero One Two Hundred Midnight Morning Tomorrow Yesterday Forever Never"
).split(), dtype=object)
FOREIGN = np.array(["Amélie", "Café", "Niño", "Über alles", "Søren", "Tōkyō monogatari", "Señorita",
                    "Crème brûlée", "Mañana", "Götterdämmerung", "Kraków", "Zoë", "Ça ira", "Déjà vu",
                    "Пётр", "東京", "Čapek", "Ænima"], dtype=object)
# The rating model (see _stars). GENRE_EFFECT follows ML-25M's mean rating per genre minus their
# average (Film-Noir, War, Documentary high; Horror, Comedy, Children low), doubled so that a small
# model picks it up from a prompt's "Genres:" line within the demo's few minutes.
GENRE_EFFECT = np.array([  # in GENRE_NAMES' order
    -0.20, -0.10, 0.08, -0.28, -0.30, 0.24, 0.28, 0.22, -0.12, 0.72,  # Action .. Film-Noir
    -0.48, 0.06, -0.04, 0.20, -0.06, -0.18, -0.10, 0.44, 0.04,  # Horror .. Western
])
MEAN_RATING = 3.55
USER_BIAS_SD = 0.6  # how much kinder one user is than another (shown by the stars of the user's history)
MOVIE_OWN_SD = 0.35  # quality not explained by genres, year or popularity (learnt per title)
YEAR_EFFECT = 0.25  # per 25 years before 1995: old films people still rate are the good ones
TASTE_SD = 0.5  # user x genre affinity (a CF model can learn it; a prompt shows history titles only)
NOISE_SD = 0.7
MU, STEP = "mu", "star_step"  # truth.parquet's columns besides userId, movieId
TRUTH_FILE = "truth.parquet"
RATING_TEXT = pa.array([f"{s / 2:.1f}" for s in range(1, 11)])  # "0.5" .. "5.0"


def sizes(scale: str | None, users: int | None = None, movies: int | None = None,
          ratings: int | None = None) -> tuple[int, int, int]:
    """(users, movies, ratings) for a scale ('full' or a fraction, default 0.01); explicit counts win.

    Users and ratings scale with the fraction, movies with its square root, so small sets still
    offer each user enough movies (ml-latest-small has the same shape).
    """
    if scale in (None, "full"):
        f = 0.01 if scale is None else 1.0
    else:
        try:
            f = float(scale)
        except ValueError:
            raise UserError(f"--scale: expected 'full' or a fraction in (0, 1], got {scale!r}") from None
        if not 0 < f <= 1:
            raise UserError(f"--scale: expected 'full' or a fraction in (0, 1], got {scale!r}")
    given = {"users": users, "movies": movies, "ratings": ratings}
    if bad := [f"{k}={v}" for k, v in given.items() if v is not None and v < 1]:
        raise UserError(f"users, movies and ratings must be >= 1, got {', '.join(bad)}")
    u, m, r = ML25M_SIZES
    u = users if users is not None else max(1, round(u * f))
    m = movies if movies is not None else max(1, round(m * f**0.5))
    r = ratings if ratings is not None else round(r * f)
    derived = [k for k, v in given.items() if v is None]
    origin = f" ({', '.join(derived)} from scale {f:g})" if derived else ""
    if m < MIN_PER_USER:
        raise UserError(f"{m:,} movies{origin}: at least {MIN_PER_USER} needed (every user rates {MIN_PER_USER})")
    if not MIN_PER_USER * u <= r <= u * _cap(m):
        raise UserError(f"{r:,} ratings by {u:,} users of {m:,} movies{origin}: each user rates {MIN_PER_USER} to "
                        f"{_cap(m)} movies (half the catalogue), so ratings must lie in "
                        f"{MIN_PER_USER * u:,}..{u * _cap(m):,}")
    return u, m, r


def _cap(n_movies: int) -> int:
    """Most ratings one user gives: half the catalogue, as the most active ML-25M users do."""
    return max(MIN_PER_USER, n_movies // 2)


def generate(n_users: int, n_movies: int, n_ratings: int, seed: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(ratings, movies, truth) tables; ratings in ML column order, sorted by (userId, movieId) as in ML.

    truth has one row per rating (same order): the rating's noise-free mean `mu` and its star step
    (0.5 or 1.0), from which `like_probability` gives the true P(rating >= threshold).
    """
    rng = np.random.default_rng(seed)
    movie_ids, titles, genre_mask, year = _movies(rng, n_movies)
    popularity = (rng.permutation(n_movies) + 30.0) ** -1.1  # Zipf-like over random ranks
    counts = _user_counts(rng, n_users, n_ratings, _cap(n_movies))
    keys = _pairs(rng, counts, popularity / popularity.sum())
    user, movie = keys // n_movies, keys % n_movies
    del keys
    ts = _timestamps(rng, user, n_users)
    stars, mu, step = _stars(rng, user, movie, ts, genre_mask, year, np.log(popularity))
    ratings = pa.table({
        USER: pa.array(user + 1, pa.int32()),
        MOVIE: pa.array(movie_ids[movie], pa.int32()),
        RATING: RATING_TEXT.take(pa.array(stars - 1)),
        TIMESTAMP: pa.array(ts, pa.int64()),
    })
    codes = genre_mask @ (1 << np.arange(len(GENRE_NAMES)))
    uniq, inv = np.unique(codes, return_inverse=True)
    names = np.array(["|".join(g for i, g in enumerate(GENRE_NAMES) if c >> i & 1) or NO_GENRES for c in uniq])
    movies = pa.table({MOVIE: pa.array(movie_ids, pa.int32()), "title": titles, "genres": names[inv]})
    truth = pa.table({USER: ratings[USER], MOVIE: ratings[MOVIE], MU: pa.array(mu, pa.float32()),
                      STEP: pa.array(step, pa.float32())},
                     metadata={b"noise_sd": str(NOISE_SD).encode()})
    return ratings, movies, truth


def _movies(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse ids (ML's run to 209,171 for 62,423 movies), titles with years, a genre mask (n x 19), years."""
    ids = np.sort(rng.choice(np.arange(1, int(n * 3.35) + 2), n, replace=False))
    words = WORDS[rng.integers(0, len(WORDS), (3, n))]
    n_words = rng.integers(1, 4, n)
    title = np.where(n_words >= 2, words[0] + " " + words[1], words[0])
    title = np.where(n_words >= 3, title + " " + words[2], title)
    odd = rng.random((3, n))
    title = np.where(odd[0] < 0.08, title + ", The", title)  # ML's "Matrix, The (1999)"
    title = np.where(odd[1] < 0.02, '"' + WORDS[rng.integers(0, len(WORDS), n)] + '" ' + title, title)
    title = np.where(odd[2] < 0.05, title + " (" + FOREIGN[rng.integers(0, len(FOREIGN), n)] + ")", title)
    year = 2019 - np.minimum(rng.exponential(18, n).astype(int), 117)
    title = title + " (" + year.astype(str).astype(object) + ")"
    # 1-5 distinct genres by weight (Gumbel top-k), 8% with none
    n_genres = np.where(rng.random(n) < 0.08, 0, 1 + np.minimum(rng.poisson(0.8, n), 4))
    scores = np.log(GENRE_WEIGHTS) + rng.gumbel(size=(n, len(GENRE_NAMES)))
    rank = np.argsort(np.argsort(-scores, axis=1), axis=1)
    return ids, title, rank < n_genres[:, None], year


def _user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    """Ratings per user: 20 + log-normal share (ML-25M: median ~70, mean ~154), at most `cap`,
    summing to exactly n_ratings."""
    extra, room = n_ratings - MIN_PER_USER * n_users, cap - MIN_PER_USER
    weight = rng.lognormal(3.9, 1.4, n_users)
    full = np.zeros(n_users, dtype=bool)
    while True:  # water-filling: users over the cap are clipped and the rest share what is left
        share = np.where(full, room, weight * (extra - room * full.sum()) / max(weight[~full].sum(), 1e-300))
        over = share > room
        if not over.any():
            break
        full |= over
    base = np.floor(share).astype(np.int64)
    frac = np.where(full, -1.0, share - base)
    base[np.argsort(-frac, kind="stable")[: extra - base.sum()]] += 1
    return MIN_PER_USER + base


def _pairs(rng: np.random.Generator, counts: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sorted keys user * n_movies + movie: exactly counts[u] distinct movies per user, drawn by popularity.

    Repeats are redrawn; after three rounds the remaining (heavy) users draw uniformly, which converges
    fast since nobody rates more than half the movies.
    """
    n_movies = len(p)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    need = counts.astype(np.int64)
    parts: list[np.ndarray] = []
    for round_ in range(10_000):
        users = np.flatnonzero(need)
        if not len(users):
            break
        user = np.repeat(users, need[users])
        movie = (np.searchsorted(cdf, rng.random(len(user)), side="right") if round_ < 3
                 else rng.integers(0, n_movies, len(user)))
        new = np.sort(user * n_movies + movie, kind="stable")  # np.unique is far slower on 25M
        new = new[np.append(True, new[1:] != new[:-1])]
        for part in parts:
            pos = np.searchsorted(part, new).clip(max=len(part) - 1)
            new = new[part[pos] != new]
        if len(new):
            parts.append(new)
        need -= np.bincount(new // n_movies, minlength=len(need))
    return np.sort(np.concatenate(parts), kind="stable")


def _timestamps(rng: np.random.Generator, user: np.ndarray, n_users: int) -> np.ndarray:
    """Each user joins between 1995 and 2019 (more later) and rates within a window of minutes to
    years (log-normal), most ratings early on; short windows give ties in timestamp, as in ML."""
    start = FIRST_TS + (LAST_TS - FIRST_TS) * rng.beta(1.3, 1.0, n_users)
    span = np.minimum(LAST_TS - start, np.exp(rng.normal(np.log(60 * DAY), 2.5, n_users)))
    return (start[user] + span[user] * rng.random(len(user)) ** 2).astype(np.int64)


def _stars(rng: np.random.Generator, user: np.ndarray, movie: np.ndarray, ts: np.ndarray, genre_mask: np.ndarray,
           year: np.ndarray, log_pop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratings in half stars (1..10), each rating's noise-free mean and its star step (0.5 or 1).

    mean = MEAN_RATING + user bias + movie quality + user-genre taste; rating = round(mean + noise).
    Quality = the movie's genres' GENRE_EFFECT + an older-is-better year effect + popularity + its own
    part, so the candidate's genres and year in a prompt carry signal, and the history's stars show
    the user's bias: a model reading prompts has something to learn, not only a CF model.
    """
    n_users, n_movies = int(user.max()) + 1, len(genre_mask)
    bias = rng.normal(0, USER_BIAS_SD, n_users)
    share = genre_mask / np.maximum(genre_mask.sum(1, keepdims=True), 1)
    # popular movies are better, centred on the average rating (not the average movie)
    pop = np.exp(log_pop - log_pop.max())
    quality = (share @ GENRE_EFFECT + YEAR_EFFECT * np.clip((1995 - year) / 25, -1, 2)
               + 0.2 * (log_pop - (pop * log_pop).sum() / pop.sum()) / log_pop.std()
               + rng.normal(0, MOVIE_OWN_SD, n_movies))
    affinity = rng.normal(0, TASTE_SD, (n_users, genre_mask.shape[1])).astype(np.float32)
    share = share.astype(np.float32)
    taste = np.empty(len(user), dtype=np.float32)
    for lo in range(0, len(user), 1 << 21):  # chunks keep the (chunk x 19) temporaries small
        s = slice(lo, lo + (1 << 21))
        taste[s] = np.einsum("ij,ij->i", affinity[user[s]], share[movie[s]])
    mu = (MEAN_RATING + bias[user] + quality[movie] + taste).astype(np.float32)
    raw = mu + rng.normal(0, NOISE_SD, len(user))
    half = (ts >= HALF_STARS_FROM) & (rng.random(n_users) < 0.7)[user]
    stars = np.where(half, np.clip(np.rint(raw * 2), 1, 10), 2 * np.clip(np.rint(raw), 1, 5)).astype(np.int64)
    return stars, mu, np.where(half, 0.5, 1.0).astype(np.float32)


def like_probability(mu: np.ndarray, step: np.ndarray, threshold: float, noise_sd: float = NOISE_SD) -> np.ndarray:
    """True P(rating >= threshold) of ratings drawn as round(mu + N(0, noise_sd)) to `step` stars.

    A rating reaches the threshold when mu + noise reaches the rounding boundary below it, half a
    step under the smallest allowed rating >= threshold; the lowest rating (one step) is always reached.
    """
    from scipy.special import ndtr

    mu, step = np.asarray(mu, np.float64), np.asarray(step, np.float64)
    first = np.ceil(threshold / step - 1e-9)  # smallest rating >= threshold, in steps
    boundary = (first - 0.5) * step
    return np.where(first <= 1, 1.0, ndtr((mu - boundary) / noise_sd))


def movies_csv(movies: pa.Table) -> bytes:
    """movies.csv as ML writes it: titles quoted only when they hold a comma or a quote."""
    title = movies["title"].to_pandas()
    quoted = title.where(~title.str.contains('[,"\n]'), '"' + title.str.replace('"', '""') + '"')
    lines = movies[MOVIE].to_pandas().astype(str) + "," + quoted + "," + movies["genres"].to_pandas() + "\n"
    return (f"{MOVIE},title,genres\n" + "".join(lines)).encode()


def write(out: Path, n_users: int, n_movies: int, n_ratings: int, seed: int, force: bool = False) -> None:
    """Write ratings.csv and movies.csv into `out` (each atomically)."""
    existing = [p for p in (out / RATINGS_CSV, out / MOVIES_CSV) if p.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} exists; pass --force to overwrite")
    ratings, movies, truth = generate(n_users, n_movies, n_ratings, seed)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(ratings, sink, pacsv.WriteOptions(quoting_style="none", quoting_header="none",
                                                      batch_size=1 << 16))
    atomic_write_bytes(out / MOVIES_CSV, movies_csv(movies))
    atomic_write_bytes(out / RATINGS_CSV, sink.getvalue())
    truth_sink = pa.BufferOutputStream()
    pq.write_table(truth, truth_sink)
    atomic_write_bytes(out / TRUTH_FILE, truth_sink.getvalue())


def main(args: argparse.Namespace) -> int:
    n_users, n_movies, n_ratings = sizes(args.scale, args.users, args.movies, args.ratings)
    blocker = next((p for p in (Path(args.out), *Path(args.out).parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"--out {args.out}: {blocker} is a file; synth writes a folder")
    start = time.perf_counter()
    write(Path(args.out), n_users, n_movies, n_ratings, args.seed, args.force)
    print(f"wrote {args.out}/{RATINGS_CSV} and {MOVIES_CSV}: {n_users:,} users, {n_movies:,} movies, "
          f"{n_ratings:,} ratings (seed {args.seed}) in {time.perf_counter() - start:.1f} s")
    return 0
