"""The multi-process path: torchrun with 2 CPU processes (gloo), as on several GPUs."""

import json

import yaml
from conftest import HANG_GUARD_S, ROOT, run_cli, unowned_files

SCRIPT = str(ROOT / "scripts" / "train_llamafactory.py")


def test_two_process_run_and_resume(tiny_model, prepared_data, tmp_path):
    out = tmp_path / "ddp"
    common = ["--config", "configs/demo_tiny.yaml", "--device", "cpu", "--run-name", "ddp",
              "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}",
              "--override", f"output_dir={out}", "--override", "save_steps=2", "--override", "eval_steps=2",
              "--override", "logging_steps=1", "--override", "per_device_train_batch_size=4",
              "--nproc-per-node", "2", "--master-port", "29533"]
    proc = run_cli(SCRIPT, *common, "--override", "max_steps=4", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--nproc_per_node 2" in proc.stdout
    assert "world size: 2" in (out / "train.log").read_text()  # LLaMA-Factory's log, off the console
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    ckpt = out / "checkpoint-4"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()  # one per rank
    assert len(list(ckpt.glob("adapter_model*"))) == 1  # written once, by rank 0
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["hardware"]["world_size"] == 2
    assert json.loads((ckpt / "trainer_state.json").read_text())["train_batch_size"] == 4

    proc = run_cli(SCRIPT, *common, "--override", "max_steps=6", "--resume", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [line["current_steps"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5, 6]  # one log, appended
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    assert (out / "train.rank1.log").is_file() and unowned_files(out) == []  # each file one a run writes


def test_two_nodes_on_one_machine_share_one_output_dir(tiny_model, prepared_data, tmp_path):
    """--nnodes 2: each node runs its own launcher; only node 0 guards and writes output_dir."""
    import os
    import subprocess
    import sys

    out = tmp_path / "nodes"
    common = [sys.executable, SCRIPT, "--config", "configs/demo_tiny.yaml", "--device", "cpu",
              "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}",
              "--override", f"output_dir={out}", "--override", "max_steps=2", "--override", "save_steps=2",
              "--override", "eval_strategy=no", "--override", "logging_steps=1",
              "--override", "per_device_train_batch_size=4", "--nnodes", "2", "--nproc-per-node", "1",
              "--master-port", "29577"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    nodes = [subprocess.Popen([*common, "--node-rank", str(rank)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [node.communicate(timeout=HANG_GUARD_S)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "world size: 2" in (out / "train.log").read_text()
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [line["current_steps"] for line in lines if "loss" in line] == [1, 2]
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not list(out.glob("resolved_config.before-*"))
