"""The prepared-data folder: every file `movierec prepare` writes is named, read and written here.

    manifest.json                  what produced the folder, its counts, and each output file's size and sha256
    dataset_info.json              LLaMA-Factory's registry of the two splits (alpaca columns)
    movielens_qwen3_train.jsonl    training examples
    movielens_qwen3_eval.jsonl     evaluation examples
    movielens_qwen3_valid.jsonl    validation examples: train-period targets the LLM never read, on which
                                   `evaluate` picks the llm+mf blend weight (not in dataset_info.json)
    ratings.parquet, movies.parquet  every valid rating and movie (baselines, recommend)
    baselines.json                 written by `movierec baselines`, not by prepare, with
    baselines_predictions.jsonl    its P(like) per eval example (a column per baseline) and
    baselines_validation.jsonl     mf's P(like) per validation example (out-of-sample: fitted before them)
    .hashes.json                   verify's cache: file name -> (size, mtime, ctime, inode) -> sha256

`verify` compares the files with the sizes and hashes the manifest recorded. Hashing a 25M-rating folder
(272 MB) takes about 0.3 s, so the hashes are cached by each file's stat: a re-check of unchanged files only
stats them, and any write, rename, copy or chmod changes the stat and re-hashes the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.io import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    read_jsonl,
)

# sha256, not md5: with SHA CPU extensions it is the faster of the two (1.3 vs 0.55 GB/s measured here), and the
# fingerprint and a run's data_manifest_sha256 use it too
HASH = "sha256"


class DatasetDir:
    """One prepared-data folder (`movierec prepare --out`, LLaMA-Factory's `dataset_dir`)."""

    MANIFEST = "manifest.json"
    DATASET_INFO = "dataset_info.json"
    RATINGS = "ratings.parquet"
    MOVIES = "movies.parquet"
    BASELINES = "baselines.json"
    BASELINE_PREDICTIONS = "baselines_predictions.jsonl"  # per eval example, a column per baseline
    BASELINE_VALIDATION = "baselines_validation.jsonl"  # per validation example, mf's P(like)
    RANKING = "ranking.jsonl"  # candidate lists for ranking metrics (see data/ranking.py)
    VALID = "movielens_qwen3_valid.jsonl"  # validation examples (see data/split.py)
    TRAIN_NAME = "movielens_qwen3_train"
    EVAL_NAME = "movielens_qwen3_eval"
    HASH_CACHE = ".hashes.json"
    WRITING = ".prepare-incomplete"  # from prepare's first write to its manifest: the folder is ours, half-written
    # A file changed this recently could change again without a new stat (coarse file-system clocks), so
    # its hash is cached only once it is older (git's "racily clean" rule).
    RACY_NS = 2_000_000_000

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.expandvars(os.path.expanduser(os.fspath(path)))).resolve()

    def __repr__(self) -> str:
        return f"DatasetDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def jsonl_name(dataset_name: str) -> str:
        """The file prepare writes for a dataset_info entry: movielens_qwen3_train -> movielens_qwen3_train.jsonl."""
        return f"{dataset_name}.jsonl"

    @classmethod
    def registry(cls) -> dict[str, Any]:
        """dataset_info.json's content: both splits in LLaMA-Factory's alpaca format."""
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        return {name: {"file_name": cls.jsonl_name(name), "columns": columns}
                for name in (cls.TRAIN_NAME, cls.EVAL_NAME)}

    def dataset_file(self, dataset_name: str) -> Path:
        """The file dataset_info.json registers for `dataset_name` (a `dataset` / `eval_dataset` name)."""
        info = self.dataset_info()
        where = self.file(self.DATASET_INFO)
        if dataset_name not in info:
            raise UserError(f"dataset '{dataset_name}' is not in {where} (known: {', '.join(sorted(info))})")
        entry = info[dataset_name]
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise UserError(f"{where}: dataset '{dataset_name}' names no file_name")
        return self.path / entry["file_name"]

    def check_splits(self, train: str | None, eval_: str | None) -> None:
        """UserError when an eval dataset registers the same file as a training one: it would score the
        examples the model trained on. `train` / `eval_` are comma-separated dataset names."""
        trained = {self.dataset_file(n).resolve(): n for n in _names(train)}
        for name in _names(eval_):
            same = trained.get(self.dataset_file(name).resolve())
            if same is not None:
                raise UserError(f"{self.file(self.DATASET_INFO)}: eval dataset '{name}' names the file of training "
                                f"dataset '{same}' ({self.dataset_file(name).name}): scoring it would measure the "
                                "examples the model trained on; rerun `movierec prepare`")

    def recorded_sha256(self, names: str | None) -> dict[str, str | None]:
        """The sha256 the manifest records for each named dataset's file (None: not a file it lists)."""
        files = self.manifest().get("files") or {}
        out = {}
        for name in _names(names):
            entry = files.get(self.dataset_file(name).name) if isinstance(files, dict) else None
            out[name] = entry.get(HASH) if isinstance(entry, dict) else None
        return out

    @property
    def train_file(self) -> Path:
        return self.dataset_file(self.TRAIN_NAME)

    @property
    def eval_file(self) -> Path:
        return self.dataset_file(self.EVAL_NAME)

    # ------------------------------------------------------------------ the folder and its JSON files

    def is_prepared(self) -> bool:
        """Whether the folder holds a readable manifest."""
        try:
            self.manifest()
        except UserError:
            return False
        return True

    def require(self) -> DatasetDir:
        """This folder, or a one-line UserError saying why it is not a prepared-data folder."""
        if not self.path.exists():
            raise UserError(f"{self.path}: not found (run `movierec prepare` to write it)")
        if not self.path.is_dir():
            raise UserError(f"{self.path}: is a file, not a prepared-data folder")
        if not self.file(self.MANIFEST).is_file():
            raise UserError(f"{self.path}: has no {self.MANIFEST} (not written by `movierec prepare`, or it was "
                            "interrupted); run `movierec prepare`")
        self._manifest_part("files")
        return self

    def data_config(self) -> dict[str, Any]:
        """The data config prepare ran with (like_threshold, history_len, instruction...), from the manifest."""
        return self._manifest_part("config")

    def _manifest_part(self, key: str) -> dict[str, Any]:
        part = self.manifest().get(key)
        if not isinstance(part, dict):
            raise UserError(f"{self.file(self.MANIFEST)}: records no {key} (written by an older movierec, or edited?); "
                            "rerun `movierec prepare`")
        return part

    def check_writable(self) -> None:
        """UserError unless the folder exists or can be made: not a file, nor below one, and writable."""
        for p in (self.path, *self.path.parents):
            if not p.exists():
                continue
            if p == self.path and not p.is_dir():
                raise UserError(f"{self.path}: is a file; prepared data goes to a folder")
            if not p.is_dir():
                raise UserError(f"{self.path}: cannot be a folder, {p} is a file")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UserError(f"{self.path}: cannot write there ({p} is not writable)")
            break
        self.check_ours()

    def check_ours(self) -> None:
        """UserError when prepare would replace or delete files it did not write: a folder holding a
        manifest.json, dataset_info.json, baselines or a split of the same names that no prepare wrote
        (a LLaMA-Factory registry, say). Other files in the folder (its raw input, notes) are never touched."""
        ours = {self.MANIFEST, self.DATASET_INFO, self.BASELINES, self.BASELINE_PREDICTIONS, self.RATINGS, self.MOVIES,
                self.RANKING, *(self.jsonl_name(n) for n in (self.TRAIN_NAME, self.EVAL_NAME))}
        clash = sorted(p.name for p in self.path.iterdir() if p.name in ours) if self.path.is_dir() else []
        if not clash or self.file(self.WRITING).exists() or self._prepared_manifest():
            return
        raise UserError(f"{self.path}: holds {', '.join(clash)} that `movierec prepare` did not write (no manifest of "
                        "its own); nothing was changed: prepare into another folder (--out)")

    def _prepared_manifest(self) -> bool:
        """Whether manifest.json is one prepare wrote: its outputs listed with their sizes and sha256 (an older
        movierec's: with its input fingerprint)."""
        try:
            manifest = self.manifest()
        except UserError:
            return False
        files = manifest.get("files")
        return isinstance(files, dict) and bool(files) and ("fingerprint" in manifest or all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get(HASH), str)
            for v in files.values()))

    def manifest(self) -> dict[str, Any]:
        return self._read_json(self.MANIFEST)

    def manifest_sha256(self) -> str:
        """The manifest's sha256: names this preparation (every output's hash is in it)."""
        self.require()
        return _sha256_file(self.file(self.MANIFEST))

    def dataset_info(self) -> dict[str, Any]:
        return self._read_json(self.DATASET_INFO)

    def counts(self) -> dict[str, Any]:
        """The manifest's counts: train, eval, ratings, users, movies, eligible_train, eligible_eval..."""
        counts = self.manifest().get("counts")
        if not isinstance(counts, dict):
            raise UserError(f"{self.file(self.MANIFEST)}: has no counts (written by an older movierec?); "
                            "rerun `movierec prepare`")
        return counts

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder (baselines.json, ...) through the one reader."""
        return read_json(self.file(name), hint="rerun the command that wrote it")

    def _read_json(self, name: str) -> dict[str, Any]:
        path = self.file(name)
        data = read_json(path, hint="rerun `movierec prepare`")
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}; rerun `movierec prepare`")
        return data

    # ------------------------------------------------------------------ integrity

    def verify(self, names: Iterable[str] | None = None) -> None:
        """UserError (one line) unless every output file the manifest lists (or just `names`) still has the size
        and sha256 recorded when prepare wrote it."""
        problems = self.changed(names)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"{problems[0]}{more}; rerun `movierec prepare`")

    def changed(self, names: Iterable[str] | None = None) -> list[str]:
        """What differs from the manifest, one phrase per file (empty when all match); see `verify`."""
        where = self.file(self.MANIFEST)
        files = self.manifest().get("files")
        if not isinstance(files, dict):
            raise UserError(f"{where}: lists no output files (written by an older movierec?)")
        names = sorted(files) if names is None else list(names)
        cache = _HashCache(self.file(self.HASH_CACHE), self.RACY_NS)
        problems = []
        for name in names:
            if name not in files:
                raise ValueError(f"{name} is not an output of `movierec prepare` (see {where})")
            want = files[name]
            if not (isinstance(want, dict) and isinstance(want.get("size"), int) and isinstance(want.get(HASH), str)):
                problems.append(f"{where} records no size and {HASH} of {name} (written by an older movierec?)")
                continue
            path = self.file(name)
            try:
                st = path.stat()
                digest = cache.hash(path, st) if st.st_size == want["size"] else None
            except FileNotFoundError:
                problems.append(f"{path} is missing (`movierec prepare` wrote it)")
                continue
            except OSError as e:
                problems.append(f"{path} cannot be read ({e.strerror or e})")
                continue
            if digest is None:
                problems.append(f"{path} changed since `movierec prepare` wrote it "
                                f"({st.st_size:,} bytes, the manifest says {want['size']:,})")
            elif digest != want[HASH]:
                problems.append(f"{path} changed since `movierec prepare` wrote it "
                                f"({HASH} {digest[:12]}..., the manifest says {want[HASH][:12]}...)")
        cache.save()
        return problems

    # ------------------------------------------------------------------ reading and writing

    def read_jsonl(self, path: str | os.PathLike) -> list[dict[str, Any]]:
        """The records of a JSONL file (relative to the folder, or absolute); blank lines are skipped."""
        return read_jsonl(self.path / path, hint="rerun `movierec prepare`")

    def read_eval(self) -> list[dict[str, Any]]:
        return self.read_jsonl(self.eval_file)

    def write_outputs(self, files: dict[str, bytes | memoryview], manifest: dict[str, Any]) -> None:
        """Write prepare's outputs: each file atomically, dataset_info.json (unless given), then the manifest
        with every file's size and sha256 under `files`. The old manifest goes first, so an interrupted
        rewrite never looks prepared."""
        self.check_writable()
        files = {self.DATASET_INFO: _json_bytes(self.registry()), **files}
        entries = {}
        for name, payload in sorted(files.items()):
            view = memoryview(payload).cast("B")
            entries[name] = {"size": view.nbytes, HASH: hashlib.sha256(view).hexdigest()}
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.path}: cannot create the folder ({e.strerror or e})") from None
        self.file(self.WRITING).touch()
        self.file(self.MANIFEST).unlink(missing_ok=True)
        for name in (self.BASELINES, self.BASELINE_PREDICTIONS, self.BASELINE_VALIDATION):  # stale now
            self.file(name).unlink(missing_ok=True)
        for name, payload in files.items():
            atomic_write_bytes(self.file(name), payload)
        atomic_write_json(self.file(self.MANIFEST), {**manifest, "files": entries})
        self.file(self.WRITING).unlink()


def _names(names: str | None) -> list[str]:
    return [n.strip() for n in str(names or "").split(",") if n.strip()]


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")  # as io.atomic_write_json writes


class _HashCache:
    """sha256 of files by their stat (size, mtime, ctime, inode), kept in a small JSON file beside them.

    ctime cannot be set by hand, so restoring a file's mtime after an edit does not hide the edit; a copy
    gets a new inode and is hashed once. An unreadable cache is ignored, an unwritable one not saved."""

    def __init__(self, path: Path, racy_ns: int) -> None:
        self.path, self.racy_ns, self.dirty = path, racy_ns, False
        try:
            entries = json.loads(path.read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError, AttributeError):
            entries = None
        self.entries = entries if isinstance(entries, dict) else {}

    def hash(self, path: Path, st: os.stat_result) -> str:
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(path.name)
        if isinstance(entry, dict) and entry.get("stat") == key and isinstance(entry.get(HASH), str):
            return entry[HASH]
        started = time.time_ns()
        digest = _sha256_file(path)
        if max(st.st_mtime_ns, st.st_ctime_ns) < started - self.racy_ns:
            self.entries[path.name] = {"stat": key, HASH: digest}
            self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_json(self.path, {"files": self.entries})
            except OSError:
                pass  # a read-only folder is checked, just not cached


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, HASH).hexdigest()
