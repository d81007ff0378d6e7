"""Small synthetic MovieLens inputs and configs for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from movierec.cli import main as cli_main
from movierec.data import synth

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


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
