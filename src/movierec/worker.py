"""One training process: load the saved LLaMA-Factory arguments and call its run_exp.

Runs in-process for a single device, or once per rank under torchrun:
    python -m torch.distributed.run --nproc_per_node 2 -m movierec.worker LF_YAML RESOLVED_YAML
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml


def _load_cpu_rank_state_on_cpu() -> None:
    """Resuming DDP on CPU: transformers loads optimizer state with map_location=args.device,
    which is "cpu:0" on CPU ranks, and torch cannot restore storages to "cpu:0". Map it to "cpu"."""
    import functools

    import torch

    load = torch.load

    @functools.wraps(load)
    def patched(*args, map_location=None, **kwargs):
        if str(map_location).startswith("cpu:"):
            map_location = "cpu"
        return load(*args, map_location=map_location, **kwargs)

    torch.load = patched


def run(lf_yaml: str | Path, resolved_yaml: str | Path, extra_callbacks: list | None = None) -> None:
    from llamafactory.train.tuner import run_exp

    from movierec.callbacks import build_callbacks

    lf_args = yaml.safe_load(Path(lf_yaml).read_text(encoding="utf-8"))
    resolved = yaml.safe_load(Path(resolved_yaml).read_text(encoding="utf-8"))
    if resolved.get("device") == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _load_cpu_rank_state_on_cpu()
    callbacks = build_callbacks(lf_args, resolved.get("movierec", {})) + list(extra_callbacks or [])
    run_exp(args=lf_args, callbacks=callbacks)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
