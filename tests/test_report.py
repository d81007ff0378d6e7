import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from movierec.cli import main
from movierec.evaluation.report import load_run
from movierec.evaluation.report.markdown import NA
from movierec.evaluation.report.quality import metric_cell
from movierec.evaluation.report.stats import _seconds, train_speed
from movierec.train.plan import interval, train_plan

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
    assert "| LLM fine-tuned (checkpoint-800) | overall | 200 | 0.7639 | 0.7202 |" in text
    assert "| baseline: gbdt | cold | 40 |" in text
    assert "### Ranking" not in text and "confidence interval" not in text  # the fixture has neither
    assert "| **Estimated Total with Evaluations** | 201.4 h (1,175 evaluations: every 200 steps and the final one) |" in text
    assert "| **Initial Speed** | 1.05 it/s (step 1) |" in text
    assert "| **Progress** | 0.34% |" in text and "checkpoint-400 (eval_loss = 0.3735)" in text
    for name in ("train_loss", "eval_loss", "eval_auc", "auc_comparison", "calibration"):
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


def _edit_yaml(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if key == "config":
            data["config"].update(value)
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data))


def test_eval_interval_as_transformers_reads_it():
    def every(total: int, **cfg) -> int | None:
        return train_plan({"max_steps": total, **cfg}, 100).eval_every

    assert every(1000, eval_strategy="steps", eval_steps=200) == 200
    assert every(1000, eval_strategy="steps", eval_steps=0.25) == 250
    assert every(10, eval_strategy="steps", eval_steps=0.33) == 4  # ceil(3.3)
    assert every(10, eval_strategy="steps", eval_steps=0.001) == 1
    assert every(10, eval_strategy="steps", eval_steps=None, logging_steps=0.5) == 5
    assert every(10_000, eval_strategy="steps") == 500
    assert every(1000, eval_strategy="no", eval_steps=0.25) is None
    assert interval(0.1, 95, 500) == 10 and interval(10, 95, 500) == 10


def test_fractional_steps(project):
    """eval_steps / save_steps / logging_steps below 1 are fractions of the training steps (234,813 here)."""
    record = yaml.safe_load((project / RUN / "resolved_config.yaml").read_text())
    config = {**record["config"], "eval_steps": 0.25, "save_steps": 0.1, "logging_steps": 0.001}
    # the plan as train records it for this config
    _edit_yaml(project / RUN / "resolved_config.yaml", config=config, plan=train_plan(config, 78_271).to_dict())
    assert main(["report", "--run", RUN]) == 0
    text = (project / RUN / "report.md").read_text()
    assert "| **Evaluation Steps** | 0.25 (every 58,704 steps) |" in text  # ceil(0.25 * 234,813)
    assert "| **Save Steps** | 0.1 (every 23,482 steps) |" in text
    assert "| **Logging Steps** | 0.001 (every 235 steps) |" in text
    assert "(4 evaluations: every 58,704 steps and the final one)" in text  # 58,704, 117,408, 176,112, final


def test_relative_paths_resolve_against_the_training_folder(project, monkeypatch, capsys):
    resolved = project / RUN / "resolved_config.yaml"
    run = f"p/{RUN}"
    monkeypatch.chdir(project.parent)  # report runs elsewhere; data_manifest is data/manifest.json
    # no recorded working_directory: output_dir (output/qwen3-movielens-qlora) tells where training ran
    assert main(["report", "--run", run]) == 0
    text = (project / RUN / "report.md").read_text()
    assert "| baseline: gbdt | cold | 40 |" in text and "not available" not in text
    # the run folder moved (output_dir no longer matches) but the training folder was recorded
    _edit_yaml(resolved, working_directory=str(project), config={"output_dir": "elsewhere/run"})
    assert main(["report", "--run", run]) == 0
    assert "| baseline: gbdt | cold | 40 |" in (project / RUN / "report.md").read_text()
    # an absolute data_manifest needs neither
    _edit_yaml(resolved, working_directory=None, data_manifest=str(project / "data" / "manifest.json"))
    assert main(["report", "--run", run]) == 0
    assert "| baseline: gbdt | cold | 40 |" in (project / RUN / "report.md").read_text()
    # nothing to go by: the report (and the console) name the files not found, never drop them silently
    _edit_yaml(resolved, data_manifest="data/manifest.json")
    capsys.readouterr()
    assert main(["report", "--run", run]) == 0
    text = (project / RUN / "report.md").read_text()
    missing = project.parent / "data"
    assert f"{NA} ({missing / 'manifest.json'} not found)" in text
    assert f"Baselines {NA}: `{missing / 'baselines.json'}` not found" in text
    assert "baseline: gbdt" not in text
    assert f"{missing / 'baselines.json'} not found" in capsys.readouterr().out


def test_metric_cell_with_and_without_interval():
    assert metric_cell({"auc": 0.8, "auc_ci95": [0.78, 0.82]}, "auc") == "0.800 [0.78, 0.82]"
    assert metric_cell({"auc": 0.8, "auc_ci95": [0.7991, 0.8009]}, "auc") == "0.8000 [0.799, 0.801]"
    assert metric_cell({"auc": 0.8, "auc_ci95": None}, "auc") == "0.8000"
    assert metric_cell({"auc": 0.8}, "auc") == "0.8000" and metric_cell({"n": 1200}, "n") == "1,200"


@pytest.fixture
def project_with_intervals(project):
    """The fixture as metrics.json / baselines.json look with 95% intervals, ranking blocks and an oracle."""
    def add(blocks: dict, ranking: dict) -> None:
        for block in blocks.values():
            for key in ("auc", "uauc", "log_loss"):
                block[f"{key}_ci95"] = [round(block[key] - 0.05, 4), round(block[key] + 0.05, 4)]
        blocks["ranking"] = ranking

    metrics_path, base_path = project / RUN / "metrics.json", project / "data" / "baselines.json"
    metrics, base = json.loads(metrics_path.read_text()), json.loads(base_path.read_text())
    add(metrics["metrics"], {"hr@10": 0.41, "hr@10_ci95": [0.36, 0.46], "ndcg@10": 0.23, "mrr": 0.19})
    for i, blocks in enumerate(base["baselines"].values()):
        add(blocks, {"hr@10": 0.1 * i, "ndcg@10": 0.05 * i, "mrr": 0.04 * i})
    oracle = dict(base["baselines"]["gbdt"]["overall"], auc=0.9, auc_ci95=[0.87, 0.93])
    base["oracle"] = {"metrics": {"overall": oracle},
                      "ranking": {"hr@10": 0.6, "ndcg@10": 0.4, "mrr": 0.35}}
    metrics_path.write_text(json.dumps(metrics))
    base_path.write_text(json.dumps(base))
    return project


def test_quality_with_intervals_and_ranking(project_with_intervals):
    assert main(["report", "--run", RUN]) == 0
    text = (project_with_intervals / RUN / "report.md").read_text()
    assert "Brackets: 95% confidence interval." in text
    # auc 0.7639 [0.7139, 0.8139]; uauc 0.7202 [0.6702, 0.7702]; accuracy has no interval
    assert "| LLM fine-tuned (checkpoint-800) | overall | 200 | 0.764 [0.71, 0.81] | 0.720 [0.67, 0.77] | 0.567 [0.52, 0.62] " \
           "| 0.6950 |" in text
    assert "| oracle (true probabilities) | overall | 200 | 0.900 [0.87, 0.93] |" in text
    # the comparison plot draws each model's AUC with its interval
    from movierec.evaluation.report import load_run
    from movierec.evaluation.report.plots import auc_rows

    rows = {name: (auc, ci) for name, auc, ci in auc_rows(load_run(project_with_intervals / RUN))}
    auc, ci = rows["LLM fine-tuned (checkpoint-800)"]
    assert auc == pytest.approx(0.7639, abs=1e-4) and ci == [0.7139, 0.8139]
    assert rows["oracle (ceiling)"] == (0.9, [0.87, 0.93]) and "baseline: gbdt" in rows
    assert "![AUC with 95% intervals](plots/auc_comparison.png)" in text
    assert "### Ranking" in text and "| Model | hr@10 | ndcg@10 | mrr |" in text
    assert "| LLM fine-tuned (checkpoint-800) | 0.410 [0.36, 0.46] | 0.2300 | 0.1900 |" in text
    assert "| baseline: gbdt | 0.4000 | 0.2000 | 0.1600 |" in text
    assert "| oracle (true probabilities) | 0.6000 | 0.4000 | 0.3500 |" in text
    assert text.index("| baseline: constant | 0.0000") < text.index("| baseline: gbdt | 0.4000")
