"""Atomic file writes (a reader never sees a half-written file), and the one JSON / JSONL reader."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from movierec.errors import UserError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- the one reader of JSON and JSONL files

_MISSING = object()


def read_json(path: str | os.PathLike, default: Any = _MISSING, hint: str = "") -> Any:
    """A JSON file's content. Missing: `default` when given, else a UserError; unreadable or not JSON: always
    a UserError naming the file (and `hint`, what to do about it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise UserError(f"{path}: not found" + (f"; {hint}" if hint else "")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {_unreadable(e)}" + (f"; {hint}" if hint else "")) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})" + (f"; {hint}" if hint else "")) from None


def read_jsonl(path: str | os.PathLike, missing_ok: bool = False, torn_tail_ok: bool = False,
               hint: str = "") -> list[dict[str, Any]]:
    """The records (JSON objects) of a JSONL file; blank lines skipped. Missing: [] when `missing_ok`, else a
    UserError. A line that is not a JSON object is a UserError naming file and line, except the last line of
    a log that a crash cut short (`torn_tail_ok`), which is skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise UserError(f"{path}: not found" + (f"; {hint}" if hint else "")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {_unreadable(e)}" + (f"; {hint}" if hint else "")) from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if torn_tail_ok and number == len(lines):
                break
            raise UserError(f"{path}:{number}: not a JSON record ({e.msg})" + (f"; {hint}" if hint else "")) from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def _unreadable(e: OSError | UnicodeDecodeError) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 ({e.reason} at byte {e.start})"
    return f"cannot be read ({e.strerror or e})"
