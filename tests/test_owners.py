"""Each folder has one owner: the files of a run folder are named only in folders/rundir.py, those of a
prepared-data folder only in folders/datadir.py (every other module asks them)."""

import ast
from pathlib import Path

from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir

SRC = Path(__file__).resolve().parents[1] / "src" / "movierec"
# rundir.py with its helpers for checkpoints (checkpoint.py) and ownership patterns (ownership.py); datadir.py
OWNERS = {SRC / "folders" / name for name in ("rundir.py", "checkpoint.py", "ownership.py", "datadir.py")}


def _names(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str) and "." in v}


def test_run_and_data_files_are_named_only_by_their_owners():
    names = _names(RunDir) | _names(DatasetDir)
    assert {"trainer_log.jsonl", "resolved_config.yaml", "manifest.json", "baselines.json"} <= names
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path in OWNERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, found
