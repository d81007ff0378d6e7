"""A run folder cannot be corrupted: every bad start ends with one line, exit code 2, nothing written.

Real `scripts/train_llamafactory.py` processes where the process matters (a file for output_dir, a model that
fails to load, variables from the environment); the checks that stop before any model loads run the same
command in this process (`refused`), which spares each case the seconds of importing LLaMA-Factory.
"""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import HANG_GUARD_S, ROOT, run_cli

SCRIPT = str(ROOT / "scripts" / "train_llamafactory.py")
SHORT = ("--override", "max_steps=2", "--override", "eval_strategy=no", "--override", "save_steps=2")


def train(model: Path, data: Path, out: str | Path, *extra: str, cwd: Path = ROOT, env: dict | None = None):
    args = [SCRIPT, "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu",
            "--override", f"model_name_or_path={model}", "--override", f"dataset_dir={data}",
            "--override", f"output_dir={out}", *extra]
    if env:
        return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD_S,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    return run_cli(*args, cwd=cwd)


def refused(model: Path, data: Path, out: str | Path, *extra: str) -> SimpleNamespace:
    """`train` with these arguments in this process: its exit code and what it printed on stderr."""
    from movierec.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["train", "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu",
                   "--override", f"model_name_or_path={model}", "--override", f"dataset_dir={data}",
                   "--override", f"output_dir={out}", *extra])
    return SimpleNamespace(returncode=rc, stderr=err.getvalue())


def one_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")]
    assert lines and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return "\n".join(lines)


RANGE_ERRORS = {
    "lora_rank=0": "lora_rank: must be an integer >= 1, got 0",
    "per_device_train_batch_size=0": "per_device_train_batch_size: must be >= 1, got 0",
    "num_train_epochs=-1": "num_train_epochs: must be > 0 (or set max_steps), got -1.0",
    "cutoff_len=-1": "cutoff_len: must be >= 1, got -1",
    "learning_rate=-1e-3": "learning_rate: must be > 0, got -0.001",
}
# LLaMA-Factory's own cross-field checks run before anything too (once movierec's checks pass)
CROSS_FIELD = ("finetuning_type=full", "llamafactory: Quantization is only compatible with the LoRA or OFT method")


@pytest.mark.parametrize("override, expected", [
    *RANGE_ERRORS.items(), CROSS_FIELD,
    ("num_train_epochs=.inf", "num_train_epochs: must be a finite number, got inf"),
    ("early_stopping_threshold=.nan", "early_stopping_threshold: must be a finite number, got nan"),
    ("metric_for_best_model=eval_foo", "metric_for_best_model: no evaluation logs eval_foo; one of eval_auc, "),
    (f"output_dir={ROOT / 'README.md' / 'run'}", "README.md is a file"),
])
def test_out_of_range_values_stop_the_dry_run(tiny_model, prepared_data, tmp_path, capsys, override, expected):
    from movierec.cli import main

    assert main(["train", "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu", "--dry-run",
                 "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}",
                 "--override", f"output_dir={tmp_path / 'out'}", "--override", override]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_out_of_range_values_stop_the_run_all_at_once(tiny_model, prepared_data, tmp_path):
    """Not a dry run: every range problem reported at once, one line each; then LLaMA-Factory's own check."""
    overrides = [x for o in RANGE_ERRORS for x in ("--override", o)]
    err = one_error(refused(tiny_model, prepared_data, tmp_path / "out", *overrides)).splitlines()
    assert sorted(line.removeprefix("error: ") for line in err) == sorted(RANGE_ERRORS.values())
    assert CROSS_FIELD[1] in one_error(refused(tiny_model, prepared_data, tmp_path / "out", "--override", CROSS_FIELD[0]))
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_file_stops_a_run(tiny_model, prepared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    (data / "movielens_qwen3_eval.jsonl").unlink()
    err = one_error(refused(tiny_model, data, tmp_path / "out"))
    assert "eval_dataset: 'movielens_qwen3_eval' names" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_edited_prepared_data_is_refused(tiny_model, prepared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    train_file = data / "movielens_qwen3_train.jsonl"
    train_file.write_text(train_file.read_text().replace('"output": "Yes"', '"output": "No"', 1))
    err = one_error(refused(tiny_model, data, tmp_path / "out", *SHORT))
    assert "movielens_qwen3_train.jsonl changed since `movierec prepare` wrote it" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", ".."])
def test_run_names_stay_inside_output_dir(tiny_model, prepared_data, tmp_path, name):
    assert "--run-name" in one_error(refused(tiny_model, prepared_data, tmp_path / "out", "--run-name", name))
    assert not (tmp_path / "out").exists()


def test_output_dir_naming_a_file(tiny_model, prepared_data, tmp_path):
    (tmp_path / "f").write_text("x")
    assert "is a file, not a folder" in one_error(train(tiny_model, prepared_data, tmp_path / "f", *SHORT))
    assert (tmp_path / "f").read_text() == "x"


def test_a_held_folder_refuses_another_process(tiny_model, prepared_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".movierec.lock").write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(),
                                                       "since": "now", "command": "train ..."}))
        for extra in ((), ("--overwrite",), ("--resume",)):
            err = one_error(refused(tiny_model, prepared_data, out, *SHORT, *extra))
            assert f"in use by PID {owner.pid}" in err or "no complete checkpoint" in err
        assert sorted(p.name for p in out.iterdir()) == [".movierec.lock"]
    finally:
        owner.kill()


def test_overwrite_never_deletes_what_movierec_did_not_write(tiny_model, prepared_data, tmp_path):
    out = tmp_path / "notes"
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "thesis.tex").write_text("precious")
    err = one_error(refused(tiny_model, prepared_data, out, *SHORT, "--overwrite"))
    assert "not a movierec run folder" in err and "nothing was deleted" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "thesis.tex"]


def test_a_run_failing_before_its_first_step_leaves_nothing(tiny_model, prepared_data, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    out = tmp_path / "out"
    for _ in range(2):  # the same command again: not refused as "not empty"
        err = one_error(train(broken, prepared_data, out, *SHORT))
        assert "failed before its first step" in err and "nothing was kept" in err
        assert not out.exists()


def test_tilde_and_variables_expand_once_for_every_file(tiny_model, prepared_data, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = train(tiny_model, prepared_data, "~/runs/$RUN", *SHORT, cwd=tmp_path, env={"HOME": str(home), "RUN": "r1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = home / "runs" / "r1"
    assert (run / "checkpoint-2").is_dir() and (run / "resolved_config.yaml").is_file()
    assert (run / "runs" / "r1").is_dir() and not (tmp_path / "~").exists()
