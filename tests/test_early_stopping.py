"""Early stopping (movierec's early_stopping_patience / early_stopping_threshold): real LLaMA-Factory runs of
the tiny model, and the config checks that refuse, before anything runs, a run that could not stop early."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from movierec.cli import main

SCRIPT = str(ROOT / "scripts" / "train_llamafactory.py")
REFERENCE = "configs/qwen3_movielens_qlora.yaml"


def train(model: Path, data: Path, out: Path, *overrides: str):
    """12 steps of 4 examples, an evaluation and a checkpoint every 2 steps."""
    args = [SCRIPT, "--config", "configs/demo_tiny.yaml", "--run-name", "t", "--device", "cpu"]
    for item in (f"model_name_or_path={model}", f"dataset_dir={data}", f"output_dir={out}", "max_steps=12",
                 "per_device_train_batch_size=4", "logging_steps=2", "eval_steps=2", "save_steps=2",
                 "save_total_limit=2", *overrides):
        args += ["--override", item]
    return run_cli(*args, cwd=ROOT)


def in_training_evals(out: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of each evaluation during training, from trainer_log.jsonl; LLaMA-Factory's final
    evaluation comes after them, at the last step again, and is left out."""
    seen: dict[int, float] = {}
    for line in (out / "trainer_log.jsonl").read_text().splitlines():
        row = json.loads(line)
        if key in row:
            seen.setdefault(row["current_steps"], row[key])
    return sorted(seen.items())


def expected_stop(evals: list[tuple[int, float]], patience: int, threshold: float, higher: bool) -> int | None:
    """The step transformers' EarlyStoppingCallback stops at, replayed on the logged values: it compares
    each evaluation with the best before it (the Trainer updates the best after the callback has run)."""
    best, count = None, 0
    for step, value in evals:
        better = best is None or (value > best if higher else value < best)
        count = 0 if best is None or (better and abs(value - best) > threshold) else count + 1
        if count >= patience:
            return step
        best = value if better else best
    return None


def test_a_metric_that_keeps_getting_worse_stops_after_patience_evaluations(tiny_model, prepared_data, tmp_path):
    """eval_loss ranked higher-is-better while the loss falls: every evaluation after the first is 'worse',
    so patience 2 stops the 12-step run at its third evaluation, step 6; the first stays the best checkpoint."""
    out = tmp_path / "out"
    proc = train(tiny_model, prepared_data, out, "eval_auc=false", "metric_for_best_model=eval_loss",
                 "greater_is_better=true", "early_stopping_patience=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = in_training_evals(out, "eval_loss")
    assert [step for step, _ in evals] == [2, 4, 6]
    assert evals[0][1] > evals[1][1] > evals[2][1], evals  # the premise: the loss fell
    state = json.loads((out / "trainer_state.json").read_text())
    assert (state["global_step"], state["max_steps"]) == (6, 12)
    steps = [json.loads(x)["step"] for x in (out / "step_times.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-6"]  # best + latest

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["early_stopping"] == {"metric": "eval_loss", "patience": 2, "threshold": 0.0, "stopped_at_step": 6,
                                         "max_steps": 12, "best_metric": evals[0][1], "best_step": 2}
    assert summary["best_checkpoint"] == "checkpoint-2"
    assert ("stopped early at step 6 of 12: eval_loss did not improve for 2 evaluations in a row; "
            f"best {evals[0][1]:.4f} at step 2") in proc.stdout
    lf = yaml.safe_load((out / "llamafactory_train.yaml").read_text())
    assert not {"early_stopping_patience", "early_stopping_threshold"} & set(lf)  # movierec's keys stay movierec's
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["movierec"]["early_stopping_patience"] == 2


def test_b_early_stopping_sees_eval_auc(tiny_model, prepared_data, tmp_path):
    """metric_for_best_model: eval_auc (movierec's score, joined to the evaluation's metrics through the
    Trainer's log): the callback finds it and stops where the logged AUCs say it must."""
    out = tmp_path / "out"
    patience, threshold = 1, 0.02
    proc = train(tiny_model, prepared_data, out, "metric_for_best_model=eval_auc", f"early_stopping_patience={patience}",
                 f"early_stopping_threshold={threshold}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "Using EarlyStoppingCallback" in log  # transformers' callback ran (its load_best_model_at_end note)
    assert "did not find" not in log and "not found in the evaluation metrics" not in log
    evals = in_training_evals(out, "eval_auc")
    stop = expected_stop(evals, patience, threshold, higher=True)
    assert stop is not None and stop < 12, f"these AUCs would not stop the run, so the test shows nothing: {evals}"
    assert evals[-1][0] == stop
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == stop
    assert f"stopped early at step {stop} of 12: eval_auc did not improve by more than 0.02 for 1 evaluation in a " \
           "row" in proc.stdout


@pytest.fixture
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def dry_run(capsys, *overrides: str) -> tuple[int, list[str]]:
    args = ["train", "--config", REFERENCE, "--dry-run", "--device", "cuda"]
    for item in overrides:
        args += ["--override", item]
    rc = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, [line for line in captured.err.splitlines() if line.startswith("error: ")]


@pytest.mark.usefixtures("_in_repo")
@pytest.mark.parametrize("overrides, expected", [
    (["early_stopping_patience=2", "metric_for_best_model=null"],
     "early_stopping_patience: needs metric_for_best_model, the metric it watches"),
    (["early_stopping_patience=2", "eval_strategy=no"],
     "early_stopping_patience: needs evaluations during training (eval_strategy: steps or epoch), got eval_strategy: no"),
    (["early_stopping_patience=0"], "early_stopping_patience: must be an integer >= 1 (evaluations) or null (off), got 0"),
    (["early_stopping_patience=1.5"], "early_stopping_patience: invalid value 1.5: expected int"),
    (["early_stopping_threshold=-0.01"], "early_stopping_threshold: must be >= 0, got -0.01"),
    (["metric_for_best_model=eval_auc", "greater_is_better=true", "eval_auc=false"],
     "metric_for_best_model: eval_auc is movierec's score, which eval_auc: false turns off"),
    (["metric_for_best_model=eval_uauc", "greater_is_better=true", "eval_dataset=null", "val_size=0.1"],
     "metric_for_best_model: eval_uauc is movierec's score of the eval_dataset examples, and this config has no "
     "eval_dataset"),
    (["metric_for_best_model=eval_auc"], "greater_is_better: false ranks eval_auc backwards (higher is better)"),
    (["early_stopping_steps=3"], "early_stopping_steps: LLaMA-Factory's early stopping"),
])
def test_c_each_config_problem_is_one_line(capsys, overrides, expected):
    rc, lines = dry_run(capsys, *overrides)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: " + expected), lines


@pytest.mark.usefixtures("_in_repo")
def test_c_all_at_once_and_valid_settings_pass(capsys):
    rc, lines = dry_run(capsys, "early_stopping_patience=0", "early_stopping_threshold=-1", "eval_auc=false",
                        "metric_for_best_model=log_loss")
    assert rc == 2 and [line.split(":")[1].strip() for line in lines] == [
        "early_stopping_patience", "early_stopping_threshold", "metric_for_best_model"], lines
    # the same keys, valid: eval_auc ranked higher-is-better (greater_is_better left to transformers' default)
    rc, lines = dry_run(capsys, "early_stopping_patience=3", "early_stopping_threshold=0.001",
                        "metric_for_best_model=eval_auc", "greater_is_better=null")
    assert (rc, lines) == (0, [])
