"""What produced a run: config, command, versions, git revision, data hash, hardware (resolved_config.yaml)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.train.config import MovierecArguments

PACKAGES = ("movierec", "llamafactory", "transformers", "peft", "trl", "datasets", "accelerate",
            "torch", "torchaudio", "bitsandbytes", "tokenizers", "deepspeed")


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    try:
        here = str(Path(__file__).resolve().parent)  # movierec's own checkout, wherever the run starts
        rev = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hardware(device: str, world_size: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "world_size": world_size, "torch": str(torch.__version__),
                            "cuda_version": str(torch.version.cuda) if torch.version.cuda else None, "platform": platform.platform()}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count())
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def _train_hashes(data: DatasetDir, names: str | None) -> dict[str, str | None] | None:
    """sha256 of each training dataset's file as its manifest records it (None before `prepare`)."""
    try:
        return data.recorded_sha256(names) if data.is_prepared() else None
    except UserError:
        return None


def run_metadata(args, cfg: dict[str, Any], lf_args: dict[str, Any], mr: MovierecArguments, device: str,
                 world_size: int, data: DatasetDir) -> dict[str, Any]:
    """Everything that produced a run, saved as resolved_config.yaml (paths absolute and, for the data
    and model folders, also relative to the run folder: it works from anywhere and after moving it
    together with them)."""
    manifest = data.file(data.MANIFEST)
    out = Path(lf_args["output_dir"])
    model = Path(lf_args["model_name_or_path"])
    model_is_local = model.is_absolute() and model.exists()
    return {
        "config_file": str(Path(args.config).resolve()),
        "run_name": lf_args["run_name"],
        "device": device,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "working_directory": os.getcwd(),
        "overrides": list(args.override),
        "resume_from": lf_args.get("resume_from_checkpoint"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**cfg, **lf_args, **mr.to_dict()},
        "movierec": mr.to_dict(),
        "paths": {
            "output_dir": str(out), "dataset_dir": str(data.path),
            "dataset_dir_from_run": os.path.relpath(data.path, out),
            "model": str(model), "model_is_local": model_is_local,
            "model_from_run": os.path.relpath(model, out) if model_is_local else None,
        },
        "versions": versions(),
        "git_revision": git_revision(),
        "data_manifest": str(manifest) if manifest.is_file() else None,
        "data_manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
        "data_train_sha256": _train_hashes(data, lf_args.get("dataset")),  # evaluate checks the data is still it
        "hardware": hardware(device, world_size),
    }
