"""Whether a checkpoint folder's files open: enough to score with, or to resume from."""

from __future__ import annotations

import json
from pathlib import Path


def checkpoint_problems(ckpt: Path, resumable: bool = True) -> list[str]:
    """Why a checkpoint cannot be scored (resumable=False) or resumed from; [] when its files open.

    Opening means: the safetensors header parses and the file holds every byte it announces, JSON
    files parse, and optimizer, scheduler and RNG state load with torch.
    """
    problems = []
    adapter = ckpt / "adapter_model.safetensors"
    if adapter.is_file():
        problems += _safetensors_problems(adapter)
    elif not (ckpt / "adapter_model.bin").is_file():
        problems.append("missing adapter_model.safetensors")
    for name in ("adapter_config.json", *(("trainer_state.json",) if resumable else ())):
        path = ckpt / name
        if not path.is_file():
            problems.append(f"missing {name}")
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append(f"{name} is not valid JSON")
    if resumable:
        import torch

        rng = sorted(ckpt.glob("rng_state*.pth"))
        for path in [ckpt / "optimizer.pt", ckpt / "scheduler.pt", *rng]:
            if not path.is_file():
                problems.append(f"missing {path.name}")
                continue
            try:  # the checkpoint's own files, written by the trainer: RNG state holds numpy objects
                torch.load(path, map_location="cpu", weights_only=not path.name.startswith("rng_state"))
            except Exception as e:  # noqa: BLE001 - any failure to load means the file is unusable
                problems.append(f"{path.name} does not load ({type(e).__name__})")
        if not rng:
            problems.append("missing rng_state.pth")
    return problems


def _safetensors_problems(path: Path) -> list[str]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n > size - 8:
                return [f"{path.name} is truncated"]
            header = json.loads(f.read(n))
        # each tensor: {"dtype", "shape", "data_offsets": [begin, end]}; anything else is not a safetensors header
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError:
        return [f"{path.name} is gone (deleted while checked: training rotating checkpoints?)"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return [f"{path.name} has no readable header"]
    if 8 + n + end != size:
        return [f"{path.name} is truncated ({size:,} of {8 + n + end:,} bytes)"]
    return []
