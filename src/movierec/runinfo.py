"""What a run folder holds and what produced it: checkpoints, versions, git revision, data hash."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# A checkpoint without these cannot be resumed (adapter weights, optimizer, LR schedule, step).
CHECKPOINT_REQUIRED = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json",
                       "optimizer.pt", "scheduler.pt")
PACKAGES = ("movierec", "llamafactory", "transformers", "peft", "trl", "datasets", "accelerate",
            "torch", "torchaudio", "bitsandbytes", "tokenizers", "deepspeed")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders sorted by N (numerically, not as text)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def missing_files(ckpt: Path) -> list[str]:
    """Files a resumable checkpoint lacks (older peft writes adapter_model.bin)."""
    return [f for f in CHECKPOINT_REQUIRED
            if not (ckpt / f).is_file()
            and not (f == "adapter_model.safetensors" and (ckpt / "adapter_model.bin").is_file())]


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    return [p for p in list_checkpoints(output_dir) if not missing_files(p)]


def best_checkpoint(output_dir: str | Path) -> Path | None:
    """The best checkpoint recorded by the trainer (metric_for_best_model), if it still exists."""
    for ckpt in complete_checkpoints(output_dir)[::-1]:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        best = state.get("best_model_checkpoint")
        if best:
            path = Path(output_dir) / Path(best).name
            return path if path.is_dir() else None
    return None


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


def dataset_dir(args: dict[str, Any]) -> Path:
    """The config's dataset_dir (LLaMA-Factory's default: data), relative to the working directory."""
    return Path(args.get("dataset_dir") or "data")


def data_manifest(lf: dict[str, Any]) -> Path | None:
    path = dataset_dir(lf) / "manifest.json"
    return path if path.is_file() else None


def dataset_examples(lf: dict[str, Any], key: str = "dataset") -> int | None:
    """Rows of the dataset(s) named by `key`: manifest counts if prepared, else JSONL lines."""
    names = [n.strip() for n in str(lf.get(key) or "").split(",") if n.strip()]
    if not names:
        return None
    folder = dataset_dir(lf)
    manifest = data_manifest(lf)
    counts = json.loads(manifest.read_text()).get("counts", {}) if manifest else expected_counts(folder)
    info_path = folder / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    total = 0
    for name in names:
        split = name.rsplit("_", 1)[-1]  # movielens_qwen3_train -> train
        file = folder / info.get(name, {}).get("file_name", f"{name}.jsonl")
        if file.is_file():
            with open(file, "rb") as f:
                total += sum(1 for _ in f)
        elif isinstance(counts.get(split), int):
            total += counts[split]
        else:
            return None
    return total


def expected_counts(dataset_dir: Path) -> dict[str, int]:
    """Counts a shipped data config will produce in `dataset_dir`, for estimates before `prepare` runs."""
    import yaml

    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for path in sorted((root / "configs" / "data").glob("*.yaml")):
            cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if Path(str(cfg.get("out_dir", ""))) == dataset_dir:
                return {"train": cfg.get("n_train"), "eval": cfg.get("n_eval"), "source": str(path)}
    return {}


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


def run_metadata(args, cfg: dict[str, Any], lf_args: dict[str, Any], mr: dict[str, Any],
                 device: str, world_size: int) -> dict[str, Any]:
    """Everything that produced a run, saved as resolved_config.yaml."""
    manifest = data_manifest(lf_args)
    return {
        "config_file": str(args.config),
        "run_name": lf_args["run_name"],
        "device": device,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "overrides": list(args.override),
        "resume_from": lf_args.get("resume_from_checkpoint"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**{k: v for k, v in cfg.items()}, **lf_args, **mr},
        "movierec": mr,
        "versions": versions(),
        "git_revision": git_revision(),
        "data_manifest": str(manifest) if manifest else None,
        "data_manifest_sha256": sha256_file(manifest) if manifest else None,
        "hardware": hardware(device, world_size),
    }
