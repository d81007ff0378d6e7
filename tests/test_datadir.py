"""DatasetDir, the prepared-data folder's one owner: names, reading, integrity checks and their cache."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from movierec.errors import UserError
from movierec.folders import datadir
from movierec.folders.datadir import DatasetDir

TRAIN, EVAL = DatasetDir.jsonl_name(DatasetDir.TRAIN_NAME), DatasetDir.jsonl_name(DatasetDir.EVAL_NAME)
RECORD = {"instruction": "Answer Yes or No.", "input": "Candidate movie: Heat (1995)", "output": "Yes", "user_id": 1}


def _jsonl(*records: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture
def folder(tmp_path) -> DatasetDir:
    """A small folder as prepare writes it (through write_outputs)."""
    d = DatasetDir(tmp_path / "data")
    d.write_outputs({TRAIN: _jsonl(RECORD, RECORD), EVAL: _jsonl(RECORD), DatasetDir.RATINGS: pa.py_buffer(b"PAR1")},
                    {"format_version": 3, "counts": {"train": 2, "eval": 1}})
    return d


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Names of the files verify hashes (instead of taking the cache's word)."""
    seen: list[str] = []
    real = datadir._sha256_file
    monkeypatch.setattr(datadir, "_sha256_file", lambda path: seen.append(path.name) or real(path))
    return seen


def _one_line_error(match: str, call, *args) -> str:
    with pytest.raises(UserError, match=match) as e:
        call(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_path_expands_user_and_variables_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MR_DATA", "prepared")
    monkeypatch.setenv("MR_LOOP", "$MR_DATA")
    assert DatasetDir("~/$MR_DATA").path == tmp_path / "prepared"
    assert DatasetDir("~/$MR_LOOP").path == tmp_path / "$MR_DATA"  # expanded once, not recursively
    monkeypatch.chdir(tmp_path)
    d = DatasetDir("data/../data")
    assert d.path == tmp_path / "data" and d.path.is_absolute()
    assert d.file(DatasetDir.BASELINES) == tmp_path / "data" / "baselines.json"


def test_write_outputs_records_size_and_sha256_and_writes_the_manifest_last(folder):
    m = folder.manifest()
    assert m["format_version"] == 3 and folder.counts() == {"train": 2, "eval": 1}
    assert set(m["files"]) == {TRAIN, EVAL, DatasetDir.RATINGS, DatasetDir.DATASET_INFO}
    for name, entry in m["files"].items():
        data = folder.file(name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    mtimes = {name: folder.file(name).stat().st_mtime_ns for name in m["files"]}
    assert folder.file(DatasetDir.MANIFEST).stat().st_mtime_ns >= max(mtimes.values())
    assert folder.dataset_info() == DatasetDir.registry()
    assert sorted(p.name for p in folder.path.iterdir()) == sorted([*m["files"], DatasetDir.MANIFEST])  # no temp files
    folder.require().verify()


def test_an_interrupted_rewrite_leaves_no_manifest(folder, monkeypatch):
    def fail(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datadir, "atomic_write_bytes", fail)
    with pytest.raises(OSError):
        folder.write_outputs({TRAIN: b"new\n"}, {"counts": {}})
    assert not folder.is_prepared()
    assert folder.file(TRAIN).read_bytes() == _jsonl(RECORD, RECORD)  # nothing half-written either


def test_dataset_files_come_from_dataset_info(folder):
    assert folder.train_file == folder.path / TRAIN and folder.eval_file == folder.path / EVAL
    assert folder.dataset_file(DatasetDir.EVAL_NAME) == folder.eval_file
    message = _one_line_error("is not in", folder.dataset_file, "movielens_qwen3_test")
    assert "movielens_qwen3_eval, movielens_qwen3_train" in message
    folder.file(DatasetDir.DATASET_INFO).write_text(json.dumps({"movielens_qwen3_eval": {"columns": {}}}))
    _one_line_error("names no file_name", folder.dataset_file, DatasetDir.EVAL_NAME)


def test_require_says_what_is_wrong_in_one_line(tmp_path):
    missing = DatasetDir(tmp_path / "nowhere")
    assert not missing.is_prepared()
    _one_line_error("nowhere: not found", missing.require)
    (tmp_path / "file").write_text("x")
    _one_line_error("file: is a file", DatasetDir(tmp_path / "file").require)
    (tmp_path / "empty").mkdir()
    _one_line_error("empty: has no manifest.json", DatasetDir(tmp_path / "empty").require)


@pytest.mark.parametrize("name", [DatasetDir.MANIFEST, DatasetDir.DATASET_INFO])
@pytest.mark.parametrize("text", ["", '{"counts": {"train": 2', "[1, 2]", "\xff\xfe{}"])
def test_a_malformed_json_file_is_a_user_error_naming_it(folder, name, text):
    folder.file(name).write_bytes(text.encode("latin-1"))
    read = folder.manifest if name == DatasetDir.MANIFEST else folder.dataset_info
    message = _one_line_error(str(folder.file(name)), read)
    assert "rerun `movierec prepare`" in message
    if name == DatasetDir.MANIFEST:
        assert not folder.is_prepared()
        _one_line_error(DatasetDir.MANIFEST, folder.require)
    else:
        _one_line_error(DatasetDir.DATASET_INFO, lambda: folder.eval_file)


def test_counts_of_a_manifest_without_them(folder):
    folder.file(DatasetDir.MANIFEST).write_text("{}")
    _one_line_error("has no counts", folder.counts)


def test_read_jsonl_and_read_eval(folder):
    assert folder.read_eval() == [RECORD]
    folder.file(TRAIN).write_bytes(_jsonl(RECORD) + b"\n" + _jsonl(RECORD))  # blank lines are skipped
    assert folder.read_jsonl(TRAIN) == [RECORD, RECORD]
    assert folder.read_jsonl(folder.train_file) == [RECORD, RECORD]  # absolute paths too


@pytest.mark.parametrize(("payload", "message"), [
    (_jsonl(RECORD) + b'{"instruction": "cut sho\n', "eval.jsonl:2: not a JSON record"),
    (_jsonl(RECORD) + b"\n[1, 2]\n", "eval.jsonl:3: expected a JSON object, got list"),
    (b"\xff\xfe{}\n", "eval.jsonl: not UTF-8"),
])
def test_read_jsonl_names_the_bad_line(folder, payload, message):
    folder.file(EVAL).write_bytes(payload)
    _one_line_error(message, folder.read_eval)


def test_read_jsonl_of_a_missing_file(folder):
    folder.file(EVAL).unlink()
    _one_line_error("eval.jsonl: not found", folder.read_eval)


# --- verify: every output as the manifest recorded it ---

def _after_last_change(path: Path) -> None:
    """Wait until a change to `path` gets a new ctime even on a coarse file-system clock (a few ms at most).
    The tests that set RACY_NS = 0 need it; with the real RACY_NS verify never caches so fresh a file."""
    time.sleep(max(0.0, (path.stat().st_ctime_ns + 20_000_000 - time.time_ns()) / 1e9))


def _flip_a_byte(path: Path, keep_mtime: bool = True) -> None:
    """Change one byte in place, same size; by default restore the mtime (as `touch -r` or a careful tool would)."""
    _after_last_change(path)
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    with open(path, "r+b") as f:
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("edit", ["same size", "longer", "deleted"])
def test_verify_names_the_changed_file_in_one_line(folder, edit):
    path = folder.train_file
    if edit == "same size":
        _flip_a_byte(path)
        expected = f"{path} changed since `movierec prepare` wrote it (sha256 "
    elif edit == "longer":
        size = len(_jsonl(RECORD, RECORD))
        path.write_bytes(path.read_bytes() + b"\n")
        expected = f"{path} changed since `movierec prepare` wrote it ({size + 1} bytes, the manifest says {size})"
    else:
        path.unlink()
        expected = f"{path} is missing"
    message = _one_line_error("rerun `movierec prepare`", folder.verify)
    assert message.startswith(expected), message
    assert folder.changed() == [message.removesuffix("; rerun `movierec prepare`")]
    folder.verify([EVAL, DatasetDir.RATINGS])  # only the names asked for
    _one_line_error("changed|missing", folder.verify, [TRAIN])


def test_verify_reports_how_many_more_changed(folder):
    for path in (folder.train_file, folder.eval_file):
        path.write_bytes(b"\n")
    assert len(folder.changed()) == 2
    _one_line_error(r"\(and 1 more\); rerun", folder.verify)


def test_verify_of_an_older_manifest(folder):
    m = folder.manifest()
    m["files"] = {name: "d41d8cd98f00b204e9800998ecf8427e" for name in m["files"]}  # format 2: md5s only
    folder.file(DatasetDir.MANIFEST).write_text(json.dumps(m))
    _one_line_error("records no size and sha256 of .* older movierec", folder.verify)
    with pytest.raises(ValueError, match="not an output"):
        folder.verify([DatasetDir.BASELINES])


def test_verify_caches_hashes_by_stat(folder, hashes, monkeypatch):
    outputs = sorted(folder.manifest()["files"])
    folder.verify()
    assert sorted(hashes) == outputs and not folder.file(DatasetDir.HASH_CACHE).exists()  # fresh files: racy
    monkeypatch.setattr(DatasetDir, "RACY_NS", 0)  # as if the files were written long ago
    hashes.clear()
    folder.verify()
    assert sorted(hashes) == outputs and folder.file(DatasetDir.HASH_CACHE).is_file()
    hashes.clear()
    folder.verify()
    DatasetDir(folder.path).verify()
    assert hashes == []  # a re-check only stats the files
    _flip_a_byte(folder.eval_file)  # same size and mtime: the cache still sees the new ctime
    _one_line_error(f"{folder.eval_file} changed since", folder.verify)
    assert hashes == [EVAL]


def test_a_changed_file_is_rehashed_after_its_stat_changes(folder, hashes, monkeypatch):
    monkeypatch.setattr(DatasetDir, "RACY_NS", 0)
    folder.verify()
    original = folder.train_file.read_bytes()
    _after_last_change(folder.train_file)
    folder.train_file.write_bytes(original.replace(b"Yes", b"Non"))
    _one_line_error("changed since", folder.verify)
    folder.train_file.write_bytes(original)  # put back: matches again, whatever the cache held
    hashes.clear()
    folder.verify()
    assert hashes == [TRAIN]


@pytest.mark.parametrize("cache", ["", "{", "[]", '{"files": []}', '{"files": {"movielens_qwen3_eval.jsonl": 1}}'])
def test_an_unreadable_cache_is_ignored(folder, hashes, monkeypatch, cache):
    monkeypatch.setattr(DatasetDir, "RACY_NS", 0)
    folder.file(DatasetDir.HASH_CACHE).write_text(cache)
    folder.verify()
    assert sorted(hashes) == sorted(folder.manifest()["files"])


def test_a_cache_holding_a_wrong_hash_for_another_stat_is_not_trusted(folder, monkeypatch):
    """The cache is keyed by stat: an entry from another version of the file never vouches for this one."""
    monkeypatch.setattr(DatasetDir, "RACY_NS", 0)
    folder.verify()
    cache = json.loads(folder.file(DatasetDir.HASH_CACHE).read_text())
    _flip_a_byte(folder.eval_file, keep_mtime=False)
    cache["files"][EVAL]["sha256"] = folder.manifest()["files"][EVAL]["sha256"]
    folder.file(DatasetDir.HASH_CACHE).write_text(json.dumps(cache))
    _one_line_error("changed since", folder.verify)


def test_check_writable(tmp_path):
    DatasetDir(tmp_path / "new" / "deeper").check_writable()
    (tmp_path / "f").write_text("x")
    _one_line_error("f: is a file", DatasetDir(tmp_path / "f").check_writable)
    _one_line_error(f"cannot be a folder, {tmp_path / 'f'} is a file", DatasetDir(tmp_path / "f" / "d").check_writable)
    _one_line_error("is a file", DatasetDir(tmp_path / "f").write_outputs, {}, {})
    assert (tmp_path / "f").read_text() == "x"
