import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from movierec.cli import main
from movierec.report import _seconds, load_run, train_speed

FIXTURE = Path(__file__).parent / "fixtures" / "run_fixture"
RUN = "output/qwen3-movielens-qlora"
SECTIONS = ["## Model Configuration", "### Model Architecture Details", "## Training Method", "### LoRA Configuration",
            "## Dataset Configuration", "## Training Hyperparameters", "## Precision and Performance",
            "## Hardware and Distribution", "### Training Speed", "### Evaluation Speed", "### Time Estimates",
            "### Training Progress", "### Eval Loss History", "### Checkpoints", "## Recommendation Quality",
            "## Output Configuration", "## Command Used", "## Reproducibility"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the fixture laid out like the repo root (data/ + output/<run>/), as the working dir."""
    shutil.copytree(FIXTURE, tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    return tmp_path / "p"


def test_report_from_fixture(project):
    assert main(["report", "--run", RUN]) == 0
    text = (project / RUN / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    assert "| **Total Parameters** | 606,142,464 |" in text
    assert "| **Trainable Parameters** | 10,092,544 |" in text
    assert "| **Trainable Percentage** | 1.6650% |" in text
    assert "q_proj" in text and "| **Hidden Size**" not in text and "- **Hidden Size**: 1,024" in text
    assert "| Model | Users | N | AUC | UAUC | Log loss | Accuracy | F1 | ECE |" in text
    assert "| LLM (checkpoint-800) | overall | 200 |" in text and "| baseline: gbdt | cold | 40 |" in text
    assert "| **Initial Speed** | 1.05 it/s (step 1) |" in text
    assert "| **Progress** | 0.34% |" in text and "checkpoint-400 (eval_loss = 0.3735)" in text
    for name in ("train_loss", "eval_loss", "eval_auc", "calibration"):
        png = project / RUN / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in text
    assert "not available" not in text


def test_resumed_lines_latest_wins(project):
    run = load_run(RUN)
    # steps 610-650 were logged twice (crash, resume from checkpoint-600): one row each, the later values
    assert run["log"].index.is_unique and run["log"].index.max() == 800
    assert len(run["step_times"]) == 800
    assert run["log"]["eval_loss"].dropna().to_dict() == {200: 0.6124, 400: 0.3735, 600: 0.5317, 800: 0.4562}
    assert train_speed(run["step_times"], run["log"])["steps_timed"] == 800


def test_speed_falls_back_to_trainer_log_times():
    log = pd.DataFrame({"elapsed_time": ["0:00:10", "0:00:15", "0:00:20", "0:00:04"]},
                       index=pd.Index([10, 20, 30, 40], name="current_steps"))
    speed = train_speed(pd.DataFrame(), log)
    # intervals: 10 steps/10 s, 10/5, 10/5; the last line (clock restarted by a resume) is dropped
    assert speed["first"] == pytest.approx(1.0)
    assert speed["average"] == pytest.approx(30 / 20)
    assert speed["peak"] == pytest.approx(30 / 20)
    assert _seconds("1 day, 2:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4


def test_missing_optional_files_say_not_available(project):
    run_dir = project / RUN
    for name in ("trainer_log.jsonl", "step_times.jsonl", "metrics.json", "predictions.jsonl"):
        (run_dir / name).unlink()
    for ckpt in run_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt)
    shutil.rmtree(project / "data")
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    resolved["parameters"] = {"trainable": 10_092_544, "total": 606_142_464, "percent": 1.665044869715645}
    del resolved["hardware"]
    (run_dir / "resolved_config.yaml").write_text(yaml.safe_dump(resolved))
    assert main(["report", "--run", RUN]) == 0
    text = (run_dir / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    assert text.count("not available") >= 6
    assert "| **Total Parameters** | 606,142,464 |" in text
    assert not (run_dir / "plots").exists() or not any((run_dir / "plots").iterdir())


def test_bad_run_folders_exit_2(project, capsys):
    assert main(["report", "--run", "nope"]) == 2
    (project / "empty").mkdir()
    assert main(["report", "--run", "empty"]) == 2
    assert "resolved_config.yaml" in capsys.readouterr().err
    assert main(["report", "--run", RUN, "--baselines", "missing.json"]) == 2
