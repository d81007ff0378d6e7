#!/usr/bin/env bash
# CI: build movierec's wheel, install it (not editable) into a fresh venv and run it from an empty folder:
# `movierec --help`, the reference run's --dry-run and `prepare` of the demo data. Fails when the package
# needs the checkout (configs, model architectures, DeepSpeed presets must come from the wheel).
# The fresh venv borrows the dependencies of $DEPS (default .venv) through a .pth line appended after its
# own site-packages, so the wheel's movierec is the one imported; the script checks that it is.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS=${DEPS:-.venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$DEPS/bin/python" -m pip wheel -q --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/dist/movierec-*.whl
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$DEPS/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/zz_movierec_deps.pth"
mkdir "$work/empty" && cd "$work/empty"
bin="$work/venv/bin"
where=$("$bin/python" -c "import movierec; print(movierec.__file__)")
case "$where" in "$site"/*) ;; *) echo "check_wheel: movierec imported from $where, not the wheel" >&2; exit 1;; esac
"$bin/movierec" --help > /dev/null
HF_HUB_OFFLINE=1 "$bin/movierec" train --config configs/qwen3_movielens_qlora.yaml --dry-run --device cuda \
  --override per_device_train_batch_size=1 --override gradient_accumulation_steps=1 > dry_run.txt
grep -q "total optimizer steps 234,813" dry_run.txt
grep -q "trainable 10,092,544 || all 606,142,464" dry_run.txt
"$bin/movierec" prepare --config configs/data/demo.yaml > /dev/null
test -s data/demo/manifest.json
echo "check_wheel: the wheel runs from an empty folder (help, reference dry run, demo prepare)"
