"""A model folder written whole or not at all: build it in a hidden folder beside its destination, then
rename it into place (used by `export` and `import-gguf`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from movierec.folders.io import current_umask
from movierec.folders.ownership import pid_alive


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A new hidden folder beside `out`, renamed to `out` when the block ends without error (a previous
    folder there is replaced), deleted when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a process that was killed (SIGKILL, power)
        pid = stale.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    tmp, old = out.parent / f".{out.name}.{stamp}.tmp", out.parent / f".{out.name}.{stamp}.old.tmp"
    tmp.mkdir()
    try:
        yield tmp
        mask = current_umask()
        for path in tmp.rglob("*"):  # some writers (safetensors) create files 0600: a model folder is shared
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def written_by(path: Path, record: str, fmt: str) -> bool:
    """Whether folder `path` holds the `record` file a movierec writer leaves, in format `fmt` (so that writer
    may replace the folder)."""
    import json

    try:
        return json.loads((path / record).read_text(encoding="utf-8")).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False
