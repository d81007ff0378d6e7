#!/usr/bin/env python
"""Build the Yes/No datasets from MovieLens: python scripts/prepare_movielens.py --config configs/data/movielens_25m.yaml"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from movierec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
