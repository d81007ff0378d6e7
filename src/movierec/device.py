"""Device choice and the CPU/GPU precision rules every command shares."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from movierec.errors import UserError

if TYPE_CHECKING:
    from movierec.train.config import RunConfig


def resolve_device(choice: str) -> str:
    """Return "cpu" or "cuda". `cpu` hides CUDA from this process and its children."""
    if choice == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
    return "cuda" if torch.cuda.is_available() else "cpu"


def planned_device(choice: str) -> str:
    """The device a run would use, without requiring it (a dry run may describe a GPU run on a laptop)."""
    return resolve_device("auto") if choice == "auto" else choice


def apply_device(cfg: RunConfig, device: str) -> tuple[RunConfig, list[str]]:
    """The config with its precision adjusted for the device, and notes describing what changed."""
    changes, notes = {}, []
    if device == "cpu":
        for key in ("bf16", "fp16", "pure_bf16"):
            if cfg.llamafactory.get(key):
                changes[key] = False
                notes.append(f"{key} off")
        changes["use_cpu"] = True
        notes.append("fp32 compute")
    return cfg.replace(**changes), notes


def keep_fp32_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its bf16 CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes' Linear4bit repacks its weight on the first forward
    in eval mode without grad (any evaluation) and never unpacks it when training resumes:
    later training steps then run ~30x slower on the repacked weight and give different results,
    and evaluation computes in bf16. movierec computes in fp32 on CPU, so it turns that off.
    Returns the number of layers changed (0 off CPU-capable builds).
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed
