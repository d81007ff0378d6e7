"""`movierec export` on a real tiny QLoRA run: the merged folder loads with plain transformers and scores
like the adapter; its model card's snippet runs as written; bad input exits 2 and writes nothing."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG_GUARD_S

from movierec.cli import main

# The merge into fp32 weights changes the arithmetic, not the function: measured max |dP(Yes)| 5.6e-8.
MERGE_TOL = 1e-5


@pytest.fixture(scope="module")
def run(demo_run, tmp_path_factory):
    """A copy of the shared demo run (this module writes metrics.json into it), evaluated at checkpoint-8."""
    copy = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(demo_run, copy)
    assert main(["evaluate", "--run", str(copy), "--checkpoint", "checkpoint-8", "--device", "cpu"]) == 0
    return copy


@pytest.fixture(scope="module")
def exported(run):
    out = run.parent / "exported"
    assert export(run, out, "--checkpoint", "checkpoint-8") == 0
    return out


def export(run, out, *args):
    return main(["export", "--run", str(run), "--out", str(out), "--device", "cpu", *args])


def eval_records(run):
    from movierec.evaluation.scoring import eval_records
    from movierec.folders.rundir import RunDir

    return eval_records(RunDir(run).lf_args(), RunDir(run).dataset())


def scores(model, tokenizer, records):
    """P(Yes) through movierec's scorer, with the template training used."""
    from movierec.evaluation.scoring import YesNoScorer, build_template

    return YesNoScorer(model, tokenizer, build_template(tokenizer, "qwen", 1024), 1024, 16).score(records)


def test_export_is_a_plain_model_that_scores_like_the_adapter(run, exported):
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template
    from movierec.folders.rundir import RunDir

    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "movierec_export.json"} <= names
    assert not {"adapter_config.json", "adapter_model.safetensors"} & names
    from movierec.folders.io import current_umask

    for path in exported.iterdir():  # readable as the umask allows (safetensors alone writes 0600)
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~current_umask(), path
    config = json.loads((exported / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    with safe_open(exported / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "lora" in k or "base_layer" in k]

    records = eval_records(run)
    base_path = RunDir(run).model_path()
    # the tokenizer training used: the scorer's tokens and answer ids, eos and pad as LLaMA-Factory set them
    tokenizer, reference = AutoTokenizer.from_pretrained(exported), AutoTokenizer.from_pretrained(base_path)
    mine = YesNoScorer(None, tokenizer, build_template(tokenizer, "qwen", 1024), 1024)
    theirs = YesNoScorer(None, reference, build_template(reference, "qwen", 1024), 1024)
    assert mine.encode_many(records) == theirs.encode_many(records)
    assert (mine.yes_id, mine.no_id) == (theirs.yes_id, theirs.no_id)
    trained = AutoTokenizer.from_pretrained(run / "checkpoint-8")
    assert (tokenizer.eos_token, tokenizer.pad_token) == (trained.eos_token, trained.pad_token) == ("<|im_end|>", "<|endoftext|>")

    merged = scores(AutoModelForCausalLM.from_pretrained(exported), tokenizer, records)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base_only = scores(base, reference, records)
    unmerged = scores(PeftModel.from_pretrained(base, str(run / "checkpoint-8")), reference, records)
    # evaluate's 4-bit model with the adapter (load_model_for_scoring), as it wrote predictions.jsonl
    predictions = {(p["user_id"], p["movie_id"]): p["p_yes"]
                   for p in map(json.loads, (run / "predictions.jsonl").read_text().splitlines())}
    four_bit = np.array([predictions[r["user_id"], r["movie_id"]] for r in records])
    diff_fp32, diff_4bit = np.abs(merged - unmerged), np.abs(merged - four_bit)
    print(f"\nmerged vs unmerged fp32 adapter: max {diff_fp32.max():.2e}; merged vs 4-bit adapter (evaluate): "
          f"max {diff_4bit.max():.2e}, mean {diff_4bit.mean():.2e} over {len(records)} eval examples")
    assert np.abs(base_only - unmerged).max() > 1000 * MERGE_TOL  # the adapter matters: the check below has teeth
    np.testing.assert_allclose(merged, unmerged, atol=MERGE_TOL)
    # Loose on purpose: the adapter was trained against nf4-rounded base weights and is now merged into the
    # exact ones, a real (small) change of the model, not float noise; measured max 3.3e-3, mean 6e-4.
    assert diff_4bit.max() < 0.05 and diff_4bit.mean() < 0.01


def test_model_card_snippet_runs_with_transformers_alone(run, exported):
    """The card's Python block, run as written in a fresh interpreter, gives the adapter's P(Yes);
    peft, movierec, llamafactory and bitsandbytes are never imported."""
    card = (exported / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    records = eval_records(run)
    program = (f"import json, sys\n{snippet}\n"
               f"probs = [p_yes(r['input']) for r in {[{'input': r['input']} for r in records]!r}]\n"
               "banned = [m for m in ('peft', 'movierec', 'llamafactory', 'bitsandbytes') if m in sys.modules]\n"
               "print(json.dumps({'p_yes': probs, 'imported': banned}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", program], cwd=run.parent, env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected = scores(AutoModelForCausalLM.from_pretrained(exported), AutoTokenizer.from_pretrained(exported), records)
    np.testing.assert_allclose(result["p_yes"], expected, atol=MERGE_TOL)


def test_model_card_and_record(run, exported):
    record = json.loads((exported / "movierec_export.json").read_text())
    assert record["format"] == "movierec-export" and record["checkpoint"] == "checkpoint-8" and record["step"] == 8
    assert record["run"] == str(run) and record["dtype"] == "float32" and record["versions"]["peft"]
    card = (exported / "README.md").read_text()
    for heading in ("Base model", "Method", "Data", "Training", "Checkpoint", "Evaluation", "Prompt and scoring"):
        assert f"\n## {heading}\n" in card
    assert "r=16, alpha=64, dropout=0.05" in card and "4-bit nf4" in card
    epoch = json.loads((run / "checkpoint-8" / "trainer_state.json").read_text())["epoch"]
    assert f"| trained when exported (checkpoint-8) | step 8, epoch {epoch:.3g} |" in card
    assert "160 training examples" in card and "80 eval examples" in card and "rating >= 4.0" in card
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]["overall"]
    low, high = metrics["auc_ci95"]
    assert f"| overall | 80 | {metrics['auc']:.4f} [{low:.4f}, {high:.4f}] |" in card
    assert "You are Qwen" in card and "<|im_start|>assistant" in card  # the training prompt, system included


def test_replacing_an_export_and_an_interrupted_one(run, exported, monkeypatch):
    """An earlier export is replaced whole; an export interrupted before its end leaves the old one intact."""
    import movierec.models.export

    out = run.parent / "again"
    shutil.copytree(exported, out)
    (out / "stray.txt").write_text("from the earlier export")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(movierec.models.export, "model_card", interrupted)
    assert export(run, out, "--checkpoint", "checkpoint-4") == 130
    assert (out / "stray.txt").is_file() and json.loads((out / "movierec_export.json").read_text())["step"] == 8
    assert not [p.name for p in run.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()

    assert export(run, out, "--checkpoint", "checkpoint-4") == 0
    assert not (out / "stray.txt").exists() and json.loads((out / "movierec_export.json").read_text())["step"] == 4
    assert not [p.name for p in run.parent.iterdir() if p.name.endswith(".tmp")]


def tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.mark.parametrize("case, message", [
    ("unknown checkpoint", "--checkpoint checkpoint-99: not found"),
    ("all checkpoints", "export takes one checkpoint"),
    ("out is a file", "is a file"),
    ("out holds other files", "not a movierec export"),
    ("out is the run", "inside the run folder"),
    ("out inside the run", "inside the run folder"),
    ("out holds the run", "holds the run folder"),
    ("not a run", "is not a movierec run"),
])
def test_bad_input_exits_2_and_writes_nothing(run, tmp_path, capsys, case, message):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    args = {
        "unknown checkpoint": (run, tmp_path / "out", "--checkpoint", "checkpoint-99"),
        "all checkpoints": (run, tmp_path / "out", "--checkpoint", "all"),
        "out is a file": (run, tmp_path / "file"),
        "out holds other files": (run, other),
        "out is the run": (run, run),
        "out inside the run": (run, run / "exported"),
        "out holds the run": (run, run.parent),
        "not a run": (other, tmp_path / "out"),
    }[case]
    before, run_before = tree(tmp_path), tree(run)
    assert export(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and message in err, err
    assert tree(tmp_path) == before and tree(run) == run_before
