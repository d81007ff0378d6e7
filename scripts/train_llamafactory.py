#!/usr/bin/env python
"""Train with LLaMA-Factory from a movierec YAML config.

    python scripts/train_llamafactory.py --config configs/qwen3_movielens_qlora.yaml \
        --run-name gpu-run --device cuda --override gradient_accumulation_steps=1
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from movierec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
