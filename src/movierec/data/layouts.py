"""MovieLens release layouts: which one a folder or zip holds, and reading its two files (`load`).

    layout   releases                                   files (in a folder, or anywhere in a zip)
    csv      ML-20M, ML-25M, ML-32M, ml-latest(-small)  ratings.csv, movies.csv: with a header, UTF-8
    dat      ML-1M, ML-10M                              ratings.dat  UserID::MovieID::Rating::Timestamp
                                                        movies.dat   MovieID::Title::Genres
    ml-100k  ML-100K                                    u.data       user, item, rating, timestamp (tabs)
                                                        u.item       id|title|release date|video release
                                                                     date|IMDb URL|19 genre flags

The layout follows from the file names; no flag is needed. Each reader hands movielens.clean the ratings
and movies in the one schema, genres spelled as the CSV releases spell them ("Children's" -> "Children";
no genre, or ML-100K's `unknown` flag alone -> "(no genres listed)"). movies.dat and u.item are read as
UTF-8 when they are valid UTF-8, else as latin-1: ML-1M and ML-100K are latin-1, ML-10M is UTF-8, and
latin-1 accented titles are never valid UTF-8. Oddities a layout handles, counted in the manifest:

    genres_renamed              movies listed as "Children's" (dat, ml-100k)
    titles_latin1               titles with non-ASCII characters that were read as latin-1 (dat, ml-100k)
    movies_genre_unknown        ML-100K movies flagged `unknown`; their other flags are kept
    movies_no_release_date      ML-100K movies without a release date (ignored: titles carry the year)
    movies_placeholder_dropped  ML-100K's movie titled "unknown" (no date, no genre); its ratings are
                                dropped with it and counted in ratings_unknown_movie_dropped
"""

from __future__ import annotations

import difflib
import hashlib
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from movierec.data.movielens import (
    GENRES,
    MOVIE,
    MOVIES_CSV,
    MOVIES_SCHEMA,
    NO_GENRES,
    RATINGS_CSV,
    RATINGS_SCHEMA,
    TITLE,
    MovieLens,
    clean,
)
from movierec.errors import UserError

LAYOUTS = {  # layout -> (ratings file, movies file)
    "csv": (RATINGS_CSV, MOVIES_CSV),
    "dat": ("ratings.dat", "movies.dat"),
    "ml-100k": ("u.data", "u.item"),
}
RELEASES = {"csv": "ML-20M and later", "dat": "ML-1M, ML-10M", "ml-100k": "ML-100K"}
RATINGS_FORMAT = {"dat": "UserID::MovieID::Rating::Timestamp", "ml-100k": "user<TAB>item<TAB>rating<TAB>timestamp"}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")  # u.item's flags, in order
U_ITEM_FIELDS = 5 + len(ML100K_GENRES)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # in no title; UTF-16 or binary data read as latin-1
READ_ERRORS = (pa.ArrowException, zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError)


def detect(source: Path) -> str:
    """The layout of a folder or zip, from the names of the files it holds."""
    names = _names(source)
    found = [layout for layout, files in LAYOUTS.items() if names & set(files)]
    if len(found) == 1:
        return found[0]
    if not found:
        expected = "; ".join(f"{' + '.join(files)} ({RELEASES[layout]})" for layout, files in LAYOUTS.items())
        raise UserError(f"{source}: no MovieLens files; expected {expected}")
    held = ", ".join(" / ".join(sorted(names & set(LAYOUTS[layout]))) for layout in found)
    raise UserError(f"{source}: holds files of several MovieLens layouts ({held}); keep one release per folder")


def input_md5s(source: Path) -> dict[str, str]:
    """md5 of the zip, or of the layout's two files in a folder, keyed by file name."""
    if not source.is_dir():
        return {source.name: md5_file(source)}
    files = [source / name for name in LAYOUTS[detect(source)]]
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: file not found")
    return {f.name: md5_file(f) for f in files}


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def load(source: Path) -> MovieLens:
    """Read, check and clean the ratings and movies of any MovieLens release, as a folder or a zip.

    Raises UserError for anything that cannot be MovieLens data; tolerated oddities are counted.
    """
    layout = detect(source)
    ratings_file, movies_file = LAYOUTS[layout]
    if layout == "csv":
        movies, oddities = _read_csv(source, MOVIES_CSV, MOVIES_SCHEMA), {}
        ratings = _read_csv(source, RATINGS_CSV, RATINGS_SCHEMA)
    else:
        movies, oddities = (_dat_movies if layout == "dat" else _u_item)(source, movies_file)
        ratings = _read_ratings(source, ratings_file, layout)
    where = (_where(source, ratings_file), _where(source, movies_file))
    return clean(ratings, movies, layout, where, 2 if layout == "csv" else 1, oddities)


def _where(source: Path, name: str) -> str:
    return str(source / name) if source.is_dir() else f"{source}:{name}"


def _names(source: Path) -> set[str]:
    if source.is_dir():
        return {p.name for p in source.iterdir() if p.is_file()}
    with _zip(source) as archive:
        return {m.rsplit("/", 1)[-1] for m in archive.namelist()}


@contextmanager
def _zip(source: Path) -> Iterator[zipfile.ZipFile]:
    if not source.is_file():
        raise UserError(f"{source}: not found")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{source}: not a readable zip archive ({e}); a download may have been cut short") from None
    with archive:
        yield archive


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
    with _zip(source) as archive:
        members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == name]
        if not members:
            raise UserError(f"{source}: has no {name}")
        with archive.open(min(members, key=len)) as f:
            yield f


def _read_csv(source: Path, name: str, schema: dict[str, pa.DataType]) -> pa.Table:
    """A CSV release file: the header must name the schema's columns (in any order, others ignored)."""
    with _reading(source, name) as (f, header):
        header += _check_header(_where(source, name), f.readline(), list(schema))
        f.seek(0)
        return pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
            column_types=schema, include_columns=list(schema),
            null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))


def _read_ratings(source: Path, name: str, layout: str) -> pa.Table:
    """u.data or ratings.dat: four numbers a line, no header. pyarrow splits on one character, so
    "::" is read as ':' with an empty column between each two fields, which must stay empty."""
    columns = list(RATINGS_SCHEMA)
    types = dict(RATINGS_SCHEMA)
    if layout == "dat":
        gaps = ["::1", "::2", "::3"]
        columns = [columns[0], gaps[0], columns[1], gaps[1], columns[2], gaps[2], columns[3]]
        types |= {g: pa.null() for g in gaps}
    with _reading(source, name, RATINGS_FORMAT[layout]) as (f, header):
        header += columns
        table = pacsv.read_csv(
            f, read_options=pacsv.ReadOptions(column_names=columns),
            parse_options=pacsv.ParseOptions(delimiter=":" if layout == "dat" else "\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=[""]))
    return table.select(list(RATINGS_SCHEMA))


@contextmanager
def _reading(source: Path, name: str, line_format: str | None = None) -> Iterator[tuple[IO[bytes], list[str]]]:
    """Open `name` for pyarrow; its errors become one UserError line naming the file and the column.

    The caller fills the yielded list with the file's column names."""
    header: list[str] = []
    try:
        with _open(source, name) as f:
            yield f, header
    except READ_ERRORS as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if m := re.match(r"CSV parse error: Expected (\d+) columns, got (\d+): (.*)", detail):
            detail = (f"expected {line_format}, got {m[3]!r}" if line_format
                      else f"expected {m[1]} comma-separated fields, got {m[2]}: {m[3]!r}")
        elif m := re.match(r"In CSV column #(\d+): CSV conversion error to null: invalid value '(.*)'", detail):
            detail = f"expected {line_format}, found a single ':' before {m[2]!r}"
        elif m := re.match(r"In CSV column #(\d+): (.*)", detail):  # pyarrow counts from 0; name the column
            column = header[int(m[1])] if int(m[1]) < len(header) else f"#{int(m[1]) + 1}"
            detail = f"column {column!r}: {m[2]}"
        if "invalid UTF8" in detail:
            detail += " (the file must be UTF-8)"
        if "\x00" in detail:
            detail += " (NUL bytes: saved as UTF-16?)"
        detail = CONTROL.sub(lambda c: repr(c[0])[1:-1], detail)  # shown escaped, on one line
        raise UserError(f"{_where(source, name)}: cannot be read: {detail}") from None


def _check_header(where: str, line: bytes, columns: list[str]) -> list[str]:
    """The header's column names; UserError when a required one is missing."""
    if not line.strip():
        raise UserError(f"{where}: empty file (expected a header: {','.join(columns)})")
    if b"\x00" in line:
        raise UserError(f"{where}: holds NUL bytes (saved as UTF-16?); the file must be UTF-8")
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


def _read_lines(source: Path, name: str) -> tuple[pd.Series, bool]:
    """The non-empty lines of a small text file, indexed by line number - 1, and whether it was latin-1."""
    where = _where(source, name)
    with _reading(source, name) as (f, _):
        data = f.read()
    try:
        text, latin1 = data.decode("utf-8-sig"), False  # a byte-order mark, as some editors save, is dropped
    except UnicodeDecodeError:
        text, latin1 = data.decode("latin-1"), True
    # split on "\n" only: str.splitlines would also split at latin-1's \x85 and \x1c..\x1e
    lines = pd.Series(text.split("\n"), dtype=object).str.removesuffix("\r")
    if len(bad := np.flatnonzero(lines.str.contains(CONTROL).to_numpy())):
        char = CONTROL.search(lines[bad[0]])[0]
        raise UserError(f"{where}: line {bad[0] + 1} holds the control character {char!r}: not UTF-8 or "
                        f"latin-1 text (saved as UTF-16?)")
    lines = lines[lines.str.strip() != ""]
    if lines.empty:
        raise UserError(f"{where}: no movies (an empty file)")
    return lines, latin1


def _movies_table(ids: pd.Series, titles: pd.Series, genres: np.ndarray | pd.Series) -> pa.Table:
    return pa.table({MOVIE: pa.array(ids.astype(np.int32).to_numpy(), pa.int32()),
                     TITLE: pa.array(titles.to_numpy(), pa.string()), GENRES: pa.array(genres, pa.string())})


def _latin1_titles(titles: pd.Series, latin1: bool) -> int:
    return int((~titles.map(str.isascii)).sum()) if latin1 else 0


def _dat_movies(source: Path, name: str) -> tuple[pa.Table, dict[str, int]]:
    """movies.dat: MovieID::Title::Genres; a title may hold ':' (genres never do)."""
    lines, latin1 = _read_lines(source, name)
    parts = lines.str.extract(r"^(\d{1,9})::(.*)::([^:]*)$")
    if len(bad := parts.index[parts[0].isna()]):
        raise UserError(f"{_where(source, name)}: line {bad[0] + 1}: expected MovieID::Title::Genres, "
                        f"got {lines[bad[0]]!r}")
    genres = parts[2].str.strip()
    renamed = genres.str.contains("Children's", regex=False)
    genres = genres.str.replace("Children's", "Children", regex=False).replace("", NO_GENRES)
    oddities = {"genres_renamed": int(renamed.sum()), "titles_latin1": _latin1_titles(parts[1], latin1)}
    return _movies_table(parts[0], parts[1], genres), oddities


def _u_item(source: Path, name: str) -> tuple[pa.Table, dict[str, int]]:
    """u.item: id|title|release date|video release date|IMDb URL|19 genre flags (0 or 1)."""
    where = _where(source, name)
    lines, latin1 = _read_lines(source, name)
    n_fields = lines.str.count(r"\|") + 1
    if len(bad := n_fields.index[n_fields != U_ITEM_FIELDS]):
        raise UserError(f"{where}: line {bad[0] + 1}: expected {U_ITEM_FIELDS} '|'-separated fields (id, title, "
                        f"release date, video release date, IMDb URL, {len(ML100K_GENRES)} genre flags), "
                        f"got {n_fields[bad[0]]}: {lines[bad[0]]!r}")
    fields = lines.str.split("|", expand=True)
    flags = fields.iloc[:, 5:]
    for problem, rows in (("a movie id is not a number", ~fields[0].str.fullmatch(r"\d{1,9}")),
                          ("genre flags must be 0 or 1", ~flags.isin(["0", "1"]).all(axis=1))):
        if rows.any():
            line = rows.index[rows.to_numpy()][0]
            raise UserError(f"{where}: line {line + 1}: {problem}: {lines[line]!r}")
    flags = flags.to_numpy() == "1"
    names = [g.replace("Children's", "Children") for g in ML100K_GENRES[1:]]
    code = flags[:, 1:] @ (1 << np.arange(len(names)))
    uniq, inverse = np.unique(code, return_inverse=True)
    text = np.array(["|".join(g for i, g in enumerate(names) if c >> i & 1) or NO_GENRES for c in uniq], dtype=object)
    placeholder = (fields[1].str.strip() == "unknown").to_numpy()
    oddities = {"genres_renamed": int(flags[:, ML100K_GENRES.index("Children's")].sum()),
                "titles_latin1": _latin1_titles(fields[1], latin1),
                "movies_genre_unknown": int(flags[:, 0].sum()),
                "movies_no_release_date": int((fields[2].str.strip() == "").sum()),
                "movies_placeholder_dropped": int(placeholder.sum())}
    keep = ~placeholder
    return _movies_table(fields[0][keep], fields[1][keep], text[inverse][keep]), oddities
