"""The data config: a small dataclass read from YAML + `--override KEY=VALUE`, typos rejected.

It goes through the experiment config's engine (`movierec.train.config.parse_fields`): every problem
(unknown key with a "did you mean", wrong type, value out of range) is collected and raised at once
as `key: problem` lines.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.resources import shipped
from movierec.train.schema import load_yaml, parse_fields, parse_overrides

ML25M_URL = "https://files.grouplens.org/datasets/movielens/ml-25m.zip"
ML25M_MD5 = "6b51fb2759a8657d3bfcbfc42b592ada"
HISTORY_SELECT = ("recent", "relevant")


@dataclass(frozen=True)
class SynthSpec:
    """Sizes for a synthetic input generated when `input` is absent (see synth.py)."""

    users: int
    movies: int
    ratings: int
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """What `prepare` builds; the comments in configs/data/*.yaml explain each knob."""

    input: str = "data/raw/ml-25m.zip"
    url: str | None = ML25M_URL
    md5: str | None = ML25M_MD5
    synth: SynthSpec | None = None
    out_dir: str = "data"
    n_train: int = 78_271
    n_eval: int = 4_450
    history_len: int = 10
    min_history: int = 5
    like_threshold: float = 4.0
    cutoff_quantile: float = 0.9
    seed: int = 0
    ranking_users: int = 500
    ranking_negatives: int = 99
    # a tokenizer (hub id or local folder) to count the examples' tokens with, for manifest.json's
    # example_lengths (what `bench` and the dry run draw lengths from); null: characters, converted by a rule
    tokenizer: str | None = None
    # hybrid prompt options (data/hybrid.py); all off: the reference prompt
    history_select: str = "recent"
    candidate_stats: bool = False
    user_stats: bool = False
    cf_score: bool = False
    instruction: str = ("Given a user's movie ratings, predict whether the user will like the candidate "
                        "movie. Answer Yes or No.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_data_config(path: str | Path, overrides: Sequence[str] = (), **cli: Any) -> DataConfig:
    """Read a data YAML, apply `KEY=VALUE` overrides (dotted keys reach into `synth`: synth.users=500),
    then the non-None `cli` values (input=..., out_dir=...), and validate."""
    raw = load_yaml(path)
    for key, value in parse_overrides(list(overrides)).items():
        *parents, leaf = key.split(".")
        node = raw
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    raw.update({k: v for k, v in cli.items() if v is not None})
    values, problems = parse_fields([DataConfig], raw)
    config = DataConfig(**values)  # keys with problems keep their defaults, so the value checks all run
    problems += _check_values(config)
    if problems:
        raise UserError("\n".join(problems))
    return config


def shipped_data_configs() -> list[tuple[Path, dict[str, Any]]]:
    """The data configs movierec ships (configs/data/*.yaml), read as plain mappings."""
    return [(path, load_yaml(path)) for path in sorted(shipped("configs", "data").glob("*.yaml"))]


def _check_values(c: DataConfig) -> list[str]:
    checks = [
        ("n_train", c.n_train, c.n_train >= 1, "must be at least 1"),
        ("n_eval", c.n_eval, c.n_eval >= 1, "must be at least 1"),
        ("history_len", c.history_len, c.history_len >= 1, "must be at least 1"),
        ("min_history", c.min_history, c.min_history >= 0, "must be at least 0"),
        ("like_threshold", c.like_threshold, 0.5 < c.like_threshold <= 5.0, "must lie in (0.5, 5.0]"),
        ("cutoff_quantile", c.cutoff_quantile, 0 < c.cutoff_quantile < 1, "must lie strictly between 0 and 1"),
        ("md5", c.md5, c.md5 is None or re.fullmatch(r"[0-9a-f]{32}", c.md5),
         "must be 32 lowercase hex digits or null"),
        ("instruction", c.instruction, c.instruction.strip(), "must not be empty"),
        ("ranking_users", c.ranking_users, c.ranking_users >= 0, "must be at least 0"),
        ("ranking_negatives", c.ranking_negatives, c.ranking_negatives >= 0, "must be at least 0"),
        ("input", c.input, c.input.strip(), "must not be empty"),
        ("history_select", c.history_select, c.history_select in HISTORY_SELECT,
         f"must be one of {', '.join(HISTORY_SELECT)}"),
    ]
    if c.synth:
        checks += [(f"synth.{k}", getattr(c.synth, k), getattr(c.synth, k) >= 1, "must be at least 1")
                   for k in ("users", "movies", "ratings")]
    return [f"{key}: {problem}, got {value!r}" for key, value, ok, problem in checks if not ok]
