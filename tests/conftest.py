"""Shared fixtures: everything offline, on CPU, built by the project itself."""

import os

# Before anything imports torch / transformers / datasets.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MPLBACKEND", "Agg")
# `make test` runs the files in 2 pytest-xdist workers: each gets its share of the cores (its subprocesses too), so
# their OpenMP threads never spin against each other's (which makes a training step 15-40x slower).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, _THREADS)

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from movierec.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen3")


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A small synthetic MovieLens set prepared exactly as the demo prepares it."""
    from movierec.cli import main

    root = tmp_path_factory.mktemp("data")
    raw, out = root / "raw", root / "prepared"
    assert main(["synth", "--out", str(raw), "--users", "200", "--movies", "300", "--ratings", "12000",
                 "--seed", "1"]) == 0
    assert main(["prepare", "--config", str(ROOT / "configs/data/demo.yaml"), "--input", str(raw),
                 "--out", str(out), "--override", "n_train=160", "--override", "n_eval=80"]) == 0
    return out


@pytest.fixture(scope="session")
def demo_run(tiny_model, prepared_data, tmp_path_factory) -> Path:
    """A real 8-step QLoRA run of the tiny model (checkpoints at 4 and 8, eval AUC at both)."""
    out = tmp_path_factory.mktemp("eval") / "run"
    proc = run_cli(str(ROOT / "scripts/train_llamafactory.py"), "--config", "configs/demo_tiny.yaml",
                   "--device", "cpu", "--override", f"model_name_or_path={tiny_model}",
                   "--override", f"dataset_dir={prepared_data}", "--override", f"output_dir={out}",
                   "--override", "max_steps=8", "--override", "save_steps=4", "--override", "eval_steps=4",
                   cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# A guard against a hung process, never a pass condition: every run is bounded by its steps. On a busy 2-core
# machine a step can take 15-40x its usual 0.2 s, so the guard leaves an hour (CI's own limit is 90 minutes).
HANG_GUARD_S = 3600


# The learning canaries' training (test_learning*.py): the demo's config for one epoch instead of three, no
# evaluation during training (evaluate scores the final checkpoint). About a minute per run on 2 CPU cores.
CANARY = ["--override", "num_train_epochs=1", "--override", "eval_strategy=no", "--override", "save_steps=1000"]


def run_cli(*args: str, cwd: Path, timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """Run `scripts/train_llamafactory.py`-style commands in a real subprocess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def ml100k_raw(tmp_path_factory) -> Path:
    """Real MovieLens-100K in its own layout (u.data + u.item), converted from the recbole wheel on PyPI
    (cached outside the repository, see tests/ml100k.py). Skips only when the registry cannot be reached."""
    from ml100k import cache_dir, fetch_wheel, write_ml100k

    return write_ml100k(tmp_path_factory.mktemp("ml100k") / "raw", fetch_wheel(cache_dir()))


@pytest.fixture(scope="session")
def ml100k_prepared(ml100k_raw, tmp_path_factory) -> Path:
    """ml100k_raw prepared with configs/data/movielens_100k.yaml (40,000 train / 4,450 eval examples).
    Shared by every test of the session: write beside it, not into it."""
    from movierec.cli import main

    out = tmp_path_factory.mktemp("ml100k") / "prepared"
    assert main(["prepare", "--config", str(ROOT / "configs/data/movielens_100k.yaml"), "--input", str(ml100k_raw),
                 "--out", str(out)]) == 0
    return out


def unowned_files(run: Path) -> list[str]:
    """Every file and folder under a run folder that RUN_PATTERNS does not name (what `--overwrite` would refuse
    to delete), listed one by one: each must be a file some command of the project writes."""
    from movierec.folders.ownership import owned
    from movierec.folders.rundir import RUN_PATTERNS

    paths = [p.relative_to(run).as_posix() + ("/" if p.is_dir() else "") for p in run.rglob("*")]
    assert paths, f"{run} is empty"
    return [p for p in paths if not owned(p, RUN_PATTERNS)]
