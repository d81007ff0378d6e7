"""Every file the report reads, parsed: the one place that touches the run folder and the files it names
(so that moving to the run folder's owner, rundir.RunDir, is a change here only).

A relative path in resolved_config.yaml (data_manifest, a local model folder) was relative to the working
directory of `movierec train`; it is resolved against that folder, not the one `report` runs in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from movierec.errors import UserError
from movierec.runinfo import list_checkpoints


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSONL file; [] when it is missing. A torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise UserError(f"{path}:{i + 1}: not valid JSON") from None
    return out


def _per_step(lines: list[dict], step_key: str) -> pd.DataFrame:
    """One row per step; a later line for the same step (a resumed run) overrides, key by key."""
    df = pd.DataFrame([line for line in lines if step_key in line])
    if df.empty:
        return df
    return df.groupby(step_key).last().sort_index()


def train_dirs(run_dir: Path, resolved: dict) -> list[Path]:
    """Folders a relative path in resolved_config.yaml may be relative to, most likely first: the working
    directory the run recorded (`cwd`), the one output_dir implies (the run folder is output_dir below it),
    then the current one."""
    bases = [Path(resolved["cwd"])] if resolved.get("cwd") else []
    out, here = Path(str(resolved["config"].get("output_dir") or "")), run_dir.resolve()
    if out.parts and not out.is_absolute() and here.parts[-len(out.parts):] == out.parts:
        bases.append(Path(*here.parts[:-len(out.parts)]))
    return bases + [Path.cwd()]


def resolve(path: str | None, bases: list[Path]) -> Path | None:
    """`path` as recorded: absolute as is, relative under the first base where it exists (else the first
    base, so that a message names where it was looked for)."""
    if not path:
        return None
    if Path(path).is_absolute():
        return Path(path)
    tried = [base / path for base in bases]
    return next((p for p in tried if p.exists()), tried[0])


def architecture(cfg: dict, bases: list[Path]) -> dict | None:
    """The base model's config.json (local folder or configs/models/), None when unknown."""
    from movierec.params import load_model_config

    name = cfg.get("model_name_or_path")
    if not name:
        return None
    local = resolve(name, bases)
    try:
        return load_model_config(local if local.exists() else name)
    except UserError:
        return None


def load_run(run_dir: str | Path, baselines: str | Path | None = None) -> dict[str, Any]:
    """Every file the report uses, parsed; missing optional files are None or empty."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run: {run_dir} is not a folder")
    resolved_path = run_dir / "resolved_config.yaml"
    if not resolved_path.is_file():
        raise UserError(f"--run: {run_dir} has no resolved_config.yaml (not a `movierec train` run folder)")
    resolved = yaml.safe_load(resolved_path.read_text())
    if not isinstance(resolved, dict) or not isinstance(resolved.get("config"), dict):
        raise UserError(f"{resolved_path}: expected a mapping with a `config` mapping")
    checkpoints = list_checkpoints(run_dir)
    state = _json(run_dir / "trainer_state.json")
    for ckpt in checkpoints[::-1]:
        if state is not None:
            break
        state = _json(ckpt / "trainer_state.json")
    bases = train_dirs(run_dir, resolved)
    manifest_path = resolve(resolved.get("data_manifest"), bases)
    if baselines is None and manifest_path is not None:
        baselines = manifest_path.parent / "baselines.json"
    elif baselines is not None and not Path(baselines).is_file():
        raise UserError(f"--baselines: {baselines} not found")
    return {
        "dir": run_dir,
        "resolved": resolved,
        "cfg": resolved["config"],
        "arch": architecture(resolved["config"], bases),
        "log": _per_step(read_jsonl(run_dir / "trainer_log.jsonl"), "current_steps"),
        "step_times": _per_step(read_jsonl(run_dir / "step_times.jsonl"), "step"),
        "state": state or {},
        "checkpoints": [p.name for p in checkpoints],
        "train_results": _json(run_dir / "train_results.json") or {},
        "eval_results": _json(run_dir / "eval_results.json") or {},
        "metrics": _json(run_dir / "metrics.json"),
        "predictions": read_jsonl(run_dir / "predictions.jsonl"),
        "manifest": _json(manifest_path) if manifest_path else None,
        "manifest_path": manifest_path,
        "baselines": _json(Path(baselines)) if baselines else None,
        "baselines_path": Path(baselines) if baselines else None,
    }


def run_files(run_dir: Path) -> list[str]:
    """The run folder's entries (folders with a trailing /), hidden ones left out."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if not p.name.startswith("."))
