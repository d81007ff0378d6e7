"""A model folder written whole or not at all: build it in a hidden folder beside its destination, then
rename it into place (used by `export` and `import-gguf`)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from movierec.errors import UserError
from movierec.folders.io import current_umask
from movierec.folders.ownership import pid_alive


def temporary_prefix(name: str) -> str:
    """The start of a temporary file's or folder's name for `name` written by this process: `.NAME.PID-`.
    clear_stale(folder, name) removes those of processes that are gone."""
    return f".{name}.{os.getpid()}-"


def clear_stale(folder: Path, name: str) -> None:
    """Remove the temporary files and folders (`.NAME.PID-*.tmp`) that processes killed mid-write left
    (SIGKILL, power loss: nothing of theirs could clean up); a live process's are left alone."""
    for stale in folder.glob(f".{name}.*.tmp"):
        pid = stale.name[len(name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A new hidden folder beside `out`, renamed to `out` when the block ends without error (a previous
    folder there is replaced), deleted when it fails."""
    stamp = f"{temporary_prefix(out.name)}{time.monotonic_ns()}"
    tmp, old = out.parent / f"{stamp}.tmp", out.parent / f"{stamp}.old.tmp"
    try:
        try:  # inside the clean-up below: a signal just after the mkdir leaves no folder either
            out.parent.mkdir(parents=True, exist_ok=True)
            clear_stale(out.parent, out.name)
            tmp.mkdir()
        except OSError as e:  # named by the folder asked for, not by the hidden one beside it
            raise UserError(f"{out}: cannot write there ({e.strerror or e})") from None
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
