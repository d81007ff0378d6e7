"""MovieLens files: column names, reading with schema checks, and the cleaning later stages rely on.

`load` returns ratings sorted by (userId, timestamp, movieId), one row per (user, movie). That order
defines "earlier" everywhere: a rating's history is the ratings of the same user with a strictly
smaller timestamp (see split.py), so ratings from the same second never see each other.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from movierec.errors import UserError

USER, MOVIE, RATING, TIMESTAMP = "userId", "movieId", "rating", "timestamp"
TITLE, GENRES = "title", "genres"
RATINGS_CSV, MOVIES_CSV = "ratings.csv", "movies.csv"
RATINGS_SCHEMA = {USER: pa.int32(), MOVIE: pa.int32(), RATING: pa.float32(), TIMESTAMP: pa.int64()}
MOVIES_SCHEMA = {MOVIE: pa.int32(), TITLE: pa.string(), GENRES: pa.string()}
MIN_RATING, MAX_RATING = 0.5, 5.0
NO_GENRES = "(no genres listed)"
GENRE_NAMES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass(frozen=True)
class MovieLens:
    ratings: pa.Table  # RATINGS_SCHEMA, sorted by (userId, timestamp, movieId), unique (userId, movieId)
    movies: pa.Table  # MOVIES_SCHEMA, sorted by movieId, titles stripped
    oddities: dict[str, int]  # what was dropped or tolerated, for the manifest


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def input_md5s(source: Path) -> dict[str, str]:
    """md5 of the zip, or of both CSVs of a folder, keyed by file name."""
    if source.is_dir():
        files = [source / RATINGS_CSV, source / MOVIES_CSV]
        for f in files:
            if not f.is_file():
                raise UserError(f"{f}: file not found")
        return {f.name: md5_file(f) for f in files}
    return {source.name: md5_file(source)}


def load(source: Path) -> MovieLens:
    """Read, check and clean ratings.csv + movies.csv from a folder or a zip such as ml-25m.zip.

    Raises UserError for anything that cannot be MovieLens data; tolerated oddities are counted.
    """
    movies, oddities = _clean_movies(_read_csv(source, MOVIES_CSV, MOVIES_SCHEMA), _where(source, MOVIES_CSV))
    ratings, dropped = _clean_ratings(_read_ratings(source), movies[MOVIE].to_numpy())
    return MovieLens(ratings, movies, oddities | dropped)


def _where(source: Path, name: str) -> str:
    return str(source / name) if source.is_dir() else f"{source}:{name}"


@contextmanager
def _open(source: Path, name: str) -> Iterator[IO[bytes]]:
    """A binary file `name` from a folder, or from a zip archive at any depth (ml-25m/ratings.csv)."""
    if source.is_dir():
        path = source / name
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        with open(path, "rb") as f:
            yield f
        return
    if not source.is_file():
        raise UserError(f"{source}: not found")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{source}: not a readable zip archive ({e}); a download may have been cut short") from None
    with archive:
        members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == name]
        if not members:
            raise UserError(f"{source}: has no {name}")
        with archive.open(min(members, key=len)) as f:
            yield f


def _read_csv(source: Path, name: str, schema: dict[str, pa.DataType]) -> pa.Table:
    where = _where(source, name)
    header: list[str] = []
    try:
        with _open(source, name) as f:
            header = _check_header(where, f.readline(), list(schema))
            f.seek(0)
            return pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                column_types=schema, include_columns=list(schema),
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowException, zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # pyarrow counts columns from 0 ("In CSV column #2"); name the column instead
        detail = re.sub(r"In CSV column #(\d+)",
                        lambda m: f"column {header[int(m[1])]!r}" if int(m[1]) < len(header) else m[0], detail)
        raise UserError(f"{where}: cannot be read: {detail}") from None


def _check_header(where: str, line: bytes, columns: list[str]) -> list[str]:
    """The header's column names; UserError when a required one is missing."""
    if not line.strip():
        raise UserError(f"{where}: empty file (expected a header: {','.join(columns)})")
    found = [c.strip().strip('"') for c in line.decode("utf-8-sig", "replace").rstrip("\r\n").split(",")]
    problems = []
    for col in columns:
        if col not in found:
            close = difflib.get_close_matches(col, [f for f in found if f not in columns], n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}? it must be named {col!r})" if close else ""
            problems.append(f"missing column {col!r}{hint}")
    if problems:
        raise UserError(f"{where}: {'; '.join(problems)}; header is {','.join(found)}")
    return found


def _read_ratings(source: Path) -> dict[str, np.ndarray]:
    where = _where(source, RATINGS_CSV)
    t = _read_csv(source, RATINGS_CSV, RATINGS_SCHEMA)
    if t.num_rows == 0:
        raise UserError(f"{where}: no ratings, only a header")
    for col in RATINGS_SCHEMA:
        if n := t[col].null_count:
            raise UserError(f"{where}: {n} rows have an empty {col}")
    cols = {c: t[c].to_numpy() for c in RATINGS_SCHEMA}
    r = cols[RATING]
    bad = np.flatnonzero(~((r >= MIN_RATING) & (r <= MAX_RATING)))  # also catches NaN
    if len(bad):
        raise UserError(f"{where}: {len(bad)} ratings outside {MIN_RATING}..{MAX_RATING}"
                        f" (first on line {bad[0] + 2}: {r[bad[0]]})")
    return cols


def _clean_movies(t: pa.Table, where: str) -> tuple[pa.Table, dict[str, int]]:
    if t.num_rows == 0:
        raise UserError(f"{where}: no movies, only a header")
    if n := t[MOVIE].null_count:
        raise UserError(f"{where}: {n} rows have an empty {MOVIE}")
    t = t.sort_by(MOVIE)
    ids = t[MOVIE].to_numpy()
    if len(dup := ids[1:][ids[1:] == ids[:-1]]):
        raise UserError(f"{where}: {len(dup)} repeated movieIds (first: {dup[0]}); each movie must appear once")
    titles = t[TITLE].to_pandas().str.strip()
    t = t.set_column(t.schema.get_field_index(TITLE), TITLE, pa.array(titles, pa.string()))
    oddities = {
        "movies_no_genres": int((t[GENRES].to_pandas() == NO_GENRES).sum()),
        "titles_with_comma": int(titles.str.contains(",", regex=False).sum()),
        "titles_with_quote": int(titles.str.contains('"', regex=False).sum()),
        "titles_non_ascii": int((~titles.map(str.isascii)).sum()),
    }
    return t, oddities


def _clean_ratings(cols: dict[str, np.ndarray], movie_ids: np.ndarray) -> tuple[pa.Table, dict[str, int]]:
    """Drop ratings of unknown movies, keep the latest of repeated (user, movie) rows, sort.

    ML files come sorted by (userId, movieId); then no sort is needed to find repeats.
    """
    user, movie, ts = cols[USER], cols[MOVIE], cols[TIMESTAMP]
    span = int(ts.max()) - int(ts.min())
    if span >= 2**32:
        raise UserError(f"ratings: timestamps span {span} s (over 136 years); expected unix seconds")
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
