#!/usr/bin/env python
"""Throughput of the reference profile and fast profiles, scoring speed, and projected run times: one JSON.

    python scripts/bench_profiles.py --reference configs/qwen3_movielens_qlora.yaml \\
        --fast configs/qwen3_movielens_qlora_fast.yaml --fast configs/qwen3_movielens_lora_bf16_fast.yaml \\
        --scoring --device cuda                                    # what scripts/gpu_bench.sh runs
    python scripts/bench_profiles.py --reference configs/demo_tiny.yaml --fast configs/demo_tiny_fast.yaml \\
        --fast configs/demo_tiny_lora_bf16_fast.yaml --scoring --device cpu \\
        --override model_name_or_path=output/tiny-qwen3           # the same on CPU with the tiny model

Each part is one `movierec bench` in its own process with its own time limit (a crash, out of memory
or hang loses that part only, reported under `errors` with its log's last error line): the reference
profile as the reference run ran (batch 1, accumulation 1, activation checkpointing: REFERENCE_RUN),
each fast profile as configured, then `--scoring` (the first fast profile's scoring, as `movierec
evaluate` loads a run), then the lever rows, each the first fast profile with one change (LEVERS, in
priority order): the peer (LLaMA-Factory's `use_unsloth: true`, unsloth imported first, in its own
process), CUDA graphs on bucketed static shapes, the answer-only LM head and the host-sync levers toggled,
Liger's fused linear cross-entropy, Liger at a larger batch, torch.compile on bucketed static shapes and
with dynamic shapes, and with `--packing-variant` neat packing (`--skip NAME` leaves a part out). Rows a
CPU cannot measure, or whose package is missing, are listed under `not_measured` with the reason.
Parts that would start with less than MIN_PART_S of the `--budget-s` left are skipped. The random model
is built once and shared (`--work`).

Prints one JSON object (also written to WORK/bench.json after every part): each part's examples/s,
real tokens/s, MFU, GPU-busy fraction, step time p50/p90, peak memory, first and last loss, evaluation
rates, step plan and projected wall time; ratios to the reference; the peer ratio (best profile at
the unsloth row's batch over the unsloth row); scoring; the targets; errors. Logs go to
WORK/<part>.log. `--override` applies to every part.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

# the reference run's command line, plus activation checkpointing on as in the reference config
# (demo_tiny.yaml turns it off with `disable_gradient_checkpointing: true`)
REFERENCE_RUN = ["per_device_train_batch_size=1", "gradient_accumulation_steps=1",
                 "disable_gradient_checkpointing=false"]
PACKED_CUTOFF = 1024  # ~5 examples of ~200 tokens per sequence; every example still fits
MIN_PART_S = 45  # a part needs this much budget to load a model and take a few steps
TARGETS = {"fast_speedup_min": 15.0, "projected_total_seconds_max": 720.0, "scoring_seconds_max": 3.0,
           "examples_per_s_min": 400.0, "gpu_busy_min": 0.70, "mfu_min": 0.20, "peer_ratio_min": 1.2}
PEER = "+unsloth"
BUCKET = 64  # shape_buckets of the compile rows: ~260-token prompts fall in 2-3 shapes
# Levers a row toggles: name -> {key: (value with the lever, value without)}
TOGGLES = {"host_sync_levers": {"optim": ("adamw_torch_fused", "adamw_torch"), "logging_nan_inf_filter": (False, True)},
           "answer_logits": {"answer_logits_only": (True, False)}}
# Lever rows on the first fast profile: (suffix, overrides, what it needs: None, "gpu" or a module, note).
LEVERS = [  # in priority order: the GPU script skips the last ones when its budget runs out
    (PEER, ["use_unsloth=true", "answer_logits_only=false"], "unsloth",
     "the peer: LLaMA-Factory with use_unsloth (unsloth's kernels and its own LoRA/4-bit path); LLaMA-Factory "
     "makes unsloth recompute activations (use_gradient_checkpointing='unsloth'), which the fast profile does not"),
    ("+cudagraphs", ["torch_compile=true", "torch_compile_mode=reduce-overhead", f"shape_buckets={BUCKET}"], "gpu",
     "CUDA graphs: torch.compile's reduce-overhead mode on the static shapes of shape_buckets (a graph replayed per "
     "step instead of ~19,000 kernel launches from the host)"),
    ("{sign}answer_logits", ["toggle:answer_logits"], None,
     "the LM head only at the positions the loss reads (answer_logits_only): undone (-) where the profile has it"),
    ("{sign}host_sync_levers", ["toggle:host_sync_levers"], None,
     "fused AdamW and no per-step loss isnan/isinf read: undone (-) where the profile has them, else applied (+)"),
    ("+liger", ["enable_liger_kernel=true", "answer_logits_only=false"], "liger_kernel",
     "Liger kernels with fused linear cross-entropy (no 151,936-wide logits)"),
    ("+liger+batch{large}", ["enable_liger_kernel=true", "answer_logits_only=false", "per_device_train_batch_size={large}"],
     "liger_kernel",
     "a larger batch once the logits are gone (throughput only: a new batch needs its learning rate and parity)"),
    ("+compile+buckets", ["torch_compile=true", f"shape_buckets={BUCKET}"], None,
     f"torch.compile with static shapes: batches padded to multiples of {BUCKET} tokens and full rows "
     "(shape_buckets), a graph per shape; the first batch of each shape compiles (in the warm-up or the p90)"),
    ("+compile", ["torch_compile=true"], "gpu",
     "torch.compile through the Trainer (dynamic shapes: length-grouped batches padded to multiples of 8)"),
]
FLOP_CONVENTION = ("per real (non-padding) training token: 4*N_frozen + 6*N_trainable + 12*layers*heads*head_dim*ctx "
                   "(frozen base: forward + activation gradients; LoRA: forward + both gradients; attention QK^T and "
                   "AV within each example, ctx = mean keys attended); recomputation and masked attention not counted; "
                   "mfu: against the GPU's dense bf16 peak (table), mfu_vs_measured_matmul: against an 8192^3 bf16 matmul")


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    for line in reversed(lines):
        if line.startswith("error: ") or "Error" in line.split(":")[0]:
            return line[:500]
    return lines[-1][:500] if lines else "no output"


def run_part(name: str, argv: list[str], work: Path, limit_s: float) -> tuple[dict | None, str | None]:
    """One `movierec bench` in a subprocess; (result, error). The peer imports unsloth before transformers,
    as unsloth requires for its patches."""
    out, log = work / f"{name}.json", work / f"{name}.log"
    out.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    start_cmd = ["-c", "import unsloth, runpy; runpy.run_module('movierec', run_name='__main__', alter_sys=True)"] \
        if name.endswith(PEER) else ["-m", "movierec"]
    cmd = [sys.executable, *start_cmd, "bench", *argv, "--json-out", str(out)]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: up to {limit_s:.0f}s (log: {log})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=f, timeout=limit_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {limit_s:.0f}s; last line: {_last_error(log)}"
    took = time.perf_counter() - start
    if proc.returncode != 0 or not out.is_file():
        return None, f"exit code {proc.returncode} after {took:.0f}s: {_last_error(log)}"
    result = json.loads(out.read_text())
    result["part_seconds"] = round(took, 1)
    if name.endswith(PEER) and "Unsloth does not support model type" in log.read_text(errors="replace"):
        return None, "unsloth declined the model and LLaMA-Factory fell back to its own path (not the peer)"
    return result, None


def summarize(report: dict) -> None:
    """Ratios to the reference and the targets, from what the parts measured."""
    profiles = report["profiles"]
    ref = profiles.get("reference")
    report["ratios"] = {
        name: {k: p[k] / ref[k] for k in ("examples_per_s", "tokens_per_s", "peak_memory_gib") if ref and ref.get(k)}
        for name, p in profiles.items() if name != "reference" and ref}
    fast = {name: p for name, p in profiles.items() if name != "reference"}
    targets = {}
    for name, p in fast.items():
        speedup = report["ratios"].get(name, {}).get("examples_per_s")
        projection = p.get("projection") or {}
        targets[name] = {
            "speedup": speedup, "speedup_ok": speedup is not None and speedup >= TARGETS["fast_speedup_min"],
            "projected_total_seconds": projection.get("total_seconds"),
            "projected_ok": projection.get("total_seconds", float("inf")) <= TARGETS["projected_total_seconds_max"],
            "eval_fraction": projection.get("eval_fraction"),
            "eval_fraction_ok": projection.get("eval_fraction", 1.0) <= 0.10}
    peer = profiles.get(next((n for n in profiles if n.endswith(PEER)), ""))
    if peer:
        same = {n: p for n, p in fast.items() if not n.endswith(PEER)
                and p["per_device_train_batch_size"] == peer["per_device_train_batch_size"]}
        best = max(same, key=lambda n: same[n]["examples_per_s"], default=None)
        report["peer"] = {"row": next(n for n in profiles if n.endswith(PEER)), "best_at_same_batch": best,
                          "ratio": same[best]["examples_per_s"] / peer["examples_per_s"] if best else None,
                          "differs": "unsloth recomputes activations (forced by LLaMA-Factory); its own LoRA and "
                                     "4-bit kernels; same model, data, LoRA, batch and steps"}
        targets["peer"] = {"ratio": report["peer"]["ratio"], "ok": (report["peer"]["ratio"] or 0)
                           >= TARGETS["peer_ratio_min"]}
    for name, p in fast.items():
        targets[name].update(
            examples_per_s_ok=p["examples_per_s"] >= TARGETS["examples_per_s_min"],
            gpu_busy_ok=p.get("gpu_busy_fraction") is not None and p["gpu_busy_fraction"] >= TARGETS["gpu_busy_min"],
            mfu_ok=p.get("mfu") is not None and p["mfu"] >= TARGETS["mfu_min"])
    scoring = report.get("scoring")
    if scoring:
        targets["scoring"] = {"seconds": scoring["seconds"], "examples": scoring["examples"],
                              "ok": scoring["seconds"] <= TARGETS["scoring_seconds_max"]}
    report["targets"] = {"thresholds": TARGETS, **targets}


def _row(first: str, suffix: str, changes: list[str], large: int) -> tuple[str, list[str]]:
    """A lever row's name and overrides; a `toggle:NAME` change undoes TOGGLES[NAME] where the profile has it
    (the row is named -NAME) and applies it where it does not (+NAME)."""
    import yaml

    path = Path(first) if Path(first).is_file() else ROOT / first  # the parts run in ROOT
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else {}
    sign, overrides = "", []
    for change in changes:
        if not change.startswith("toggle:"):
            overrides.append(change.format(large=large))
            continue
        pairs = TOGGLES[change.removeprefix("toggle:")]
        has = all(cfg.get(key) == on for key, (on, _) in pairs.items())
        sign = "-" if has else "+"
        overrides += [f"{key}={yaml.safe_dump(off if has else on).splitlines()[0]}" for key, (on, off) in pairs.items()]
    return f"{Path(first).stem}{suffix}".format(large=large, sign=sign), overrides


def lever_unavailable(needs: str | None, device: str) -> str | None:
    """Why a lever row cannot be measured here, or None."""
    import importlib.util

    if needs is None:
        return None
    if device == "cpu":
        return ("GPU only (Triton kernels, CUDA graphs, or inductor's code generation for dynamic shapes, which "
                "failed on CPU with torch 2.9.1): not measured on CPU")
    if needs != "gpu" and importlib.util.find_spec(needs) is None:
        return f"{needs.replace('_', '-')} is not installed (scripts/offline_wheels.sh brings its wheel)"
    return None


def not_measured(args) -> dict[str, str]:
    return {_row(args.fast[0], suffix, changes, args.large_batch)[0]: why for suffix, changes, needs, _ in LEVERS
            if (why := lever_unavailable(needs, args.device))}


def plan_parts(args) -> list[tuple[str, list[str], float, bool]]:
    """(name, `movierec bench` arguments, time limit, optional) of every part, in order."""
    common = ["--device", args.device, "--model-cache", str(Path(args.work) / "models")]
    overrides = [x for o in args.override for x in ("--override", o)]
    ref_overrides = [x for o in REFERENCE_RUN for x in ("--override", o)]
    parts = [("reference", ["--config", args.reference, "--steps", str(args.reference_steps), *common,
                            *overrides, *ref_overrides], args.part_limit_s, False)]  # the reference run's shape wins
    for config in args.fast:
        parts.append((Path(config).stem, ["--config", config, "--steps", str(args.steps), *common, *overrides],
                      args.part_limit_s, False))
    first = args.fast[0]
    if args.scoring:
        parts.append(("scoring", ["--config", first, "--scoring", "--examples", str(args.scoring_examples), *common,
                                  *overrides], args.part_limit_s, False))
    for suffix, changes, needs, _ in LEVERS:
        name, changes = _row(first, suffix, changes, args.large_batch)
        if lever_unavailable(needs, args.device) is None:
            parts.append((name, ["--config", first, "--steps", str(args.steps), *common, *overrides,
                                 *[x for c in changes for x in ("--override", c)]], args.part_limit_s, True))
    if args.packing_variant:
        parts.append((f"{Path(first).stem}+packing", [
            "--config", first, "--steps", str(args.steps), *common, *overrides, "--override", "neat_packing=true",
            "--override", f"cutoff_len={args.packed_cutoff}",
            "--override", f"per_device_train_batch_size={args.packed_batch}"], args.part_limit_s, True))
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="reference profile (run at batch 1, accumulation 1, checkpointing)")
    p.add_argument("--fast", action="append", required=True, help="fast profile (run as configured); repeatable")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps of each fast profile")
    p.add_argument("--reference-steps", type=int, default=40, help="optimizer steps of the reference profile")
    p.add_argument("--scoring", action="store_true", help="also time scoring the eval set (first fast profile)")
    p.add_argument("--scoring-examples", type=int, default=4450)
    p.add_argument("--packing-variant", action="store_true", help="also the first fast profile with neat_packing")
    p.add_argument("--packed-cutoff", type=int, default=PACKED_CUTOFF)
    p.add_argument("--packed-batch", type=int, default=8, help="packed sequences per step in the packing variant")
    p.add_argument("--large-batch", type=int, default=128, help="the batch of the Liger larger-batch row")
    p.add_argument("--skip", action="append", default=[], metavar="PART",
                   help="leave out this part (a lever row's name, e.g. demo_tiny_fast+compile+buckets); repeatable")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="for every part; repeatable")
    p.add_argument("--budget-s", type=float, default=420, help="wall-clock budget for all parts")
    p.add_argument("--part-limit-s", type=float, default=150, help="time limit of one part")
    p.add_argument("--work", default="/tmp/movierec-bench-profiles", help="logs, part results, the random model")
    args = p.parse_args(argv)

    parts, unmeasurable = {name: optional for name, _, _, optional in plan_parts(args)}, not_measured(args)
    for name in (n for n in args.skip if n not in unmeasurable):  # one line and exit 2, before any part runs
        why = ("no such part (parts: " + ", ".join(parts) + ")" if name not in parts else
               "a required part (the reference, the fast profiles and scoring always run)" if not parts[name] else "")
        if why:
            print(f"error: --skip {name}: {why}", file=sys.stderr)
            return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    report: dict = {"device": args.device, "flop_convention": FLOP_CONVENTION, "profiles": {}, "scoring": None,
                    "errors": {}, "skipped": [], "not_measured": not_measured(args),
                    "levers": {_row(args.fast[0], suffix, changes, args.large_batch)[0]: note
                               for suffix, changes, _, note in LEVERS}}
    start = time.monotonic()
    try:
        for name, part_argv, limit, optional in plan_parts(args):
            if name in args.skip:
                report["skipped"].append(f"{name}: --skip")
                continue
            left = deadline - time.monotonic()
            if left < MIN_PART_S:
                report["skipped"].append(f"{name}: {left:.0f}s of the budget left")
                continue
            result, error = run_part(name, part_argv, work, min(limit, left))
            if error:
                report["errors"][name] = error
            elif name == "scoring":
                report["scoring"] = result
            else:
                report["profiles"][name] = result
                report["device_name"] = result["device_name"]
            summarize(report)
            (work / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    finally:  # partial results rather than nothing (also on Ctrl-C)
        report["wall_seconds"] = round(time.monotonic() - start, 1)
        summarize(report)
        (work / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2), flush=True)
    required = [name for name, _, _, optional in plan_parts(args) if not optional]
    return 0 if all(n in report["profiles"] or (n == "scoring" and report["scoring"]) for n in required) else 1


if __name__ == "__main__":
    sys.exit(main())
