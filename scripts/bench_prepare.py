#!/usr/bin/env python
"""Time `movierec prepare` on the full-size synthetic MovieLens set (25M ratings).

    .venv/bin/python scripts/bench_prepare.py [--work DIR]

Generates DIR/raw with `synth --scale full` if missing (in this process, so its memory does not count),
runs prepare in a subprocess with configs/data/movielens_25m.yaml, and prints JSON: wall seconds and
the subprocess's peak RSS (getrusage RUSAGE_CHILDREN).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from movierec.data import synth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/movierec-bench", help="folder for the synthetic input and the output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    raw, out = Path(args.work) / "raw", Path(args.work) / "data"
    result = {}
    if not (raw / "ratings.csv").exists() or not (raw / "movies.csv").exists():
        start = time.perf_counter()
        synth.write(raw, *synth.sizes("full"), args.seed, force=True)
        result["synth_s"] = round(time.perf_counter() - start, 1)
    cmd = [sys.executable, "-m", "movierec.cli", "prepare", "--config", str(ROOT / "configs/data/movielens_25m.yaml"),
           "--input", str(raw), "--out", str(out), "--force"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    result["prepare_wall_s"] = round(time.perf_counter() - start, 1)
    result["prepare_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    manifest = json.loads((out / "manifest.json").read_text())
    result |= {"ratings": manifest["counts"]["ratings"], "train": manifest["counts"]["train"],
               "eval": manifest["counts"]["eval"], "cpus": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
