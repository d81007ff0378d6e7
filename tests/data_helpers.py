"""Small synthetic MovieLens inputs and configs for the data tests."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import yaml

from movierec.cli import main as cli_main
from movierec.data import synth
from movierec.folders.datadir import DatasetDir

# Small but with every structure the checks need: ties in time, warm and cold eval users.
SIZES = {"users": 150, "movies": 200, "ratings": 9000}
CONFIG = {"input": None, "url": None, "md5": None, "out_dir": None, "n_train": 300, "n_eval": 100,
          "history_len": 10, "min_history": 3, "like_threshold": 4.0, "cutoff_quantile": 0.85, "seed": 0}


def synth_input(dest: Path, seed: int = 0) -> Path:
    """ratings.csv + movies.csv in `dest` (a few tens of milliseconds)."""
    synth.write(dest, SIZES["users"], SIZES["movies"], SIZES["ratings"], seed)
    return dest


def write_config(path: Path, **values: object) -> Path:
    path.write_text(yaml.safe_dump({**CONFIG, **values}, sort_keys=False), encoding="utf-8")
    return path


def prepare(config: Path, *extra: str) -> int:
    return cli_main(["prepare", "--config", str(config), *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def outputs(folder: Path) -> list[Path]:
    """The files of a prepared folder, without verify's hash cache (it changes on a re-check)."""
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != DatasetDir.HASH_CACHE]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in outputs(folder)}


# --- every MovieLens release layout, written as GroupLens ships it (the spec, independent of the reader) ---

U_ITEM_FLAGS = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
                "Western")
ZIP_FOLDERS = {"csv": "ml-25m", "ml-1m": "ml-1m", "ml-10m": "ml-10M100K", "ml-100k": "ml-100k"}
LAYOUT_FILES = {"csv": ("ratings.csv", "movies.csv"), "ml-1m": ("ratings.dat", "movies.dat"),
                "ml-10m": ("ratings.dat", "movies.dat"), "ml-100k": ("u.data", "u.item")}


def write_release(dest: Path, release: str, ratings: pd.DataFrame, movies: pd.DataFrame, zipped: bool = False) -> Path:
    """`ratings` (userId, movieId, rating, timestamp) and `movies` (movieId, title, genres as in movies.csv; optional
    release_date) in one release's layout: "csv" (ML-20M and later), "ml-1m" (`::`, latin-1, "Children's"),
    "ml-10m" (`::`, UTF-8) or "ml-100k" (u.data + u.item, latin-1, genre flags). Returns the folder or the zip."""
    files = _release_files(release, ratings, movies)
    if not zipped:
        dest.mkdir(parents=True, exist_ok=True)
        for name, payload in files.items():
            (dest / name).write_bytes(payload)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in {**files, "README.txt": b"not MovieLens data\n"}.items():
            z.writestr(f"{ZIP_FOLDERS[release]}/{name}", payload)
    return dest


def _release_files(release: str, ratings: pd.DataFrame, movies: pd.DataFrame) -> dict[str, bytes]:
    r, m = ratings, movies
    if release == "csv":
        lines = r.userId.astype(str) + "," + r.movieId.astype(str) + "," + r.rating.map("{:.1f}".format) + "," \
            + r.timestamp.astype(str) + "\n"
        table = pa.table({"movieId": m.movieId.to_numpy(), "title": m.title.to_numpy(), "genres": m.genres.to_numpy()})
        return {"ratings.csv": ("userId,movieId,rating,timestamp\n" + "".join(lines)).encode(),
                "movies.csv": synth.movies_csv(table)}
    if release in ("ml-1m", "ml-10m"):
        lines = r.userId.astype(str) + "::" + r.movieId.astype(str) + "::" + r.rating.map("{:g}".format) + "::" \
            + r.timestamp.astype(str) + "\n"
        genres = m.genres.str.replace("Children", "Children's") if release == "ml-1m" else m.genres
        text = "".join(m.movieId.astype(str) + "::" + m.title + "::" + genres + "\n")
        return {"ratings.dat": "".join(lines).encode(),
                "movies.dat": text.encode("latin-1" if release == "ml-1m" else "utf-8")}
    assert release == "ml-100k", release
    assert (r.rating % 1 == 0).all(), "ML-100K holds whole stars only"
    lines = r.userId.astype(str) + "\t" + r.movieId.astype(str) + "\t" + r.rating.astype(int).astype(str) + "\t" \
        + r.timestamp.astype(str) + "\n"
    names = m.genres.str.replace("Children", "Children's").str.split("|")
    flags = pd.DataFrame({g: names.map(lambda gs, g=g: int(g in gs)) for g in U_ITEM_FLAGS})
    flags["unknown"] = names.map(lambda gs: int("unknown" in gs or gs == ["(no genres listed)"]))
    dates = m.release_date if "release_date" in m else "01-Jan-" + m.title.str.extract(r"\((\d{4})\)\s*$")[0].fillna("1995")
    url = "http://us.imdb.com/M/title-exact?" + m.title.str.replace(" ", "%20")
    item = m.movieId.astype(str) + "|" + m.title + "|" + dates + "||" + url + "|" \
        + flags.astype(str).agg("|".join, axis=1) + "\n"
    return {"u.data": "".join(lines).encode(), "u.item": "".join(item).encode("latin-1")}
