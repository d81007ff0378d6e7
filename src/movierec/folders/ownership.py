"""Which entries of a folder a command wrote: path patterns, matched entry by entry down the tree.

A pattern is a path relative to the folder. `*` matches within one name, `<N>` a number, `**/` any number of
folders; a pattern ending in `/` names a folder whose entries are matched in turn. An entry no pattern names
is foreign: the command that owns the folder never deletes or overwrites it. `hold` keeps a folder for one
process at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from movierec.errors import UserError


@cache
def _compiled(patterns: tuple[str, ...]) -> re.Pattern:
    parts = []
    for pattern in patterns:
        out = ""
        for token in re.split(r"(\*\*/|\*|<N>)", pattern):
            out += {"**/": "(?:[^/]+/)*", "*": "[^/]*", "<N>": "[0-9]+"}.get(token, re.escape(token))
        parts.append(out)
    return re.compile("|".join(f"(?:{p})" for p in parts))


def owned(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether `relative` (a path inside the folder, ending in `/` for a folder) is named by `patterns`."""
    return _compiled(patterns).fullmatch(relative) is not None


def foreign_entries(root: Path, patterns: tuple[str, ...]) -> list[str]:
    """Entries under `root` that no pattern names, as relative paths (a foreign folder is listed, not entered).
    A symlink counts as a file, and is never followed."""
    found: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                is_dir = entry.is_dir(follow_symlinks=False)
                relative = prefix + entry.name + ("/" if is_dir else "")
                if not owned(relative, patterns):
                    found.append(relative)
                elif is_dir:
                    walk(Path(entry.path), relative)

    if root.is_dir():
        walk(root, "")
    return found


@contextmanager
def hold(folder: Path, name: str, command: str, warn=print) -> Iterator[None]:
    """Hold `folder` for this process through the lock file `name` in it (PID, host, start time, command).

    Creating the lock file is atomic (O_EXCL). Taking over one left by a dead process on this host is
    read, check, delete, create: processes do it one at a time under an flock of the folder itself, so two
    that find the same stale lock cannot both win.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
    path = folder / name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "since": datetime.now(UTC).isoformat(timespec="seconds")}
    guard = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        _take(path, me, warn)
    finally:
        os.close(guard)  # releases the flock: the lock file now says who holds the folder
    try:
        yield
    finally:
        if read_lock(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def _take(path: Path, me: dict[str, Any], warn) -> None:
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except PermissionError as e:
            raise UserError(f"{path.parent}: cannot write there ({e.strerror})") from None
        except FileExistsError:
            owner = read_lock(path)
            if owner.get("host") == me["host"] and not pid_alive(owner.get("pid")):
                warn(f"warning: {path} was left by PID {owner.get('pid')}, which is gone; taking it over")
                path.unlink(missing_ok=True)
                continue
            raise UserError(f"{path.parent} is in use by PID {owner.get('pid', '?')} on {owner.get('host', '?')} "
                            f"since {owner.get('since', '?')} ({owner.get('command', '?')}); wait for it to end "
                            f"(if that process is gone, delete {path})") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return


def read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id runs on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
