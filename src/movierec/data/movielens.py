"""MovieLens data: the one schema every release layout is read into, its checks, and the cleaning later
stages rely on. Reading the files of each layout is layouts.py's job.

`layouts.load` returns ratings sorted by (userId, timestamp, movieId), one row per (user, movie). That
order defines "earlier" everywhere: a rating's history is the ratings of the same user with a strictly
smaller timestamp (see split.py), so ratings from the same second never see each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from movierec.errors import UserError

USER, MOVIE, RATING, TIMESTAMP = "userId", "movieId", "rating", "timestamp"
TITLE, GENRES = "title", "genres"
RATINGS_CSV, MOVIES_CSV = "ratings.csv", "movies.csv"
RATINGS_SCHEMA = {USER: pa.int32(), MOVIE: pa.int32(), RATING: pa.float32(), TIMESTAMP: pa.int64()}
MOVIES_SCHEMA = {MOVIE: pa.int32(), TITLE: pa.string(), GENRES: pa.string()}
MIN_RATING, MAX_RATING = 0.5, 5.0
NO_GENRES = "(no genres listed)"
# what str.splitlines splits at; in a title it would break the prompt's one-line-per-movie structure
LINE_BREAK = r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]"
GENRE_NAMES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass(frozen=True)
class MovieLens:
    ratings: pa.Table  # RATINGS_SCHEMA, sorted by (userId, timestamp, movieId), unique (userId, movieId)
    movies: pa.Table  # MOVIES_SCHEMA, sorted by movieId, titles stripped, on one line
    oddities: dict[str, int]  # what was dropped or tolerated, for the manifest
    layout: str  # the release layout read (layouts.LAYOUTS)


def clean(ratings: pa.Table, movies: pa.Table, layout: str, where: tuple[str, str], first_line: int,
          oddities: dict[str, int]) -> MovieLens:
    """Check and clean what a layout reader read (see layouts.py) into the one schema.

    Args:
        ratings: RATINGS_SCHEMA columns in file order. movies: MOVIES_SCHEMA columns, genres as in movies.csv.
        where: how to name the ratings file and the movies file in errors.
        first_line: line number of the ratings file's first row (2 below a header), for errors.
        oddities: the layout's own counts; the ones all layouts share are added here.
    """
    header = ", only a header" if first_line > 1 else ""
    movies, movie_oddities = _clean_movies(movies, where[1], header)
    cols = _check_ratings(ratings, where[0], first_line, header)
    ratings, dropped = _clean_ratings(cols, movies[MOVIE].to_numpy(), where[0])
    return MovieLens(ratings, movies, oddities | movie_oddities | dropped, layout)


def _check_ratings(t: pa.Table, where: str, first_line: int, header: str) -> dict[str, np.ndarray]:
    if t.num_rows == 0:
        raise UserError(f"{where}: no ratings{header}")
    for col in RATINGS_SCHEMA:
        if n := t[col].null_count:
            raise UserError(f"{where}: {n} rows have an empty {col}")
    cols = {c: t[c].to_numpy() for c in RATINGS_SCHEMA}
    r, ts = cols[RATING], cols[TIMESTAMP]
    bad = np.flatnonzero(~((r >= MIN_RATING) & (r <= MAX_RATING)))  # also catches NaN
    if len(bad):
        raise UserError(f"{where}: {len(bad)} ratings outside {MIN_RATING}..{MAX_RATING}"
                        f" (first on line {bad[0] + first_line}: {r[bad[0]]})")
    if len(bad := np.flatnonzero(ts < 0)):
        raise UserError(f"{where}: {len(bad)} negative timestamps (first on line {bad[0] + first_line}: "
                        f"{ts[bad[0]]}); expected unix seconds")
    return cols


def _clean_movies(t: pa.Table, where: str, header: str) -> tuple[pa.Table, dict[str, int]]:
    if t.num_rows == 0:
        raise UserError(f"{where}: no movies{header}")
    if n := t[MOVIE].null_count:
        raise UserError(f"{where}: {n} rows have an empty {MOVIE}")
    t = t.sort_by(MOVIE)
    ids = t[MOVIE].to_numpy()
    if len(dup := ids[1:][ids[1:] == ids[:-1]]):
        raise UserError(f"{where}: {len(dup)} repeated movieIds (first: {dup[0]}); each movie must appear once")
    titles = t[TITLE].to_pandas().str.strip()
    broken = titles.str.contains(LINE_BREAK, regex=True)
    titles = titles.str.replace(LINE_BREAK, " ", regex=True)
    t = t.set_column(t.schema.get_field_index(TITLE), TITLE, pa.array(titles, pa.string()))
    oddities = {
        "movies_no_genres": int((t[GENRES].to_pandas() == NO_GENRES).sum()),
        "titles_with_comma": int(titles.str.contains(",", regex=False).sum()),
        "titles_with_quote": int(titles.str.contains('"', regex=False).sum()),
        "titles_non_ascii": int((~titles.map(str.isascii)).sum()),
        "titles_with_newline": int(broken.sum()),  # each line break replaced by a space
    }
    return t, oddities


def _clean_ratings(cols: dict[str, np.ndarray], movie_ids: np.ndarray, where: str) -> tuple[pa.Table, dict[str, int]]:
    """Drop ratings of unknown movies, keep the latest of repeated (user, movie) rows, sort.

    ML files come sorted by (userId, movieId); then no sort is needed to find repeats.
    """
    user, movie, ts = cols[USER], cols[MOVIE], cols[TIMESTAMP]
    span = int(ts.max()) - int(ts.min())
    if span >= 2**32:
        raise UserError(f"{where}: timestamps span {span} s (over 136 years); expected unix seconds")
    # (user, movie) as one sortable int64: movie shifted into 0..2**32-1
    key = user.astype(np.int64) * 2**32 + (movie.astype(np.int64) + 2**31)
    if np.all(key[1:] >= key[:-1]):
        rows = np.flatnonzero(_latest_of_repeats(key, ts))
    else:
        order = np.argsort(key, kind="stable")
        rows = order[_latest_of_repeats(key[order], ts[order])]
    del key
    n_repeats = len(user) - len(rows)
    known = np.isin(movie[rows], movie_ids)
    rows = rows[known]
    # stable sort on (user, timestamp) keeps movieId order within a second
    by_time = user[rows].astype(np.int64) * 2**32 + (ts[rows] - ts.min())
    rows = rows[np.argsort(by_time, kind="stable")]
    del by_time
    table = pa.table({c: pa.array(cols[c][rows], type=tp) for c, tp in RATINGS_SCHEMA.items()})
    return table, {"ratings_duplicate_dropped": n_repeats, "ratings_unknown_movie_dropped": int((~known).sum())}


def _latest_of_repeats(key: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Mask over rows sorted by key (ties in file order): the latest row of each key, the last on ties."""
    keep = np.ones(len(key), dtype=bool)
    same = key[1:] == key[:-1]
    if not same.any():
        return keep
    involved = np.zeros(len(key), dtype=bool)
    involved[1:] |= same
    involved[:-1] |= same
    idx = np.flatnonzero(involved)
    idx = idx[np.lexsort((idx, ts[idx], key[idx]))]  # by key, then time, then file position
    last = np.append(key[idx][1:] != key[idx][:-1], True)
    keep[idx[~last]] = False
    return keep
