"""Markdown helpers of the report: table cells, tables and durations."""

from __future__ import annotations

from typing import Any

import numpy as np

NA = "not available"


def fmt(v: Any, digits: int | None = None) -> str:
    """Table cell text: ints with thousands separators, floats as written in configs (`g`) unless
    `digits` asks for fixed decimals (metrics)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:g}" if digits is None else f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def kv(rows: list[tuple[str, Any]]) -> str:
    return table(["Parameter", "Value"], [[f"**{k}**", v] for k, v in rows])


def dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def metrics_table(rows: list[tuple[str, Any]]) -> str:
    return table(["Metric", "Value"], [[f"**{k}**", v] for k, v in rows])
