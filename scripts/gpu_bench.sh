#!/usr/bin/env bash
# Training throughput of the reference and the fast profile on one CUDA GPU, back to back, and their ratio:
#
#   bash scripts/gpu_bench.sh                  # ~3 min on an H100, well under 8
#   STEPS=40 REFERENCE_STEPS=80 bash scripts/gpu_bench.sh
#
# Both run Qwen3-0.6B's architecture (configs/models/qwen3-0.6b.json) with random weights on generated
# examples of the prepared data's lengths (~200 tokens without data/manifest.json), through the same
# LLaMA-Factory path as `movierec train`: the reference profile at the reference run's batch 1 /
# accumulation 1 with checkpointing, the fast profile as configured. Nothing is downloaded (offline).
#
# Installs nothing. Python: $PYTHON, else the project's .venv, else python3 with the project's pinned
# packages importable (pyproject.toml). Where a machine's own packages are newer than llamafactory
# 0.9.5 accepts (transformers <=5.6 and !=4.57.0, peft 0.18.x, trl <=0.24, datasets <=4.0,
# accelerate <=1.11, torchdata <=0.11; transformers 4.57.1 adds huggingface-hub <1.0, tokenizers
# 0.22.x), make a venv that keeps the machine's torch/CUDA and add only the wheels it lacks, downloaded
# elsewhere when the machine is offline; torchaudio and torchvision must be torch's own release
# (LLaMA-Factory imports torchaudio), e.g. 2.9.1 / 0.24.1 for torch 2.9.1:
#   python3 -m venv --system-site-packages .venv
#   .venv/bin/pip install --no-index --find-links WHEELS/ llamafactory==0.9.5 transformers==4.57.1 \
#       peft==0.18.1 trl==0.24.0 datasets==4.0.0 accelerate==1.11.0 "huggingface-hub<1.0" \
#       "tokenizers>=0.22,<0.23" "torchdata<=0.11" torchaudio==<torch's release>
# (plus whichever of llamafactory's other requirements the machine lacks; movierec itself needs no
# install: scripts/bench_profiles.py runs it from src/).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
STEPS=${STEPS:-30}                      # fast profile: 32 examples per step
REFERENCE_STEPS=${REFERENCE_STEPS:-60}  # reference profile: 1 example per step, fast steps
LOG=${LOG:-output/gpu_bench.log}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$(dirname "$LOG")"

"$PY" - <<'EOF'
import sys
from importlib.metadata import version
try:
    import torch, llamafactory  # noqa: F401
except ImportError as e:
    sys.exit(f"error: {e} (see the top of scripts/gpu_bench.sh for the packages needed)")
if not torch.cuda.is_available():
    sys.exit("error: no CUDA device is visible")
print(torch.cuda.get_device_name(0), "| " + ", ".join(
    f"{p} {version(p)}" for p in ("torch", "llamafactory", "transformers", "peft", "bitsandbytes")), file=sys.stderr)
EOF

echo "benchmarking (log: $LOG) ..." >&2
timeout 450 "$PY" scripts/bench_profiles.py \
    --reference configs/qwen3_movielens_qlora.yaml --reference-steps "$REFERENCE_STEPS" \
    --fast configs/qwen3_movielens_qlora_fast.yaml --steps "$STEPS" --device cuda 2>"$LOG" \
    || { echo "error: benchmark failed or ran past 7.5 minutes; the end of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
