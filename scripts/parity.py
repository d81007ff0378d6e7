#!/usr/bin/env python
"""Quality parity: the fast profiles, scaled to the tiny model, against the reference profile on the demo data.

    python scripts/parity.py                          # demo_tiny.yaml vs the fast demo profiles, seed 42
    python scripts/parity.py --seeds 42 43 44 45 46   # the README's figures: mean over seeds (~27 min on 2 cores)

Builds what is missing the way `movierec demo` does (tiny model in output/tiny-qwen3, demo data in
data/demo), then trains each profile on CPU (`movierec train`, one process each, into
output/parity/<profile>-<seed>) and reads its AUC: the final model's, scored over all eval examples
by movierec's scorer at LLaMA-Factory's evaluation after the last step (trainer_log.jsonl), and the
best of its in-training evaluations. Prints a table on stderr and one JSON object on stdout; exits 1
when a fast profile's mean final AUC is more than --tolerance below the reference's, 2 on bad input or a
failed command (its error line is printed; the full output is in output/parity/<profile>-<seed>.log).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "configs/demo_tiny.yaml"
FAST = ["configs/demo_tiny_fast.yaml", "configs/demo_tiny_lora_bf16_fast.yaml"]


class Failed(Exception):
    """A movierec command failed: the message is one line for the console."""


def movierec(*argv: str, log: Path | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with open(log or os.devnull, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "movierec", *argv], check=False, cwd=ROOT, env=env,
                            stdout=f, stderr=f).returncode
    if rc != 0:
        errors = [x for x in log.read_text(errors="replace").splitlines() if x.startswith("error")] if log else []
        reason = f": {errors[-1].removeprefix('error: ')}" if errors else ""
        raise Failed(f"movierec {argv[0]} failed (exit code {rc}){reason}" + (f"; see {log}" if log else ""))


def train(config: str, seed: int, args) -> dict:
    out = Path(args.out) / f"{Path(config).stem}-{seed}"
    start = time.perf_counter()
    movierec("train", "--config", config, "--device", "cpu", "--overwrite", "--run-name", "parity",
             "--override", f"model_name_or_path={args.model}", "--override", f"dataset_dir={args.data}",
             "--override", f"output_dir={out}", "--override", f"seed={seed}",
             *[x for o in args.override for x in ("--override", o)], log=Path(f"{out}.log"))
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    aucs = [line for line in lines if "eval_auc" in line]
    if not aucs:
        raise Failed(f"{out}: no eval_auc in trainer_log.jsonl")
    return {"profile": Path(config).stem, "seed": seed, "final_auc": aucs[-1]["eval_auc"],
            "best_auc": max(a["eval_auc"] for a in aucs), "steps": aucs[-1]["current_steps"],
            "eval_examples": aucs[-1]["eval_auc_examples"], "seconds": round(time.perf_counter() - start, 1),
            "run": str(out)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=REFERENCE)
    p.add_argument("--fast", action="append", help=f"fast profile; repeatable (default: {', '.join(FAST)})")
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--tolerance", type=float, default=0.02, help="largest allowed AUC drop of a fast profile")
    p.add_argument("--model", default="output/tiny-qwen3")
    p.add_argument("--data", default="data/demo")
    p.add_argument("--out", default="output/parity")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="for every profile")
    args = p.parse_args()
    os.chdir(ROOT)
    configs = [args.reference, *(args.fast or FAST)]
    problems = [f"config file not found: {c}" for c in configs if not Path(c).is_file()]
    problems += ["--tolerance: must be >= 0"] if not args.tolerance >= 0 else []
    problems += [f"--data: not a folder: {args.data}"] if Path(args.data) != Path("data/demo") and not Path(
        args.data).is_dir() else []
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    try:
        return compare(args, configs)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to start over (each run is trained with --overwrite)",
              file=sys.stderr)
        return 130


def compare(args, configs: list[str]) -> int:
    if not (Path(args.model) / "config.json").is_file():
        movierec("make-tiny-model", args.model)
    if Path(args.data) == Path("data/demo"):
        movierec("prepare", "--config", "configs/data/demo.yaml")  # skipped when already prepared
    Path(args.out).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for config in configs:
            runs.append(train(config, seed, args))
            r = runs[-1]
            print(f"{r['profile']:<28} seed {seed}: final AUC {r['final_auc']:.4f}, best {r['best_auc']:.4f} "
                  f"({r['steps']} steps, {r['seconds']:.0f}s)", file=sys.stderr, flush=True)
    mean = {}
    for r in runs:
        mean.setdefault(r["profile"], []).append(r["final_auc"])
    mean = {k: sum(v) / len(v) for k, v in mean.items()}
    ref = mean[Path(args.reference).stem]
    verdict = {k: {"mean_final_auc": v, "minus_reference": v - ref, "within_tolerance": abs(v - ref) <= args.tolerance,
                   "ok": v >= ref - args.tolerance}  # ok: not worse than the reference by more than the tolerance
               for k, v in mean.items() if k != Path(args.reference).stem}
    print(json.dumps({"reference": Path(args.reference).stem, "reference_mean_final_auc": ref,
                      "tolerance": args.tolerance, "fast": verdict, "runs": runs,
                      "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return 0 if all(v["ok"] for v in verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
