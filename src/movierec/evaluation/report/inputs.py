"""Every file the report reads, parsed, through the run folder's owner (rundir.RunDir).

The data folder is the one the run records (absolute, or relative to the run folder when both were
moved together). Records of older runs hold relative paths: those are resolved against the working
directory `movierec train` ran in, not the one `report` runs in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir
from movierec.train.plan import TrainPlan


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _per_step(lines: list[dict], step_key: str) -> pd.DataFrame:
    """One row per step; a later line for the same step (a resumed run) overrides, key by key."""
    df = pd.DataFrame([line for line in lines if step_key in line])
    if df.empty:
        return df
    return df.groupby(step_key).last().sort_index()


def train_dirs(run_dir: Path, resolved: dict) -> list[Path]:
    """Folders a relative path in resolved_config.yaml may be relative to, most likely first: the working
    directory the run recorded (`working_directory`), the one output_dir implies (the run folder is output_dir below it),
    then the current one."""
    bases = [Path(resolved["working_directory"])] if resolved.get("working_directory") else []
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
    """The base model's config.json (local folder or movierec/resources/models/), None when unknown."""
    from movierec.models.params import load_model_config

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
    run = RunDir(run_dir)
    run_dir = run.path
    if not run_dir.is_dir():
        raise UserError(f"--run: {run_dir} is not a folder")
    if not run.file(RunDir.RESOLVED).is_file():
        raise UserError(f"--run: {run_dir} has no {RunDir.RESOLVED} (not a `movierec train` run folder)")
    resolved = run.resolved()
    if not isinstance(resolved.get("config"), dict):
        raise UserError(f"{run.file(RunDir.RESOLVED)}: expected a mapping with a `config` mapping")
    checkpoints = run.checkpoints()
    state = _json(run.file(RunDir.TRAINER_STATE))
    for ckpt in checkpoints[::-1]:
        if state is not None:
            break
        state = _json(ckpt / RunDir.TRAINER_STATE)
    bases = train_dirs(run_dir, resolved)
    data_note = None
    try:
        data = run.dataset()
        manifest_path, data_note = data.file(DatasetDir.MANIFEST), run.data_changed(data)
    except UserError:  # an older record, or the data moved away: what it recorded, said where it was looked for
        manifest_path = resolve(resolved.get("data_manifest"), bases)
    if baselines is None and manifest_path is not None:
        baselines = manifest_path.parent / DatasetDir.BASELINES
    elif baselines is not None and Path(baselines).is_dir():
        raise UserError(f"--baselines: {baselines} is a folder; name its baselines.json")
    elif baselines is not None and not Path(baselines).is_file():
        raise UserError(f"--baselines: {baselines} not found")
    metrics = _json(run.file(RunDir.METRICS))
    base = _checked_baselines(Path(baselines)) if baselines else None
    note = None
    theirs, ours = (base or {}).get("data_manifest_sha256"), (metrics or {}).get("data_manifest_sha256")
    if theirs and ours and theirs != ours:  # e.g. the data folder was prepared again after `baselines`
        note = (f"`{baselines}` was computed on other prepared data than the LLM's metrics (manifest sha256 "
                f"{str(theirs)[:12]}... vs {str(ours)[:12]}...): left out; rerun `movierec baselines`")
        base = None
    return {
        "dir": run_dir,
        "resolved": resolved,
        "cfg": resolved["config"],
        "plan": TrainPlan.from_dict(resolved.get("plan")),  # None: a record without a plan
        "arch": architecture(resolved["config"], bases),
        "log": _per_step(run.read_jsonl(RunDir.TRAINER_LOG), "current_steps"),
        "step_times": _per_step(run.read_jsonl(RunDir.STEP_TIMES), "step"),
        "state": state or {},
        "checkpoints": [p.name for p in checkpoints],
        "train_results": _json(run.file(RunDir.TRAIN_RESULTS)) or {},
        "eval_results": _json(run.file(RunDir.EVAL_RESULTS)) or {},
        "metrics": metrics,
        "summary": _json(run.file(RunDir.SUMMARY)),
        "predictions": run.read_jsonl(RunDir.PREDICTIONS),
        "manifest": _json(manifest_path) if manifest_path else None,
        "manifest_path": manifest_path,
        "baselines": base,
        "baselines_path": Path(baselines) if baselines else None,
        "baselines_note": note,
        "data_note": data_note,  # the data folder was prepared again after training
    }


def _checked_baselines(path: Path) -> dict | None:
    """baselines.json parsed, or a UserError line when it is not what `movierec baselines` writes."""
    data = _json(path)
    if data is None:
        return None
    ok = isinstance(data, dict) and isinstance(data.get("baselines"), dict) and all(
        isinstance(b, dict) and isinstance(b.get("overall"), dict)
        and all(isinstance(v, (int, float)) or v is None for k, v in b["overall"].items() if k in ("auc", "uauc", "n"))
        for b in data["baselines"].values())
    if not ok:
        raise UserError(f"{path}: not a baselines.json as `movierec baselines` writes it (a `baselines` mapping of "
                        "metric blocks); rerun `movierec baselines`")
    return data


def run_files(run_dir: Path) -> list[str]:
    """The run folder's entries (folders with a trailing /), hidden ones left out."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if not p.name.startswith("."))
