"""The prepared-data folder: every file `prepare` writes there is named, read and checked here."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from movierec.errors import UserError


class DatasetDir:
    MANIFEST = "manifest.json"
    DATASET_INFO = "dataset_info.json"
    RATINGS = "ratings.parquet"
    MOVIES = "movies.parquet"
    BASELINES = "baselines.json"
    TRAIN_NAME = "movielens_qwen3_train"
    EVAL_NAME = "movielens_qwen3_eval"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(os.path.expandvars(os.path.expanduser(str(path)))).resolve()

    def __repr__(self) -> str:
        return f"DatasetDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def _json(self, name: str) -> dict[str, Any]:
        path = self.file(name)
        if not path.is_file():
            raise UserError(f"{path} not found (run `movierec prepare` first)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not valid JSON ({e}); rerun `movierec prepare`") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object; rerun `movierec prepare`")
        return data

    def manifest(self) -> dict[str, Any]:
        return self._json(self.MANIFEST)

    def dataset_info(self) -> dict[str, Any]:
        return self._json(self.DATASET_INFO)

    def is_prepared(self) -> bool:
        try:
            self.manifest()
        except UserError:
            return False
        return True

    def require(self) -> DatasetDir:
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a prepared data folder")
        if not self.path.is_dir():
            raise UserError(f"data folder not found: {self.path} (run `movierec prepare` first)")
        self.manifest()
        return self

    def counts(self) -> dict[str, Any]:
        return self.manifest().get("counts") or {}

    def dataset_file(self, dataset_name: str) -> Path:
        info = self.dataset_info()
        if dataset_name not in info:
            raise UserError(f"dataset '{dataset_name}' is not in {self.file(self.DATASET_INFO)}")
        return self.file(info[dataset_name]["file_name"])

    @property
    def train_file(self) -> Path:
        return self.file(f"{self.TRAIN_NAME}.jsonl")

    @property
    def eval_file(self) -> Path:
        return self.file(f"{self.EVAL_NAME}.jsonl")

    def verify(self, names: Iterable[str] | None = None) -> None:
        files = self.manifest().get("files") or {}
        for name in (names if names is not None else files):
            path = self.file(name)
            if name not in files:
                continue
            if not path.is_file():
                raise UserError(f"{path} is missing; rerun `movierec prepare`")
            if hashlib.md5(path.read_bytes()).hexdigest() != files[name]:
                raise UserError(f"{path} changed since `movierec prepare` wrote it; rerun `movierec prepare`")

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise UserError(f"file not found: {path}")
        out = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        raise UserError(f"{path}:{i}: not valid JSON; rerun `movierec prepare`") from None
        return out

    def read_eval(self) -> list[dict[str, Any]]:
        return self.read_jsonl(self.eval_file)
