#!/usr/bin/env python
"""Training throughput of two profiles, back to back in one process, and their ratio (fast / reference).

    python scripts/bench_profiles.py --reference configs/demo_tiny.yaml --fast configs/demo_tiny_fast.yaml \
        --steps 10 --device cpu --override model_name_or_path=output/tiny-qwen3
    python scripts/bench_profiles.py --reference configs/qwen3_movielens_qlora.yaml \
        --fast configs/qwen3_movielens_qlora_fast.yaml --steps 20 --device cuda

The reference side runs as the reference run did: batch 1, gradient accumulation 1, activation
checkpointing on (REFERENCE_RUN). The fast side runs as its config says. `--override` applies to
both. Prints one JSON object: {"reference": ..., "fast": ..., "ratio": ...}, logs on stderr.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from movierec.errors import UserError  # noqa: E402

# the reference run's command line, plus activation checkpointing on as in the reference config
# (demo_tiny.yaml turns it off with `disable_gradient_checkpointing: true`)
REFERENCE_RUN = ["per_device_train_batch_size=1", "gradient_accumulation_steps=1",
                 "disable_gradient_checkpointing=false"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="reference profile (run at batch 1, accumulation 1)")
    p.add_argument("--fast", required=True, help="fast profile (run as configured)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps of the fast profile")
    p.add_argument("--reference-steps", type=int, help="optimizer steps of the reference profile (default: --steps)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="for both profiles; repeatable")
    args = p.parse_args(argv)

    from movierec.bench import run_bench

    try:
        ref = run_bench(args.reference, [*REFERENCE_RUN, *args.override], args.reference_steps or args.steps, args.device)
        fast = run_bench(args.fast, args.override, args.steps, args.device)
    except UserError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    ratio = {key: fast[key] / ref[key] for key in ("examples_per_s", "tokens_per_s", "peak_memory_gib")}
    print(json.dumps({"reference": ref, "fast": fast, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
