"""One training process: load the saved LLaMA-Factory arguments and call its run_exp.

Runs in-process for a single device, or once per rank under torchrun:
    python -m torch.distributed.run --nproc_per_node 2 -m movierec.worker LF_YAML RESOLVED_YAML
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def run(lf_yaml: str | Path, resolved_yaml: str | Path) -> None:
    from llamafactory.train.tuner import run_exp

    from movierec.callbacks import build_callbacks

    lf_args = yaml.safe_load(Path(lf_yaml).read_text(encoding="utf-8"))
    resolved = yaml.safe_load(Path(resolved_yaml).read_text(encoding="utf-8"))
    run_exp(args=lf_args, callbacks=build_callbacks(lf_args, resolved.get("movierec", {})))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
