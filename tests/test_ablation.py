"""scripts/ablation.py without training: its argument checks, its table from finished variants and its one-line
refusals of damaged results (the trainings themselves are the commands other tests run)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "ablation.py"
AUC = {"auc": 0.7, "auc_ci95": [0.68, 0.72], "uauc": 0.6, "uauc_ci95": [0.57, 0.63]}
DIFF = {"comparison": {"auc": {"diff": 0.01, "diff_ci95": [-0.005, 0.02]}}}


def _ablation(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600)


def _finished(out, name="reference"):
    """A variant's files as a finished run leaves them (shapes as evaluate and baselines write them)."""
    run, data = out / "runs" / name, out / "data" / name
    for folder in (run, data, out / "variants"):
        folder.mkdir(parents=True, exist_ok=True)
    metrics = {"n": 4450, "metrics": {"overall": AUC}, "ranking": {"hr@10": 0.3, "ndcg@10": 0.15},
               "paired": {"baseline": "gbdt", **DIFF},
               "blend": {"weight": 0.8, "metrics": {"overall": AUC}, "paired": {"baseline": "gbdt", **DIFF},
                         "vs_parts": {"llm": DIFF, "mf": DIFF}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 1200}))
    (data / "baselines.json").write_text(json.dumps({"baselines": {"gbdt": {"overall": AUC}, "mf": {"overall": AUC}}}))
    (out / "variants" / f"{name}.json").write_text(json.dumps({"inputs": {}, "train_seconds": 660}))
    return run, data


def test_missing_or_absent_raw_is_one_line_before_any_work(tmp_path):
    done = _ablation("--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.startswith("error: --raw is required") and done.stderr.count("\n") == 1
    assert "data/raw/ml-100k.zip" in done.stderr and not (tmp_path / "out").exists()
    done = _ablation("--raw", str(tmp_path / "nope.zip"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.startswith(f"error: --raw {tmp_path / 'nope.zip'}: not found (")
    assert done.stderr.count("\n") == 1 and "downloads data/raw/ml-100k.zip" in done.stderr


def test_table_only_rebuilds_the_table_from_finished_variants(tmp_path):
    _finished(tmp_path)
    done = _ablation("--table-only", "--out", str(tmp_path), "--variants", "reference")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    assert "| LLM, reference | 0.700 [0.680, 0.720] | 0.600 [0.570, 0.630] | 0.300 | 0.150 |" in table
    assert "+0.010 [-0.005, +0.020] vs gbdt" in table and "| 1200 | 11.0 min |" in table
    assert "| llm+mf (w=0.8), reference |" in table and "| baseline: mf |" in table
    done = _ablation("--table-only", "--out", str(tmp_path), "--variants", "reference", "all")
    assert done.returncode == 2 and done.stderr.startswith("error: all: not finished") and done.stderr.count("\n") == 1


def test_table_only_without_variants_takes_the_finished_ones(tmp_path):
    done = _ablation("--table-only", "--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr.startswith(f"error: no finished variant in {tmp_path}")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "table.md").exists()
    _finished(tmp_path)
    _finished(tmp_path, "relevant-history")
    (tmp_path / "runs" / "all").mkdir(parents=True)  # started, never evaluated: left out
    done = _ablation("--table-only", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    assert "| LLM, reference |" in table and "| LLM, relevant history |" in table and "LLM, all" not in table


@pytest.mark.parametrize("where, content, message", [
    ("runs/reference/metrics.json", "[1, 2]", "not a JSON object"),
    ("runs/reference/metrics.json", "{}", "no n, metrics"),
    ("runs/reference/metrics.json", "{", "unreadable"),
    ("runs/reference/trainer_state.json", "[]", "not a JSON object"),
    ("data/reference/baselines.json", '{"data_manifest_sha256": "x"}', "no baselines"),
    ("variants/reference.json", "null", "not a JSON object"),
    # the right keys holding the wrong things: named by the file they came from
    ("runs/reference/metrics.json", '{"n": {}, "metrics": {}}', "not as movierec writes it"),
    ("runs/reference/metrics.json", '{"n": 5, "metrics": {"overall": [1]}}', "not as movierec writes it"),
    ("runs/reference/metrics.json", '{"n": 5, "metrics": {"overall": {"auc": "x"}}}', "not as movierec writes it"),
    ("runs/reference/metrics.json", '{"n": 5, "metrics": {}, "paired": {"a": 1}}', "not as movierec writes it"),
    ("runs/reference/metrics.json", '{"n": 5, "metrics": {}, "blend": {"weight": null}}', "not as movierec writes"),
    ("data/reference/baselines.json", '{"baselines": {"mf": {"overall": {"auc": 0.7, "auc_ci95": [1]}}}}',
     "not as movierec"),
    ("data/reference/baselines.json", '{"baselines": 5}', "not as movierec writes it"),
])
def test_damaged_results_are_one_line_and_nothing_is_rewritten(tmp_path, where, content, message):
    _finished(tmp_path)
    for name in ("table.md", "ablation.json"):  # an earlier run's: kept when this one stops
        (tmp_path / name).write_text("earlier")
    (tmp_path / where).write_text(content)
    done = _ablation("--table-only", "--out", str(tmp_path), "--variants", "reference")
    assert done.returncode == 2 and done.stderr.startswith(f"error: {tmp_path / where}: {message}")
    assert done.stderr.count("\n") == 1 and "rerun without --table-only" in done.stderr
    assert (tmp_path / "table.md").read_text() == (tmp_path / "ablation.json").read_text() == "earlier"


def _fake_model(tmp_path):
    """A folder holding only the model's config: enough for the dry-run check, which loads no weights."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((ROOT / "src/movierec/resources/models/qwen3-0.6b.json").read_text())
    return folder


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory):
    from movierec.cli import main

    raw = tmp_path_factory.mktemp("raw") / "ml"
    assert main(["synth", "--out", str(raw), "--users", "60", "--movies", "100", "--ratings", "2000", "--seed", "1"]) == 0
    return raw


def test_a_bad_data_config_is_one_line_and_nothing_is_written(tmp_path, synth_raw):
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_key: 1\n")
    done = _ablation("--raw", str(synth_raw), "--out", str(tmp_path / "out"), "--config", str(bad),
                     "--train-config", "configs/demo_tiny.yaml", "--model", str(_fake_model(tmp_path)))
    assert done.returncode == 2 and done.stderr == "error: bogus_key: unknown key\n", done.stderr
    assert not (tmp_path / "out").exists()


def test_running_some_variants_keeps_the_others_finished_on_the_same_inputs(tmp_path, synth_raw):
    """--variants X redoes nothing finished on the same input, configs, model and overrides, and its table keeps
    every such variant; one finished on other inputs is left out, and different step counts get a warning."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    out, model = tmp_path / "out", _fake_model(tmp_path)
    args = argparse.Namespace(raw=synth_raw.resolve(), config=ROOT / "configs/data/demo.yaml",
                              train_config=ROOT / "configs/demo_tiny.yaml", model=str(model), train_override=[])
    for name, slug, inputs in [("reference", "reference", True), ("relevant history", "relevant-history", True),
                               ("all", "all", False)]:
        _finished(out, slug)
        recorded = {"inputs": ablation.fingerprint(args, ablation.VARIANTS[name]) if inputs else {}, "train_seconds": 60}
        (out / "variants" / f"{slug}.json").write_text(json.dumps(recorded))
    (out / "runs" / "relevant-history" / "trainer_state.json").write_text(json.dumps({"global_step": 300}))
    done = _ablation("--raw", str(synth_raw), "--out", str(out), "--config", "configs/data/demo.yaml",
                     "--train-config", "configs/demo_tiny.yaml", "--model", str(model), "--variants", "reference")
    assert done.returncode == 0, done.stderr
    assert "prepare" not in done.stdout and "--overwrite" not in done.stdout  # nothing redone
    table = (out / "table.md").read_text()
    assert "| LLM, reference |" in table and "| LLM, relevant history |" in table and "LLM, all" not in table
    assert done.stderr.startswith("warning: the variants trained for different numbers of steps (300, 1200)")
