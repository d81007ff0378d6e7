"""Yes/No scoring: the scorer sees exactly the tokens training saw; evaluate writes honest metrics."""

import json

import numpy as np
import pytest
from data_helpers import read_jsonl
from sklearn.metrics import roc_auc_score

from movierec.cli import main
from movierec.evaluation.scoring import YesNoScorer, build_template

IGNORE_INDEX = -100


def test_prompt_tokens_equal_llamafactory_training_tokens(tiny_model, prepared_data, tmp_path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(tiny_model), "template": "qwen", "cutoff_len": 1024, "stage": "sft",
        "do_train": True, "finetuning_type": "lora", "dataset": "movielens_qwen3_train",
        "dataset_dir": str(prepared_data), "output_dir": str(tmp_path / "o"), "report_to": "none",
        "overwrite_cache": True, "preprocessing_num_workers": 1,
    })
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)["train_dataset"]

    records = read_jsonl(prepared_data / "movielens_qwen3_train.jsonl")
    scorer = YesNoScorer(None, tokenizer, build_template(tokenizer, "qwen", 1024), cutoff_len=1024)
    assert len(dataset) == len(records)
    for row, record in zip(dataset.select(range(40)), records[:40]):
        prompt_len = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
        assert scorer.encode(record) == row["input_ids"][:prompt_len]
        answer = row["input_ids"][prompt_len]
        assert answer == (scorer.yes_id if record["output"] == "Yes" else scorer.no_id)
    assert scorer.yes_id != scorer.no_id
    assert scorer.encode_many(records) == [scorer.encode(r) for r in records]  # the batched tokenization


def test_padding_does_not_change_scores(tiny_model, prepared_data):
    """Batched, left-padded scoring gives the same P(Yes) as one example at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    template = build_template(tokenizer, "qwen", 1024)
    records = read_jsonl(prepared_data / "movielens_qwen3_eval.jsonl")[:12]
    batched = YesNoScorer(model, tokenizer, template, batch_size=12).score(records)
    single = YesNoScorer(model, tokenizer, template, batch_size=1).score(records)
    assert len({len(YesNoScorer(model, tokenizer, template).encode(r)) for r in records}) > 1  # really padded
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert ((batched > 0) & (batched < 1)).all()


def test_evaluate_writes_metrics_matching_sklearn(demo_run, capsys):
    assert main(["evaluate", "--run", str(demo_run), "--checkpoint", "all", "--device", "cpu"]) == 0
    metrics = json.loads((demo_run / "metrics.json").read_text())
    preds = [json.loads(line) for line in (demo_run / "predictions.jsonl").read_text().splitlines()]
    labels = [p["label"] for p in preds]
    probs = [p["p_yes"] for p in preds]
    assert metrics["metrics"]["overall"]["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert metrics["n"] == len(preds) == 80
    assert set(metrics["per_checkpoint"]) == {"checkpoint-4", "checkpoint-8"}
    assert {"warm", "cold"} <= set(metrics["metrics"])
    for key in ("auc", "uauc", "log_loss", "accuracy", "f1", "positive_rate", "ece"):
        assert key in metrics["metrics"]["overall"]
    # the in-training callback scored the same checkpoint the same way (up to float rounding of the
    # merged layers, which may swap a near-tie: one swapped pair moves AUC by 1/(positives*negatives))
    logged = [json.loads(line) for line in (demo_run / "trainer_log.jsonl").read_text().splitlines()]
    at_8 = [line["eval_auc"] for line in logged if "eval_auc" in line and line["current_steps"] == 8]
    assert metrics["per_checkpoint"]["checkpoint-8"]["auc"] == pytest.approx(at_8[0], abs=2e-3)


def test_merged_scoring_equals_plain_4bit_forward(demo_run):
    """The fast path (shared-prefix cache, padding, merged dequantized layers) changes no score:
    compare with one plain forward per example through the 4-bit model with its LoRA adapter."""
    import torch
    import yaml

    from movierec.evaluation.scoring import eval_records, load_model_for_scoring
    from movierec.folders.datadir import DatasetDir

    lf_args = yaml.safe_load((demo_run / "llamafactory_train.yaml").read_text())
    records = eval_records(lf_args, DatasetDir(lf_args["dataset_dir"]))[:16]
    fast_model, tokenizer, template = load_model_for_scoring(lf_args, demo_run / "checkpoint-8", "cpu")
    plain_model, _, _ = load_model_for_scoring(lf_args, demo_run / "checkpoint-8", "cpu", merge=False)
    assert not any("Linear4bit" in type(m).__name__ for m in fast_model.modules())
    assert any("Linear4bit" in type(m).__name__ for m in plain_model.modules())
    scorer = YesNoScorer(fast_model, tokenizer, template, batch_size=6)
    fast = scorer.score(records)
    plain = []
    with torch.inference_mode():
        for record in records:
            logits = plain_model(input_ids=torch.tensor([scorer.encode(record)])).logits[0, -1]
            plain.append(torch.softmax(logits[[scorer.yes_id, scorer.no_id]], -1)[0].item())
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_evaluate_bad_inputs(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "llamafactory_train.yaml").write_text("output_dir: x\n")
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a movierec run" in err


def test_evaluate_ranks_the_prepared_lists_and_keeps_the_zero_shot_row(demo_run, tmp_path, capsys):
    import shutil

    from movierec.folders.datadir import DatasetDir

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)  # a copy: this test's evaluations must not change the shared run
    data = DatasetDir(yaml_paths(run)["dataset_dir"])
    # baselines first (beside the shared data, not in it): evaluate compares with them and blends with mf
    baselines = tmp_path / "b" / "baselines.json"
    assert main(["baselines", "--data", str(data.path), "--out", str(baselines), "--bootstrap", "100"]) == 0
    assert main(["evaluate", "--run", str(run), "--checkpoint", "latest,base", "--device", "cpu",
                 "--bootstrap", "200", "--baselines", str(baselines)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    check_comparisons(m, run, baselines)
    lists = [json.loads(line) for line in data.file(data.RANKING).read_text().splitlines()]
    assert m["checkpoint"] == "checkpoint-8" and m["zero_shot"]["checkpoint"] == "base"
    from conftest import unowned_files

    assert unowned_files(run) == []  # predictions_base.jsonl and friends are files a run writes
    ranking = m["ranking"]
    assert ranking["users"] == len({c["list_id"] for c in lists if c["relevant"]})
    assert 0 <= ranking["hr@10"] <= 1 and ranking["ndcg@10_ci95"] and ranking["mrr"] > 0
    assert m["metrics"]["overall"]["auc_ci95"][0] <= m["metrics"]["overall"]["auc"] <= m["metrics"]["overall"]["auc_ci95"][1]
    scored = [json.loads(line) for line in (run / "ranking_predictions.jsonl").read_text().splitlines()]
    assert [(s["list_id"], s["movie_id"]) for s in scored] == [(c["list_id"], c["movie_id"]) for c in lists]
    base_auc = m["zero_shot"]["metrics"]["overall"]["auc"]
    assert base_auc != m["metrics"]["overall"]["auc"]  # the adapter changes the scores
    # the report renders evaluate's numbers: zero-shot, the blend, baselines with their ranking rows, and the
    # paired comparisons on the same examples
    assert main(["report", "--run", str(run), "--baselines", str(baselines)]) == 0
    report = (run / "report.md").read_text()
    assert "LLM zero-shot (base model)" in report and "### LLM vs the Best Baseline" in report
    best = max(json.loads(baselines.read_text())["baselines"].items(), key=lambda kv: kv[1]["overall"]["auc"])[0]
    assert f"the fine-tuned LLM minus `{best}`" in report and f"the llm+mf blend minus `{best}`" in report
    assert f"| llm+mf blend (w = {m['blend']['weight']:.2f}) | overall |" in report
    assert f"{m['paired']['comparison']['auc']['diff']:+.4f}" in report.split("### LLM vs the Best Baseline")[1]
    ranking_table = report.split("### Ranking")[1].split("###")[0]
    assert "baseline: mf" in ranking_table and "LLM zero-shot" in ranking_table

    # evaluating a fine-tuned checkpoint later keeps the zero-shot results beside it; the comparisons belong to
    # the checkpoint scored with them (the data folder holds no baselines.json: none now)
    assert main(["evaluate", "--run", str(run), "--checkpoint", "checkpoint-4", "--device", "cpu",
                 "--bootstrap", "0"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["zero_shot"]["metrics"]["overall"]["auc"] == base_auc and m["checkpoint"] == "checkpoint-4"
    assert m["metrics"]["overall"]["auc_ci95"] is None and {"base", "checkpoint-4", "checkpoint-8"} <= set(
        m["per_checkpoint"])
    assert m["paired"] is None and m["blend"] is None

    # broken or foreign baselines files: one line, exit 2, or left out with the reason
    predictions = baselines.parent / "baselines_predictions.jsonl"
    good = predictions.read_text()
    predictions.write_text(good[: len(good) // 2])  # cut mid-line
    assert main(["evaluate", "--run", str(run), "--checkpoint", "checkpoint-4", "--device", "cpu", "--bootstrap", "0",
                 "--no-ranking", "--max-examples", "40", "--baselines", str(baselines)]) == 2
    predictions.write_text(good)
    record = json.loads(baselines.read_text())
    before = (run / "metrics.json").read_bytes()
    baselines.write_text(json.dumps({**record, "data_manifest_sha256": "0" * 64}))  # named, yet other data
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--checkpoint", "checkpoint-4", "--device", "cpu", "--bootstrap", "0",
                 "--no-ranking", "--max-examples", "40", "--baselines", str(baselines)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --baselines {baselines}: ") and "other prepared data" in err
    assert err.count("\n") == 1 and (run / "metrics.json").read_bytes() == before
    baselines.write_text(json.dumps({"baselines": {"gbdt": {}}}))
    assert main(["report", "--run", str(run), "--baselines", str(baselines)]) == 2
    for other in (12345, "0" * 64):  # a hand-edited hash too
        baselines.write_text(json.dumps({**record, "data_manifest_sha256": other}))
        capsys.readouterr()
        assert main(["report", "--run", str(run), "--baselines", str(baselines)]) == 0
        said = capsys.readouterr().out  # the console gives the report's reason, not "not found"
        assert "computed on other prepared data than the LLM's metrics" in said and "not found" not in said
    report = (run / "report.md").read_text()
    assert "was computed on other prepared data than the LLM's metrics" in report and "baseline: mf" not in report


def check_comparisons(m, run, baselines):
    """metrics.json's paired comparisons and blend equal a direct recomputation from the per-example files."""
    import pandas as pd

    from movierec.evaluation.blend import blend
    from movierec.evaluation.metrics import compute_metrics, paired_bootstrap

    both = pd.read_json(run / "predictions.jsonl", lines=True).merge(
        pd.read_json(baselines.parent / "baselines_predictions.jsonl", lines=True).drop(columns="label"),
        on=["user_id", "movie_id"])
    best = max(json.loads(baselines.read_text())["baselines"].items(), key=lambda kv: kv[1]["overall"]["auc"])[0]
    assert len(both) == m["n"] and m["paired"]["baseline"] == best == m["blend"]["paired"]["baseline"]
    y, users = both.label.to_numpy(), both.user_id.to_numpy()
    direct = paired_bootstrap(y, both.p_yes, both[best], users, n_boot=200, seed=0)
    assert close(m["paired"]["comparison"], direct)
    p = blend(both.p_yes, both.mf, m["blend"]["weight"])
    assert close(m["blend"]["paired"]["comparison"], paired_bootstrap(y, p, both[best], users, n_boot=200, seed=0))
    assert close(m["blend"]["metrics"], compute_metrics(y, p, users, both.warm, n_boot=200))
    b = m["blend"]
    assert b["name"] == "llm+mf" and 0 <= b["weight"] <= 1 and b["validation"]["n"] > 20
    assert b["validation"]["mf_auc"] > 0.6 and b["metrics"]["overall"]["auc"] > 0.6  # sane on the fixture data


def close(a, b) -> bool:
    """Equal JSON trees, numbers to 1e-9 (the files hold P(Yes) as float32 and float64 reprs)."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a))
    return a == b


def yaml_paths(run):
    import yaml

    return yaml.safe_load((run / "resolved_config.yaml").read_text())["paths"]


@pytest.mark.parametrize("args, message", [
    (["--ks", "1,5,1000"], "exceeds the shortest ranking list"),
    (["--ks", "0"], "--ks: cut-offs must be >= 1"),
    (["--checkpoint", "newest"], "expected latest, best, all, base or checkpoint-N"),
    (["--checkpoint", ","], "--checkpoint ',': an empty name"),
    (["--checkpoint", "best,"], "--checkpoint 'best,': an empty name"),
    (["--checkpoint", "checkpoint-999"], "--checkpoint checkpoint-999: not found"),
    (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
    (["--baselines", "no/such/baselines.json"], "--baselines no/such/baselines.json: not found"),
])
def test_evaluate_bad_arguments(demo_run, capsys, args, message):
    assert main(["evaluate", "--run", str(demo_run), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_stages_work_from_another_directory_and_after_moving_run_and_data_together(demo_run, tmp_path,
                                                                                   monkeypatch, capsys):
    import os
    import shutil

    import yaml

    paths = yaml_paths(demo_run)
    moved = tmp_path / "moved"
    rel = os.path.relpath(paths["dataset_dir"], demo_run)
    shutil.copytree(demo_run, moved / "r" / "run")
    shutil.copytree(paths["dataset_dir"], (moved / "r" / "run" / rel).resolve())
    record = moved / "r" / "run" / "resolved_config.yaml"
    resolved = yaml.safe_load(record.read_text())
    resolved["paths"]["dataset_dir"] = str(tmp_path / "gone")  # the original location no longer exists
    record.write_text(yaml.safe_dump(resolved))
    monkeypatch.chdir(tmp_path)  # nowhere near where training ran
    for argv in (["evaluate", "--run", "moved/r/run", "--device", "cpu", "--no-ranking", "--bootstrap", "0"],
                 ["report", "--run", "moved/r/run"],
                 ["recommend", "--run", "moved/r/run", "--user", str(_first_user(moved / "r" / "run" / rel)),
                  "--device", "cpu", "--top-k", "3"]):
        assert main(argv) == 0, capsys.readouterr().err
    assert "not found" not in (moved / "r" / "run" / "report.md").read_text().split("## Dataset")[1][:400]
    resolved["paths"]["dataset_dir_from_run"] = "../nowhere"
    record.write_text(yaml.safe_dump(resolved))
    assert main(["evaluate", "--run", "moved/r/run", "--device", "cpu"]) == 2
    assert "pass --data DIR" in capsys.readouterr().err


def _first_user(data) -> int:
    return json.loads((data / "movielens_qwen3_eval.jsonl").read_text().splitlines()[0])["user_id"]
