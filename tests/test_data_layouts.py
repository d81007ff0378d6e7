"""Every MovieLens release layout: detected without a flag, read to the same examples, oddities counted,
malformed files rejected with one line naming the file."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from data_helpers import (
    LAYOUT_FILES,
    SIZES,
    prepare,
    read_jsonl,
    write_config,
    write_release,
)

from movierec.data import synth
from movierec.folders.datadir import DatasetDir

TRAIN_NAME, EVAL_NAME = DatasetDir.TRAIN_NAME, DatasetDir.EVAL_NAME
RELEASES = ["csv", "ml-1m", "ml-10m", "ml-100k"]
LAYOUT_OF = {"csv": "csv", "ml-1m": "dat", "ml-10m": "dat", "ml-100k": "ml-100k"}
OUTPUTS = [f"{TRAIN_NAME}.jsonl", f"{EVAL_NAME}.jsonl", "ratings.parquet", "movies.parquet"]
SHARED_ODDITIES = ["ratings_duplicate_dropped", "ratings_unknown_movie_dropped", "movies_no_genres",
                   "titles_with_comma", "titles_with_quote", "titles_non_ascii", "titles_with_newline"]


def one_set() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic ratings every layout can hold: whole stars, latin-1 titles, no IMAX (not an ML-100K genre)."""
    ratings, movies, _ = (t.to_pandas() for t in synth.generate(SIZES["users"], SIZES["movies"], SIZES["ratings"], 0))
    ratings["rating"] = np.ceil(ratings.rating.astype(float))
    titles = movies.title.map(lambda t: t.encode("latin-1", "replace").decode("latin-1"))
    genres = movies.genres.str.replace(r"\|?IMAX", "", regex=True).str.strip("|").replace("", "(no genres listed)")
    assert titles.str.contains("é").any() and (genres == "(no genres listed)").any()
    return ratings, movies.assign(title=titles, genres=genres)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The one set in every release layout, as a folder and as a zip, each prepared."""
    ratings, movies = one_set()
    base = tmp_path_factory.mktemp("layouts")
    config = write_config(base / "c.yaml", input="unused", out_dir="unused")
    runs = {}
    for release in RELEASES:
        for zipped in (False, True):
            name = f"{release}{'.zip' if zipped else ''}"
            source = write_release(base / "raw" / name, release, ratings, movies, zipped)
            out = base / "out" / name
            assert prepare(config, "--input", str(source), "--out", str(out)) == 0, name
            runs[name] = SimpleNamespace(source=source, out=out,
                                         manifest=json.loads((out / "manifest.json").read_text()))
    return SimpleNamespace(ratings=ratings, movies=movies, runs=runs, config=config, base=base)


@pytest.mark.parametrize("name", [f"{r}{z}" for r in RELEASES for z in ("", ".zip")])
def test_every_layout_prepares_to_the_same_examples(written, name):
    reference, run = written.runs["csv"], written.runs[name]
    for output in OUTPUTS:
        assert (run.out / output).read_bytes() == (reference.out / output).read_bytes(), output
    m, ref = run.manifest, reference.manifest
    assert m["layout"] == LAYOUT_OF[name.removesuffix(".zip")]
    assert m["counts"] == ref["counts"] and m["cutoff_timestamp"] == ref["cutoff_timestamp"]
    assert {k: m["oddities"][k] for k in SHARED_ODDITIES} == {k: ref["oddities"][k] for k in SHARED_ODDITIES}
    expected_inputs = [run.source.name] if name.endswith(".zip") else sorted(LAYOUT_FILES[name])
    assert sorted(m["inputs"]) == expected_inputs


def test_the_examples_are_the_written_ratings(written):
    """Not only equal to each other: the targets are the synthetic ratings, prompts hold latin-1 titles."""
    records = read_jsonl(written.runs["ml-100k"].out / f"{TRAIN_NAME}.jsonl")
    rated = written.ratings.set_index(["userId", "movieId"])
    for rec in records:
        row = rated.loc[(rec["user_id"], rec["movie_id"])]
        assert (rec["rating"], rec["timestamp"]) == (row.rating, row.timestamp)
    titles = set(written.movies.title)
    shown = {line.removeprefix("Candidate movie: ") for rec in records for line in rec["input"].splitlines()
             if line.startswith("Candidate movie: ")}
    assert shown <= titles and any(not t.isascii() for t in shown)


def test_layout_oddities_are_counted(written):
    movies = written.movies
    non_ascii = int((~movies.title.map(str.isascii)).sum())
    children = int(movies.genres.str.contains("Children").sum())
    assert "genres_renamed" not in written.runs["csv"].manifest["oddities"]
    assert written.runs["ml-1m"].manifest["oddities"].items() >= {"genres_renamed": children,
                                                               "titles_latin1": non_ascii}.items()
    assert {k: written.runs["ml-10m"].manifest["oddities"][k] for k in ("genres_renamed", "titles_latin1")} == {
        "genres_renamed": 0, "titles_latin1": 0}  # ML-10M spells "Children" and is UTF-8
    odd = written.runs["ml-100k"].manifest["oddities"]
    assert {k: odd[k] for k in ("genres_renamed", "titles_latin1", "movies_genre_unknown", "movies_no_release_date",
                                "movies_placeholder_dropped")} == {
        "genres_renamed": children, "titles_latin1": non_ascii,
        "movies_genre_unknown": int((movies.genres == "(no genres listed)").sum()),
        "movies_no_release_date": 0, "movies_placeholder_dropped": 0}


def test_ml100k_unknown_movie_and_genre(written, tmp_path):
    """ML-100K's placeholder movie "unknown" is dropped with its ratings; the `unknown` flag is no genre."""
    ratings, movies = written.ratings, written.movies.assign(release_date="01-Jan-1995")
    placeholder, unknown_only, unknown_and_drama = movies.movieId.iloc[:3]
    movies.loc[movies.movieId == placeholder, ["title", "genres", "release_date"]] = ["unknown", "unknown", ""]
    movies.loc[movies.movieId == unknown_only, ["genres", "release_date"]] = ["unknown", ""]
    movies.loc[movies.movieId == unknown_and_drama, "genres"] = "Drama|unknown"
    raw = write_release(tmp_path / "raw", "ml-100k", ratings, movies)
    assert "|unknown|||" in (raw / "u.item").read_text("latin-1")
    out = tmp_path / "out"
    assert prepare(written.config, "--input", str(raw), "--out", str(out)) == 0
    m = json.loads((out / "manifest.json").read_text())
    kept = pd.read_parquet(out / "movies.parquet").set_index("movieId")
    assert placeholder not in kept.index and len(kept) == len(movies) - 1
    assert kept.genres[unknown_only] == "(no genres listed)" and kept.genres[unknown_and_drama] == "Drama"
    n_placeholder = int((ratings.movieId == placeholder).sum())
    assert n_placeholder > 0 and m["counts"]["ratings"] == len(ratings) - n_placeholder
    assert m["oddities"]["ratings_unknown_movie_dropped"] == n_placeholder
    assert m["oddities"]["movies_placeholder_dropped"] == 1
    assert m["oddities"]["movies_no_release_date"] == 2
    assert m["oddities"]["movies_genre_unknown"] >= 3
    assert not pd.read_parquet(out / "ratings.parquet").movieId.eq(placeholder).any()


def test_titles_with_colons_in_movies_dat(written, tmp_path):
    movies = written.movies.copy()
    movies.loc[0, "title"] = "Star Wars: Episode IV - A New Hope: (1977)"
    movies.loc[1, "title"] = "Ends in a colon: (1990)"
    raw = write_release(tmp_path / "raw", "ml-1m", written.ratings, movies)
    assert prepare(written.config, "--input", str(raw), "--out", str(tmp_path / "out")) == 0
    kept = pd.read_parquet(tmp_path / "out" / "movies.parquet")
    assert kept.title.iloc[:2].tolist() == movies.title.iloc[:2].tolist()
    assert kept.genres.iloc[:2].tolist() == movies.genres.iloc[:2].tolist()


@pytest.mark.parametrize(("release", "breaks"), [("csv", ["\n", "\r\n"]), ("ml-10m", ["\u2028", "\u2029"])])
def test_line_breaks_in_titles_become_spaces_and_are_counted(written, tmp_path, release, breaks):
    """A title must not break a prompt's one-line-per-movie structure. CSV titles may hold a quoted newline,
    ML-10M's UTF-8 titles a Unicode line separator; latin-1 files (ML-1M, ML-100K) split their lines at every
    break, and their control characters are rejected (see BAD)."""
    movies = written.movies.copy()
    rated = written.ratings.movieId.value_counts().index[:2]  # titles every split shows
    first, second = (movies.movieId == rated[0]).to_numpy(), (movies.movieId == rated[1]).to_numpy()
    movies.loc[first, "title"] = f"Two{breaks[0]}Lines (1995)"
    movies.loc[second, "title"] = f"  And{breaks[1]}Three{breaks[0]}More (1996){breaks[0]}"  # stripped at the end
    raw = write_release(tmp_path / "raw", release, written.ratings, movies)
    out = tmp_path / "out"
    assert prepare(written.config, "--input", str(raw), "--out", str(out)) == 0
    kept = pd.read_parquet(out / "movies.parquet").set_index("movieId").title
    assert (kept[rated[0]], kept[rated[1]]) == ("Two Lines (1995)", "And Three More (1996)")
    assert json.loads((out / "manifest.json").read_text())["oddities"]["titles_with_newline"] == 2
    shown = set()
    for rec in read_jsonl(out / f"{TRAIN_NAME}.jsonl") + read_jsonl(out / f"{EVAL_NAME}.jsonl"):
        lines = rec["input"].splitlines()
        assert lines == rec["input"].split("\n") and len(lines) >= 7
        assert lines[0] == "The user's ratings, oldest first." and lines[-2].startswith("Candidate movie: ")
        assert lines[-1].startswith("Genres: ")
        assert all(line.startswith(("- ", "Liked (", "Disliked (")) for line in lines[1:-2])
        shown |= {t for t in kept[rated] if t in rec["input"]}
    assert shown == set(kept[rated])


# --- bad input: one line naming the file, exit code 2, nothing written ---

def _lines(name: str, edit):
    """Rewrite file `name` (latin-1 keeps any byte) through edit(list of lines) -> list of lines."""
    def mutate(raw: Path) -> None:
        path = raw / name
        path.write_text("\n".join(edit(path.read_text("latin-1").splitlines())) + "\n", "latin-1")
    return mutate


def _set(name: str, index: int, text: str):
    return _lines(name, lambda lines: [*lines[:index], text, *lines[index + 1:]])


def _replace(name: str, old: str, new: str):
    return _lines(name, lambda lines: [line.replace(old, new) for line in lines])


def _reencode(name: str, encoding: str):
    def mutate(raw: Path) -> None:
        (raw / name).write_bytes((raw / name).read_bytes().decode("utf-8", "replace").encode(encoding))
    return mutate


def _unlink(name: str):
    return lambda raw: (raw / name).unlink()


def _zip(*names: str, truncate: bool = False):
    """The folder replaced by a zip of `names` (at ml-x/), cut in half when `truncate`."""
    def mutate(raw: Path) -> Path:
        archive = raw.parent / "release.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for name in names:
                z.write(raw / name, f"ml-x/{name}")
        if truncate:
            archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        return archive
    return mutate


BAD = {  # release: {case: (mutate, message)}
    "ml-100k": {
        "missing u.item": (_unlink("u.item"), "u.item: file not found"),
        "missing u.data": (_unlink("u.data"), "u.data: file not found"),
        "u.data with commas": (_replace("u.data", "\t", ","), "u.data: cannot be read: expected user<TAB>item"),
        "u.data with 3 fields": (_set("u.data", 4, "1\t2\t3"), "u.data: cannot be read: expected user<TAB>item"),
        "u.data with 5 fields": (_set("u.data", 4, "1\t2\t3\t4\t5"), "u.data: cannot be read: expected user"),
        "u.data non-numeric rating": (_set("u.data", 4, "1\t2\tgood\t880000000"), "u.data: cannot be read: column 'rating'"),
        "u.data rating 6": (_set("u.data", 4, "1\t2\t6\t880000000"), "u.data: 1 ratings outside 0.5..5.0 (first on line 5"),
        "u.data negative timestamp": (_set("u.data", 4, "1\t2\t3\t-880000000"),
                                      "u.data: 1 negative timestamps (first on line 5: -880000000); expected unix"),
        "u.data as UTF-16": (_reencode("u.data", "utf-16"), "u.data: cannot be read"),
        "empty u.data": (_lines("u.data", lambda lines: []), "u.data: no ratings"),
        "u.item with tabs": (_replace("u.item", "|", "\t"), "u.item: line 1: expected 24 '|'-separated fields"),
        "u.item with 23 fields": (_lines("u.item", lambda ls: [*ls[:2], ls[2].rsplit("|", 1)[0], *ls[3:]]),
                                  "u.item: line 3: expected 24 '|'-separated fields"),
        "u.item genre flag 2": (_lines("u.item", lambda ls: [*ls[:2], ls[2][:-1] + "2", *ls[3:]]),
                                "u.item: line 3: genre flags must be 0 or 1"),
        "u.item id not a number": (_lines("u.item", lambda ls: ["x" + ls[0], *ls[1:]]),
                                   "u.item: line 1: a movie id is not a number"),
        "u.item as UTF-16": (_reencode("u.item", "utf-16"), "u.item: line 1 holds the control character"),
        "zip without u.item": (_zip("u.data"), "release.zip: has no u.item"),
        "truncated zip": (_zip("u.data", "u.item", truncate=True), "release.zip: not a readable zip"),
    },
    "ml-1m": {
        "missing movies.dat": (_unlink("movies.dat"), "movies.dat: file not found"),
        "missing ratings.dat": (_unlink("ratings.dat"), "ratings.dat: file not found"),
        "ratings.dat with commas": (_replace("ratings.dat", "::", ","),
                                    "ratings.dat: cannot be read: expected UserID::MovieID::Rating::Timestamp"),
        "ratings.dat with tabs": (_replace("ratings.dat", "::", "\t"), "ratings.dat: cannot be read: expected UserID::"),
        "ratings.dat with single colons": (_set("ratings.dat", 4, "1:2:3:880000000"),
                                           "ratings.dat: cannot be read: expected UserID::MovieID::Rating::Timestamp"),
        "ratings.dat with a stray colon": (_set("ratings.dat", 4, "1:x:2::3::880000000"),
                                           "ratings.dat: cannot be read: expected UserID::"),
        "ratings.dat with 3 fields": (_set("ratings.dat", 4, "1::2::3"), "ratings.dat: cannot be read: expected UserID::"),
        "ratings.dat with 5 fields": (_set("ratings.dat", 4, "1::2::3::4::5"), "ratings.dat: cannot be read: expected"),
        "ratings.dat negative timestamp": (_set("ratings.dat", 4, "1::2::3::-1"),
                                           "ratings.dat: 1 negative timestamps (first on line 5: -1); expected unix"),
        "ratings.dat empty rating": (_set("ratings.dat", 4, "1::2::::880000000"), "ratings.dat: 1 rows have an empty rating"),
        "ratings.dat as UTF-16": (_reencode("ratings.dat", "utf-16"), "ratings.dat: cannot be read"),
        "movies.dat with pipes": (_replace("movies.dat", "::", "|"),
                                  "movies.dat: line 1: expected MovieID::Title::Genres"),
        "movies.dat with 2 fields": (_set("movies.dat", 6, "7::Seven (1995)"),
                                     "movies.dat: line 7: expected MovieID::Title::Genres"),
        "movies.dat as UTF-16": (_reencode("movies.dat", "utf-16"), "movies.dat: line 1 holds the control character"),
        "movies.dat repeated id": (_lines("movies.dat", lambda ls: [*ls, ls[0]]), "movies.dat: 1 repeated movieIds"),
        "empty movies.dat": (_lines("movies.dat", lambda ls: []), "movies.dat: no movies"),
        "zip without ratings.dat": (_zip("movies.dat"), "release.zip: has no ratings.dat"),
        "truncated zip": (_zip("ratings.dat", "movies.dat", truncate=True), "release.zip: not a readable zip"),
    },
    "csv": {  # the rest of the CSV layout's cases are in test_data_prepare.py
        "movies.csv in latin-1": (_reencode("movies.csv", "latin-1"),
                                  ("movies.csv: cannot be read: column 'title': CSV conversion error to string: "
                                   "invalid UTF8 data (the file must be UTF-8)")),
        "ratings.csv with semicolons": (_replace("ratings.csv", ",", ";"), "ratings.csv: missing column 'userId'"),
        "no MovieLens files": (lambda raw: [p.rename(p.with_suffix(".txt")) for p in raw.iterdir()],
                               ("no MovieLens files; expected ratings.csv + movies.csv (ML-20M and later); "
                                "ratings.dat + movies.dat (ML-1M, ML-10M); u.data + u.item (ML-100K)")),
        "two layouts": (lambda raw: (raw / "u.data").write_text("1\t2\t3\t4\n"),
                        "holds files of several MovieLens layouts (movies.csv / ratings.csv, u.data)"),
    },
}
CASES = [(release, case) for release, cases in BAD.items() for case in cases]


@pytest.mark.parametrize(("release", "case"), CASES, ids=[f"{r}: {c}" for r, c in CASES])
def test_bad_input_exits_2_with_one_line_naming_the_file(release, case, tmp_path, capsys):
    mutate, message = BAD[release][case]
    ratings, movies = one_set()
    if case == "movies.csv in latin-1":
        assert not movies.title.map(str.isascii).all()
    raw = write_release(tmp_path / "raw", release, ratings, movies)
    result = mutate(raw)
    source = result if isinstance(result, Path) else raw
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", input=str(source), out_dir=str(out))
    capsys.readouterr()
    assert prepare(config) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert str(source) in errors[0] or str(raw) in errors[0]
    assert not out.exists()


def test_a_damaged_zip_member_names_the_file(written, tmp_path, capsys):
    """A zip whose directory is intact but whose u.data bytes are corrupt."""
    archive = shutil.copy(written.runs["ml-100k.zip"].source, tmp_path / "ml-100k.zip")
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("ml-100k/u.data")
    data = bytearray(Path(archive).read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100: start + 200] = bytes(100)
    Path(archive).write_bytes(bytes(data))
    config = write_config(tmp_path / "c.yaml", input=str(archive), out_dir=str(tmp_path / "out"))
    capsys.readouterr()
    assert prepare(config) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{archive}:u.data: cannot be read" in errors[0], errors
    assert not (tmp_path / "out").exists()
