#!/usr/bin/env bash
# Builds .whl/ with the wheels an offline GPU machine lacks to run movierec's training path
# (LLaMA-Factory sft + LoRA + 4-bit bitsandbytes + TensorBoard, movierec's scoring and bench code), and
# the benchmark's peer (unsloth) and Liger rows.
# Run it where PyPI is reachable; .whl/ then travels with the repo (<= 60 MB, checked here):
#
#   bash scripts/offline_wheels.sh                 # PYTHON=python3.12 to choose the pip that downloads
#
# and on the GPU machine (its own torch/CUDA stay; /tmp/site shadows its newer transformers & co.):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
#   HF_HUB_OFFLINE=1 PYTHON=python3 bash scripts/gpu_bench.sh
#
# The target machine: Python 3.12, x86_64 Linux, torch 2.11 built for CUDA 13.0 with its own
# torchaudio/torchvision (LLaMA-Factory imports torchaudio: it must be torch's own release), and
# numpy, pandas, pyarrow, scipy, scikit-learn, matplotlib, tensorboard, tqdm, pyyaml, safetensors,
# sentencepiece, tiktoken, einops, xxhash, aiohttp, requests, psutil, hf-xet ... but no
# bitsandbytes, llamafactory, datasets, trl; and transformers 5.17 / tokenizers 0.23 /
# huggingface-hub 1.x / accelerate 1.15, newer than llamafactory 0.9.5 accepts or was tested with.
#
# Idempotent: downloads are kept in build/offline-wheels/ (pip reuses a file already there) and
# .whl/ is rebuilt from them each run, so it holds exactly the wheels listed below, one version each.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
CACHE=build/offline-wheels
OUT=.whl
MAX_MB=60
BNB_KEEP=(libbitsandbytes_cuda130.so libbitsandbytes_cpu.so)  # torch 2.11's CUDA 13.0; CPU for checks here

# One version of each, the set movierec's tests run with (pyproject.toml pins the first six; a test
# checks that they agree). Why bring them rather than reuse the machine's newer ones:
# - llamafactory 0.9.5 refuses transformers > 5.6 (the machine has 5.17). transformers 4.57.1 is the
#   reference run's and the tested one; it requires huggingface-hub < 1.0 and tokenizers <= 0.23.0,
#   so it brings its own hub 0.36.2 and tokenizers 0.22.2 (the machine's 1.33 / 0.23.2 fail the
#   version check transformers makes at import). A transformers 5.x <= 5.6 could reuse those two
#   (~4 MB less) but is untested with movierec and differs from the reference run.
# - accelerate 1.11.0, peft 0.18.1: the machine's accelerate 1.15 passes llamafactory's runtime check
#   but not its declared requirement (<= 1.11), and its peft version is unknown; both are small.
# - trl, datasets: absent there. datasets 4.0.0 needs dill < 0.3.9, multiprocess < 0.70.17 and
#   fsspec <= 2025.3.0 (the machine's fsspec is newer); omegaconf: llamafactory's argument parser.
# Not brought, though llamafactory 0.9.5 declares them: gradio, fastapi, uvicorn, sse-starlette,
# pydantic (web UI / API), fire (its CLI; movierec calls run_exp), modelscope, hf-transfer (hub
# downloads), tyro, torchdata (its v1 code; accelerate imports torchdata only for a stateful
# dataloader), av (video inputs, imported only if present). A tiny 4-bit QLoRA run through
# `movierec bench` imports none of them.
WHEELS=(
    llamafactory==0.9.5
    transformers==4.57.1
    peft==0.18.1
    trl==0.24.0
    datasets==4.0.0
    accelerate==1.11.0
    bitsandbytes==0.50.2
    tokenizers==0.22.2
    huggingface-hub==0.36.2
    omegaconf==2.4.0
    dill==0.3.8
    multiprocess==0.70.16
    fsspec==2025.3.0
    # The peer and the Liger rows of gpu_bench.sh. unsloth and unsloth_zoo 2026.10.9 accept transformers
    # 4.57.1, torch < 2.15, trl 0.24 and bitsandbytes 0.50.2, but their metadata excludes datasets 4.0.*
    # (LLaMA-Factory's pin): installed with --no-deps, like every wheel here; they run offline on a local
    # model folder. liger-kernel: Triton kernels (triton comes with the machine's torch).
    unsloth==2026.10.9
    unsloth_zoo==2026.10.9
    liger-kernel==0.8.5
)

mkdir -p "$CACHE"
echo "downloading ${#WHEELS[@]} wheels into $CACHE/ (kept; reruns reuse them) ..." >&2
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$CACHE" "${WHEELS[@]}" \
    || { echo "error: pip download failed (PyPI reachable? see the lines above)" >&2; exit 1; }

# Rebuild .whl/ in a fresh folder, then swap it in: an interrupted run leaves the old one whole.
rm -rf "$OUT.tmp" && mkdir "$OUT.tmp"
"$PY" - "$CACHE" "$OUT.tmp" "${BNB_KEEP[*]}" "${WHEELS[@]}" <<'EOF'
"""Copy each pinned wheel from the cache; rewrite bitsandbytes without the native libraries not kept."""
import base64
import hashlib
import re
import shutil
import sys
import zipfile
from pathlib import Path

cache, out, keep, pins = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3].split()), sys.argv[4:]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find(name: str, version: str) -> Path:
    found = [p for p in cache.glob("*.whl")
             if norm(p.name.split("-")[0]) == norm(name) and p.name.split("-")[1] == version]
    if len(found) != 1:
        sys.exit(f"error: expected one {name}=={version} wheel in {cache}, found {[p.name for p in found]}")
    return found[0]


def slim(src: Path, dst: Path) -> None:
    """The same wheel less bitsandbytes/libbitsandbytes_*.so not in `keep`, with its RECORD redone."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        libs = {Path(i.filename).name for i in zin.infolist() if re.fullmatch(r"[^/]+/libbitsandbytes_\w+\.so", i.filename)}
        if not keep <= libs:
            sys.exit(f"error: {src.name} lacks {sorted(keep - libs)}")
        record_info, lines = None, []
        for info in zin.infolist():
            if info.filename.endswith(".dist-info/RECORD"):
                record_info = info
            elif Path(info.filename).name not in libs - keep:
                data = zin.read(info)
                info.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(info, data)  # same name, date and mode as upstream: reruns give the same bytes
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                lines.append(f"{info.filename},sha256={digest},{len(data)}")
        lines.append(f"{record_info.filename},,")
        record_info.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(record_info, "\n".join(lines) + "\n")


for pin in pins:
    name, version = pin.split("==")
    src = find(name, version)
    if norm(name) == "bitsandbytes":
        slim(src, out / src.name)
    else:
        shutil.copyfile(src, out / src.name)
EOF
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"

ls -l "$OUT"/*.whl | awk '{printf "%8.1f MB  %s\n", $5 / 1e6, $NF}' >&2
bytes=$(cat "$OUT"/*.whl | wc -c)
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
if [ "$bytes" -gt $((MAX_MB * 1000000)) ]; then
    echo "error: $OUT/ holds $mb MB, over the $MAX_MB MB limit" >&2
    exit 1
fi
echo "$OUT/: $(ls "$OUT"/*.whl | wc -l) wheels, $mb MB in all (limit $MAX_MB MB)"
