"""Reliability defects found by probing `main` (issue 17, item 11): one test per kind, mostly in-process tests
of the folder owners; the few that need a trained run copy the session's demo_run."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_rundir import _record, make_ckpt

from movierec.errors import UserError
from movierec.folders.rundir import RunDir


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ run folders


@pytest.mark.parametrize("foreign", ["checkpoint-keep/notes.txt", "plots/my_figure.svg", "checkpoint-3/notes.txt",
                                     "runs/t/my.csv", "resolved_config.yaml.bak"])
def test_overwrite_deletes_nothing_a_run_did_not_write(tmp_path, foreign):
    """Names that merely look like a run's (checkpoint-*, plots/*, files inside checkpoint-N) are the user's."""
    run = tmp_path / "run"
    make_ckpt(run, 3)
    _record(run)
    (run / "plots").mkdir()
    (run / "plots" / "eval_auc.png").write_bytes(b"png")
    (run / foreign).parent.mkdir(parents=True, exist_ok=True)
    (run / foreign).write_text("precious")
    before = _tree(run)
    with pytest.raises(UserError, match="not a movierec run folder.*nothing was deleted") as e:
        RunDir(run).clear()
    assert foreign.split("/")[0] in str(e.value) and _tree(run) == before
    (run / foreign).unlink()
    if foreign.startswith("checkpoint-keep"):
        (run / "checkpoint-keep").rmdir()
    RunDir(run).clear()
    assert list(run.iterdir()) == []


def _take_stale_lock(folder: str, barrier, wins) -> None:
    barrier.wait()
    try:
        # a slow warning widens the window between finding the stale lock and replacing it
        with RunDir(folder).lock("race", warn=lambda *a, **k: time.sleep(0.05)):
            wins.put(os.getpid())
            barrier.wait()  # hold it until every contender has tried
            return
    except UserError:
        pass
    barrier.wait()


def test_taking_over_a_stale_lock_has_one_winner(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    context = multiprocessing.get_context("fork")
    for trial in range(4):
        folder = tmp_path / f"run{trial}"
        folder.mkdir()
        (folder / RunDir.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
        barrier, wins = context.Barrier(6), context.Queue()
        procs = [context.Process(target=_take_stale_lock, args=(str(folder), barrier, wins)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        winners = [wins.get(timeout=5) for _ in range(wins.qsize())] if not wins.empty() else []
        assert len(winners) == 1, f"trial {trial}: {len(winners)} processes hold the folder"


def test_a_crafted_safetensors_header_is_a_problem_not_a_traceback(tmp_path):
    from movierec.folders.rundir import checkpoint_problems

    for i, header in enumerate((b"[1, 2]", b'{"w": {"dtype": "F32"}}', b'{"w": 3}', b'{"w": {"data_offsets": "x"}}')):
        ckpt = make_ckpt(tmp_path / str(i), 1)
        (ckpt / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
        assert checkpoint_problems(ckpt, resumable=False) == ["adapter_model.safetensors has no readable header"]


def test_check_adapter_refuses_any_changed_adapter_setting(tmp_path):
    from movierec.train.session import check_adapter

    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 64, "lora_dropout": 0.05,
                                                          "use_rslora": False, "use_dora": False}))
    same = {"lora_rank": 16, "lora_alpha": 64, "lora_dropout": 0.05}
    check_adapter(ckpt, same)
    for key, value, said in (("lora_alpha", 32, "lora_alpha 32 (the checkpoint's: 64)"),
                             ("lora_alpha", None, "lora_alpha 32 (the checkpoint's: 64)"),  # default: 2 x rank
                             ("lora_dropout", 0.1, "lora_dropout 0.1 (the checkpoint's: 0.05)"),
                             ("use_rslora", True, "use_rslora True (the checkpoint's: False)")):
        with pytest.raises(UserError, match=rf"other settings: {said.replace('(', '[(]').replace(')', '[)]')}"):
            check_adapter(ckpt, {**same, key: value})
