#!/usr/bin/env bash
# The prepared GPU check (< 8 minutes on one H100 or H200, offline): prints ONE JSON object with, for the
# reference profile (as the reference run: batch 1, accumulation 1, checkpointing, 4-bit), each fast
# profile and each lever row (bench_profiles.py LEVERS: the peer `use_unsloth: true`, CUDA graphs on bucketed
# static shapes, the answer-only LM head and the host-sync levers toggled, Liger's fused linear cross-entropy,
# Liger at batch 128, torch.compile with and without shape_buckets, neat packing): examples/s,
# real tokens/s, MFU, GPU-busy fraction (torch.profiler over 5 steps), step time p50/p90, peak GPU memory,
# first and last loss, evaluation rates, the dry run's step plan and the projected wall time of 3 epochs of
# 78,271 examples with the profile's evaluations; the ratios to the reference; the peer ratio (our best
# profile at the unsloth row's batch over the unsloth row); the time to score 4,450 eval examples as
# `movierec evaluate` does; the targets (>= 400 examples/s, GPU-busy >= 70%, MFU >= 20%, projected <= 12
# min, >= 1.2x unsloth, scoring <= 3 s). All on random weights of Qwen3-0.6B's architecture
# (movierec/resources/models/qwen3-0.6b.json) and generated token ids of real prompt lengths (data/manifest.json's
# example_lengths, else the shipped real ML-100K distribution, ~262 tokens per example); nothing is
# downloaded. A part that fails is reported under `errors` with its log's last line; the others still run.
#
#   bash scripts/gpu_bench.sh                       # from the repository root or anywhere
#   BUDGET_S=400 STEPS=40 bash scripts/gpu_bench.sh
#   DEVICE=cpu bash scripts/gpu_bench.sh            # the same script on CPU: tiny model, demo profiles (~5 min)
#
# Packages: if `llamafactory` is not importable, the wheels in .whl/ (llamafactory, transformers 4.57.1,
# bitsandbytes, datasets, trl, unsloth, unsloth_zoo, liger-kernel, ...; scripts/offline_wheels.sh) are
# installed into /tmp/site first with --no-deps, without network; movierec runs from src/. The unsloth and
# Liger rows run where their packages import, else they are listed under `not_measured`.
# Logs and each part's JSON: $WORK (default /tmp/movierec-gpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
PY=${PYTHON:-python3}
[ -n "${PYTHON:-}" ] || [ ! -x .venv/bin/python ] || PY=.venv/bin/python  # a development checkout's venv
WORK=${WORK:-/tmp/movierec-gpu-bench}
BUDGET_S=${BUDGET_S:-420}               # for everything but the last print; parts get what installing left
DEVICE=${DEVICE:-cuda}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# llamafactory pins (transformers/peft/trl/datasets/accelerate ranges) are checked at import; the versions
# found are in the JSON, and a random-weight benchmark should not stop on a pin the wheels' author chose
export DISABLE_VERSION_CHECK=${DISABLE_VERSION_CHECK:-1}
mkdir -p "$WORK"
rm -f "$WORK/result.json" "$WORK/bench.json"  # never print a previous run's results

fail() {  # still one JSON object on stdout
    "$PY" -c 'import json,sys; print(json.dumps({"error": sys.argv[1], "profiles": {}, "scoring": None}, indent=2))' "$1"
    exit 1
}

if ! "$PY" -c "import llamafactory" >/dev/null 2>&1; then
    ls .whl/*.whl >/dev/null 2>&1 || fail "llamafactory is not importable and there are no wheels in .whl/"
    echo "installing .whl/*.whl into /tmp/site ..." >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >"$WORK/pip.log" 2>&1 || fail "pip install of .whl/*.whl failed: $(tail -n 1 "$WORK/pip.log")"
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

# what the benchmark runs on, or the reason it cannot run
"$PY" - "$DEVICE" "$WORK/env.json" >"$WORK/env.log" 2>&1 <<'EOF' || fail "$(tail -n 1 "$WORK/env.log")"
import json, sys
from importlib.metadata import version, PackageNotFoundError
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA device is visible (DEVICE=cpu runs the CPU version)")
import llamafactory.train.tuner  # noqa: F401  (the training path imports; fails here on a missing package)
def v(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return None
name = torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else "cpu"
open(sys.argv[2], "w").write(json.dumps({"device_name": name, "python": sys.version.split()[0],
                  "cuda": torch.version.cuda, **{p: v(p) for p in ("torch", "llamafactory", "transformers", "peft",
                  "trl", "datasets", "accelerate", "bitsandbytes", "liger-kernel", "flash-attn", "unsloth", "unsloth_zoo")}}))  # stdout has library logs
EOF
cat "$WORK/env.json" >&2; echo >&2

if [ "$DEVICE" = cpu ]; then  # the tiny model's architecture and the demo profiles scaled to it
    [ -f "$WORK/tiny-qwen3/config.json" ] || "$PY" -m movierec make-tiny-model "$WORK/tiny-qwen3" >&2 \
        || fail "make-tiny-model failed"
    PROFILES=(--reference configs/demo_tiny.yaml --fast configs/demo_tiny_fast.yaml
              --fast configs/demo_tiny_lora_bf16_fast.yaml --override "model_name_or_path=$WORK/tiny-qwen3")
else
    PROFILES=(--reference configs/qwen3_movielens_qlora.yaml --fast configs/qwen3_movielens_qlora_fast.yaml
              --fast configs/qwen3_movielens_lora_bf16_fast.yaml)
fi
LEFT=$(( BUDGET_S - ($(date +%s) - T0) )); [ "$LEFT" -gt 60 ] || LEFT=60
timeout $(( LEFT + 30 )) "$PY" scripts/bench_profiles.py "${PROFILES[@]}" \
    --reference-steps "${REFERENCE_STEPS:-40}" --steps "${STEPS:-30}" --scoring --packing-variant --device "$DEVICE" \
    --budget-s "$LEFT" --part-limit-s "${PART_LIMIT_S:-150}" --work "$WORK" >"$WORK/result.json"
RC=$?
if [ -s "$WORK/result.json" ]; then
    "$PY" - "$WORK/result.json" "$WORK/env.json" "$T0" <<'EOF'
import json, sys, time
report = json.load(open(sys.argv[1]))
report["environment"] = json.load(open(sys.argv[2]))
report["script_seconds"] = round(time.time() - int(sys.argv[3]), 1)
print(json.dumps(report, indent=2))
EOF
elif [ -s "$WORK/bench.json" ]; then  # the driver was killed: its results so far
    cat "$WORK/bench.json"
else
    fail "benchmark driver exited with $RC before any result (see $WORK/*.log)"
fi
exit $RC
