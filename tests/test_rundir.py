"""The run folder's owner, unit-tested without a model: checkpoints, resume points, the lock, --overwrite."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from movierec.errors import UserError
from movierec.folders.rundir import RunDir, checkpoint_problems


def make_ckpt(out: Path, step: int, broken: str | None = None) -> Path:
    """A checkpoint whose files open like a trainer's; `broken` truncates or drops one of them."""
    from safetensors.torch import save_file

    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(4, 8)}, ckpt / "adapter_model.safetensors")
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16, "target_modules": ["q_proj"]}))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    torch.save({"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}, ckpt / "optimizer.pt")
    torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
    torch.save({"python": (3, (1, 2), None), "cpu": torch.get_rng_state()}, ckpt / "rng_state.pth")
    if broken:
        path = ckpt / broken
        if broken.endswith(".json"):
            path.write_text("{not json")
        else:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # a crash while saving
    return ckpt


def test_checkpoints_sort_numerically(tmp_path):
    for step in (800, 1000, 200):
        make_ckpt(tmp_path, step)
    assert [p.name for p in RunDir(tmp_path).checkpoints()] == ["checkpoint-200", "checkpoint-800", "checkpoint-1000"]


@pytest.mark.parametrize("broken", ["adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                    "trainer_state.json", "adapter_config.json"])
def test_a_checkpoint_counts_only_when_its_files_open(tmp_path, broken):
    assert checkpoint_problems(make_ckpt(tmp_path, 1)) == []
    problems = checkpoint_problems(make_ckpt(tmp_path, 2, broken=broken))
    assert len(problems) == 1 and broken in problems[0]


def test_missing_rng_state_is_incomplete(tmp_path):
    ckpt = make_ckpt(tmp_path, 5)
    (ckpt / "rng_state.pth").unlink()
    assert checkpoint_problems(ckpt) == ["missing rng_state.pth"]
    assert checkpoint_problems(ckpt, resumable=False) == []  # still scorable


def test_auto_resume_skips_incomplete_latest_with_warning(tmp_path):
    make_ckpt(tmp_path, 200)
    good = make_ckpt(tmp_path, 400)
    make_ckpt(tmp_path, 600, broken="adapter_model.safetensors")
    warnings = []
    assert RunDir(tmp_path).resume_point("auto", warn=warnings.append) == good
    assert len(warnings) == 1 and "checkpoint-600" in warnings[0] and "truncated" in warnings[0]


def test_named_resume_points(tmp_path):
    c2 = make_ckpt(tmp_path, 200)
    make_ckpt(tmp_path, 400, broken="optimizer.pt")
    run = RunDir(tmp_path)
    assert run.resume_point("checkpoint-200") == c2 and run.resume_point(str(c2)) == c2
    assert run.resume_point(None) is None
    with pytest.raises(UserError, match="incomplete .*optimizer.pt does not load"):
        run.resume_point("checkpoint-400")
    with pytest.raises(UserError, match="not found"):
        run.resume_point("checkpoint-999")
    with pytest.raises(UserError, match="no complete checkpoint"):
        RunDir(tmp_path / "empty").resume_point("auto")


def test_select_checkpoints(tmp_path):
    make_ckpt(tmp_path, 2)
    make_ckpt(tmp_path, 4, broken="adapter_model.safetensors")
    run = RunDir(tmp_path)
    assert [c.name for c in run.select("all")] == ["checkpoint-2"]  # the truncated one is never scored
    assert [c.name for c in run.select("latest")] == ["checkpoint-2"]
    with pytest.raises(UserError, match="checkpoint-4: adapter_model.safetensors is truncated"):
        run.select("checkpoint-4")
    with pytest.raises(UserError, match="expected latest, best, all or checkpoint-N"):
        run.select("newest")
    assert [c.name for c in run.select("best")] == ["checkpoint-2"]  # no best recorded: the latest usable one


def test_truncate_logs_keeps_each_step_once(tmp_path):
    run = RunDir(tmp_path)
    lines = [{"current_steps": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)] + [{"current_steps": 2, "eval_auc": 0.6}]
    (tmp_path / run.TRAINER_LOG).write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / run.STEP_TIMES).write_text("".join(json.dumps({"step": s, "seconds": 0.1}) + "\n" for s in (1, 2, 3, 4)))
    run.truncate_logs(2)
    assert [x["current_steps"] for x in run.read_jsonl(run.TRAINER_LOG)] == [1, 2, 2]
    assert [x["step"] for x in run.read_jsonl(run.STEP_TIMES)] == [1, 2]


def _record(folder: Path) -> None:
    (folder / RunDir.RESOLVED).write_text(yaml.safe_dump({"paths": {"output_dir": str(folder.resolve())}}))


def test_overwrite_deletes_only_a_run_folder_holding_nothing_else(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("precious")
    (notes / "checkpoint-1").mkdir()  # one marker does not make a run
    with pytest.raises(UserError, match="not a movierec run folder.*nothing was deleted"):
        RunDir(notes).clear()
    assert (notes / "thesis.tex").read_text() == "precious" and (notes / "checkpoint-1").is_dir()

    _record(notes)  # a run record naming the folder, but a file no run writes
    with pytest.raises(UserError, match="thesis.tex"):
        RunDir(notes).clear()
    assert (notes / "thesis.tex").exists()

    run = tmp_path / "run"
    make_ckpt(run, 3)
    _record(run)
    (run / "trainer_log.jsonl").write_text("{}\n")
    (run / "runs").mkdir()
    RunDir(run).clear()
    assert list(run.iterdir()) == []

    moved = tmp_path / "moved"
    run.rename(moved)
    (moved / RunDir.RESOLVED).write_text(yaml.safe_dump({"paths": {"output_dir": str(run)}}))
    with pytest.raises(UserError, match="not a movierec run folder"):
        RunDir(moved).clear()  # its record names another folder


def test_paths_expand_user_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNS", str(tmp_path / "r"))
    assert RunDir("~/x").path == tmp_path / "x"
    assert RunDir("$RUNS/y").path == tmp_path / "r" / "y"


def test_lock_refuses_a_second_owner_and_reclaims_a_dead_ones(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock("first"):
        owner = json.loads(run.file(run.LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(UserError, match=rf"in use by PID {os.getpid()} .*\(first\)"):
            with run.lock("second"):
                pass
    assert not run.file(run.LOCK).exists()  # released on exit

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.file(run.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    warnings = []
    with run.lock("third", warn=warnings.append):
        assert json.loads(run.file(run.LOCK).read_text())["command"] == "third"
    assert warnings and "gone" in warnings[0]

    run.file(run.LOCK).write_text(json.dumps({"pid": 1, "host": "another-host", "since": "x"}))
    with pytest.raises(UserError, match="another-host"):  # cannot tell whether it lives: refuse
        with run.lock("fourth"):
            pass
