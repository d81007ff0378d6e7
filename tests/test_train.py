"""The training path for real: LLaMA-Factory 4-bit QLoRA runs of the tiny Qwen3 on CPU."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, unowned_files
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCRIPT = str(ROOT / "scripts" / "train_llamafactory.py")


def train(cwd: Path, model: Path, data: Path, out: Path, *extra: str):
    return run_cli(
        SCRIPT, "--config", "configs/demo_tiny.yaml", "--run-name", "t", "--device", "cpu",
        "--override", f"model_name_or_path={model}", "--override", f"dataset_dir={data}",
        "--override", f"output_dir={out}", "--override", "logging_steps=1",
        "--override", "save_steps=3", "--override", "eval_steps=3", "--override", "per_device_train_batch_size=4",
        *extra, cwd=cwd,
    )


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tiny_model, prepared_data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("run")
    out = cwd / "out"
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_run_writes_checkpoints_logs_tensorboard_and_provenance(first_run):
    out, proc = first_run
    assert "device: cpu" in proc.stdout
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (out / "checkpoint-6" / name).is_file(), name
    lines = log_lines(out)
    train_steps = [line["current_steps"] for line in lines if "loss" in line]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    assert all(line["total_steps"] == 6 for line in lines)
    assert [line["current_steps"] for line in lines if "eval_loss" in line] == [3, 6]
    aucs = [line for line in lines if "eval_auc" in line]
    assert [a["current_steps"] for a in aucs][:2] == [3, 6] and all(0 <= a["eval_auc"] <= 1 for a in aucs)

    acc = EventAccumulator(str(out / "runs" / "t"))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5, 6]
    assert losses[0].value == pytest.approx(lines[0]["loss"], rel=1e-3)
    assert [e.step for e in acc.Scalars("eval/auc")][:2] == [3, 6]

    import yaml

    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["config"]["max_steps"] == 6 and resolved["device"] == "cpu"
    assert resolved["versions"]["llamafactory"] == "0.9.5"
    assert "max_steps=6" in resolved["overrides"] and resolved["command"][0] == "train_llamafactory.py"
    lf = yaml.safe_load((out / "llamafactory_train.yaml").read_text())
    assert lf["bf16"] is False and lf["quantization_bit"] == 4 and lf["logging_dir"].endswith("runs/t")
    assert "eval_auc" not in lf  # movierec's own keys never reach LLaMA-Factory


def test_resume_continues_from_checkpoint_step(first_run, tiny_model, prepared_data, tmp_path):
    src, _ = first_run
    out = tmp_path / "out"
    import shutil

    shutil.copytree(src, out)
    before = len(log_lines(out))
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=9", "--resume", "checkpoint-6",
                 "--override", "eval_steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    # transformers restores the checkpoint's intervals; movierec says so and plans with them
    assert "keeps its schedule" in proc.stderr and "eval_steps 3 (config: 5)" in proc.stderr
    assert [line["current_steps"] for line in log_lines(out) if "eval_loss" in line][-1] == 9
    new = log_lines(out)[before:]
    steps = [line["current_steps"] for line in new if "loss" in line]
    assert steps == [7, 8, 9]  # continued, not restarted from step 1
    state = json.loads((out / "checkpoint-9" / "trainer_state.json").read_text())
    assert state["global_step"] == 9


def test_resuming_a_finished_run_changes_nothing(first_run, tiny_model, prepared_data):
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=6", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already complete (checkpoint-6 is step 6 of 6)" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_fresh_run_into_used_output_dir_is_refused(first_run, tiny_model, prepared_data):
    out, _ = first_run
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=6")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_overwrite_removes_stale_checkpoints(tiny_model, prepared_data, tmp_path):
    """A previous run's folder (its record names it) with a checkpoint LLaMA-Factory's auto-resume would pick."""
    out = tmp_path / "out"
    short = ("--override", "max_steps=2", "--override", "eval_strategy=no")
    assert train(ROOT, tiny_model, prepared_data, out, *short).returncode == 0
    stale = out / "checkpoint-999"
    (out / "checkpoint-2").rename(stale)
    proc = train(ROOT, tiny_model, prepared_data, out, *short, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not stale.exists()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]


def test_save_total_limit_keeps_the_best_checkpoint(tiny_model, prepared_data, tmp_path):
    """Only `save_total_limit` checkpoints stay, and the best one is never rotated away. Ranking by
    the *highest* eval loss makes an early checkpoint the best (loss falls), so survival shows."""
    out = tmp_path / "out"
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=8", "--override", "save_steps=2",
                 "--override", "eval_steps=2", "--override", "save_total_limit=2", "--override", "eval_auc=false",
                 "--override", "metric_for_best_model=eval_loss", "--override", "greater_is_better=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"]).name
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    assert len(kept) == 2 and "checkpoint-8" in kept and best in kept
    assert best != "checkpoint-6"  # an early checkpoint outlived newer ones


def test_quiet_console_and_train_log(first_run):
    """A header, one progress bar, a line per evaluation and a summary; library output in train.log."""
    out, proc = first_run
    console = proc.stdout + proc.stderr
    assert "[INFO" not in console and "Qwen3Config" not in console, console[-3000:]
    assert console.count("eval at step") >= 2 and "over the whole run" in proc.stdout
    assert len(proc.stdout.splitlines()) < 20, proc.stdout
    log = (out / "train.log").read_text()
    assert "llamafactory" in log and "INFO" in log  # what the console left out is kept


def test_resume_replaying_steps_keeps_each_step_once(first_run, tiny_model, prepared_data, tmp_path):
    """Resuming at checkpoint-3 of a 6-step run replays steps 4-6: logs hold each step once, and the
    whole run's loss is reported (transformers' train_results.json counts the last segment only)."""
    import shutil

    src, _ = first_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=6", "--resume", "checkpoint-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = log_lines(out)
    assert [line["current_steps"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5, 6]
    assert [line["current_steps"] for line in lines if "eval_loss" in line] == [3, 6]
    steps = [json.loads(x)["step"] for x in (out / "step_times.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    whole = sum(line["loss"] for line in lines if "loss" in line) / 6
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] == pytest.approx(whole, rel=1e-6)
    assert results["train_loss_last_segment"] != pytest.approx(whole)
    assert json.loads((out / "run_summary.json").read_text())["segments"] == 2
    assert (out / "resolved_config.before-checkpoint-3.yaml").is_file()
    assert unowned_files(out) == []  # every file of a resumed run is one a run writes


def test_resume_with_other_adapter_shapes_is_refused(first_run, tiny_model, prepared_data):
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=9", "--override", "lora_rank=8",
                 "--resume", "checkpoint-6")
    assert proc.returncode == 2
    assert "lora_rank 8 (the checkpoint's: 16)" in proc.stderr and "Traceback" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # the record untouched


def test_every_tracker_hears_the_scores_with_the_evaluations_step(tiny_model, prepared_data, tmp_path):
    """eval_auc / eval_uauc / eval_log_loss go through the Trainer's own log: any report_to integration's
    on_log receives them, at the evaluation's step (a recording callback stands in for W&B, MLflow, ...)."""
    import yaml
    from transformers import TrainerCallback

    from movierec.train.worker import run

    class Recorder(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen.append((state.global_step, dict(logs)))

    out = tmp_path / "out"
    proc = train(ROOT, tiny_model, prepared_data, out, "--override", "max_steps=1", "--override", "eval_strategy=no")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lf = yaml.safe_load((out / "llamafactory_train.yaml").read_text())
    lf.update(output_dir=str(tmp_path / "again"), max_steps=4, eval_strategy="steps", eval_steps=2, save_steps=4,
              logging_dir=str(tmp_path / "again" / "runs" / "t"))
    (tmp_path / "lf.yaml").write_text(yaml.safe_dump(lf))
    recorder = Recorder()
    run(tmp_path / "lf.yaml", out / "resolved_config.yaml", [recorder])
    evals = [(step, logs) for step, logs in recorder.seen if "eval_loss" in logs]
    assert [step for step, _ in evals] == [2, 4, 4]  # during training, and the final evaluation
    for _, logs in evals:
        assert {"eval_auc", "eval_uauc", "eval_log_loss"} <= set(logs) and 0 <= logs["eval_auc"] <= 1
