"""The learning canary: the tiny model, trained for real, ranks eval movies by what it was taught.

Trained on the true answers its eval AUC must clear 0.65; trained on inverted answers (Yes <-> No)
the same pipeline must rank backwards (AUC <= 0.35). Together they prove labels -> answer tokens ->
loss -> adapter -> scored Yes/No position end to end: a wrong answer token, label mapping, loss mask
or scored position leaves the AUC near 0.5 for both runs, or fails to invert it.
"""

import json
from pathlib import Path

import pytest
from conftest import CANARY, ROOT, run_cli

from movierec.cli import main


@pytest.fixture(scope="module")
def learning_data(tmp_path_factory) -> Path:
    """The demo's synthetic data (prepared with configs/data/demo.yaml), with its oracle."""
    root = tmp_path_factory.mktemp("learning")
    out = root / "data"
    # --override input: the config's own input, which prepare generates (a missing --input is an error)
    assert main(["prepare", "--config", str(ROOT / "configs/data/demo.yaml"), "--override", f"input={root / 'raw'}",
                 "--out", str(out)]) == 0
    return out


def _flipped(data: Path, dest: Path) -> Path:
    """A prepared folder like `data` whose training answers are inverted (the eval file keeps the true
    labels), written through the data folder's owner so that its manifest records the new bytes."""
    from movierec.folders.datadir import DatasetDir

    source = DatasetDir(data)
    manifest = source.manifest()
    files = {name: source.file(name).read_bytes() for name in manifest["files"] if name != source.DATASET_INFO}
    train = source.jsonl_name(source.TRAIN_NAME)
    rows = [json.loads(line) for line in files[train].decode("utf-8").splitlines()]
    for row in rows:
        row["output"] = {"Yes": "No", "No": "Yes"}[row["output"]]
    files[train] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    DatasetDir(dest).write_outputs(files, {k: v for k, v in manifest.items() if k != "files"})
    return dest


def _train_and_score(model: Path, data: Path, out: Path) -> tuple[list[float], float]:
    proc = run_cli(str(ROOT / "scripts/train_llamafactory.py"), "--config", "configs/demo_tiny.yaml",
                   "--device", "cpu", "--override", f"model_name_or_path={model}",
                   "--override", f"dataset_dir={data}", "--override", f"output_dir={out}", *CANARY, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["evaluate", "--run", str(out), "--checkpoint", "latest", "--device", "cpu", "--no-ranking"]) == 0
    losses = [line["loss"] for line in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines())
              if "loss" in line]
    return losses, json.loads((out / "metrics.json").read_text())["metrics"]["overall"]["auc"]


def test_true_labels_learn_and_flipped_labels_invert(tiny_model, learning_data, tmp_path):
    losses, auc = _train_and_score(tiny_model, learning_data, tmp_path / "true")
    assert losses[-1] < min(1.0, losses[0] / 2), losses  # the answer format and more is learnt
    assert auc >= 0.65, f"trained on the true answers, eval AUC {auc:.3f} < 0.65"

    flipped = _flipped(learning_data, tmp_path / "flipped-data")
    _, flipped_auc = _train_and_score(tiny_model, flipped, tmp_path / "flipped")
    assert flipped_auc <= 0.35, f"trained on inverted answers, eval AUC {flipped_auc:.3f} > 0.35"


def test_scorer_reads_the_first_label_token_of_llamafactorys_answers(tiny_model, learning_data, tmp_path):
    """The scored ids are what LLaMA-Factory trains the first answer position on, for both answers."""
    from data_helpers import read_jsonl
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(tiny_model), "template": "qwen", "cutoff_len": 1024, "stage": "sft",
        "do_train": True, "finetuning_type": "lora", "dataset": "movielens_qwen3_train", "max_samples": 200,
        "dataset_dir": str(learning_data), "output_dir": str(tmp_path / "o"), "report_to": "none",
        "overwrite_cache": True, "preprocessing_num_workers": 1,
    })
    module = load_tokenizer(model_args)
    tokenizer = module["tokenizer"]
    dataset = get_dataset(get_template_and_fix_tokenizer(tokenizer, data_args), model_args, data_args,
                          training_args, "sft", **module)["train_dataset"]
    scorer = YesNoScorer(None, tokenizer, build_template(tokenizer, "qwen", 1024))
    first_label = {}
    for row, record in zip(dataset, read_jsonl(learning_data / "movielens_qwen3_train.jsonl")):
        first = next(t for t in row["labels"] if t != -100)
        first_label.setdefault(record["output"], set()).add(first)
    assert first_label == {"Yes": {scorer.yes_id}, "No": {scorer.no_id}}
    assert tokenizer.decode([scorer.yes_id]) == "Yes" and tokenizer.decode([scorer.no_id]) == "No"
