"""Config validation: every bad input ends with one line per problem and exit code 2."""

import re

import pytest
import yaml
from conftest import ROOT

from movierec.cli import main

REFERENCE = "configs/qwen3_movielens_qlora.yaml"


def train(*args):
    return main(["train", "--config", REFERENCE, "--dry-run", "--device", "cuda", *args])


def errors(capsys) -> list[str]:
    """The error lines (a dry run may also warn that the reference data is not prepared yet)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(("error: ", "warning: ")) for line in err), err
    assert "Traceback" not in "\n".join(err)
    return [line for line in err if line.startswith("error: ")]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_unknown_key_suggests_the_right_one(capsys):
    assert train("--override", "lora_rnak=8") == 2
    assert errors(capsys) == ["error: lora_rnak: unknown key (did you mean 'lora_rank'?)"]


@pytest.mark.parametrize("override, expected", [
    ("learning_rate=fast", "learning_rate: invalid value 'fast': expected float"),
    ("num_train_epochs=three", "num_train_epochs: invalid value 'three': expected float"),
    ("per_device_train_batch_size=1.5", "per_device_train_batch_size: invalid value 1.5: expected int"),
    ("bf16=maybe", "bf16: invalid value 'maybe': expected bool"),
    ("lr_scheduler_type=wobbly", "lr_scheduler_type: invalid value 'wobbly': expected one of"),
    ("lora_rank=null", "lora_rank: invalid value None: null is not allowed, expected int"),
])
def test_wrong_types_name_key_value_and_type(capsys, override, expected):
    assert train("--override", override) == 2
    (line,) = errors(capsys)
    assert line.startswith("error: " + expected)


def test_all_problems_reported_at_once(capsys):
    assert train("--override", "lora_rnak=8", "--override", "learning_rate=fast",
                 "--override", "num_train_epochs=three") == 2
    err = errors(capsys)
    assert len(err) == 3
    assert {e.split(":")[1].strip() for e in err} == {"lora_rnak", "learning_rate", "num_train_epochs"}


def test_missing_config_file(capsys):
    assert main(["train", "--config", "configs/nope.yaml", "--dry-run"]) == 2
    assert errors(capsys) == ["error: config file not found: configs/nope.yaml"]


def test_yaml_syntax_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nlora_rank: [16\n")
    assert main(["train", "--config", str(bad), "--dry-run"]) == 2
    (line,) = errors(capsys)
    assert "invalid YAML (line" in line


def test_dataset_missing_from_dataset_info(capsys):
    assert train("--override", "dataset=movielens_qwen3_trian") == 2
    (line,) = errors(capsys)
    assert f"dataset: 'movielens_qwen3_trian' is not in {ROOT}/data/dataset_info.json" in line
    assert "did you mean 'movielens_qwen3_train'" in line


def test_override_values_are_typed_as_yaml():
    from movierec.train.schema import parse_overrides

    assert parse_overrides(["a=1", "b=1.5e-4", "c=true", "d=null", "e=[x, y]", "f=text"]) == {
        "a": 1, "b": 1.5e-4, "c": True, "d": None, "e": ["x", "y"], "f": "text"}


def test_every_shipped_config_validates():
    from movierec.train.config import validate
    from movierec.train.schema import load_yaml

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_yaml(path)
        cfg.pop("dataset_dir", None)  # data folders may not be prepared in a fresh checkout
        cfg.pop("dataset", None), cfg.pop("eval_dataset", None)
        validate(cfg, model_required=False)  # nor their models built or downloaded
        assert path.read_text().startswith("#"), f"{path.name} must open with the command that runs it"


def test_dry_run_of_the_reference_command(capsys):
    rc = main(["train", "--config", REFERENCE, "--run-name", "gpu-run", "--device", "cuda",
               "--override", "per_device_train_batch_size=1", "--override", "gradient_accumulation_steps=1",
               "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    lf = yaml.safe_load(out.split("# LLaMA-Factory arguments")[1].split("\n", 1)[1].split("\n# run")[0])
    expected = dict(
        model_name_or_path="Qwen/Qwen3-0.6B", template="qwen", cutoff_len=2048, stage="sft", finetuning_type="lora",
        quantization_bit=4, quantization_method="bnb", quantization_type="nf4", double_quantization=True,
        lora_rank=16, lora_alpha=64, lora_dropout=0.05, lora_target="all", use_rslora=False,
        dataset="movielens_qwen3_train", eval_dataset="movielens_qwen3_eval", max_samples=None,
        per_device_train_batch_size=1, per_device_eval_batch_size=1, gradient_accumulation_steps=1,
        learning_rate=1.5e-4, lr_scheduler_type="cosine", warmup_ratio=0.03, optim="adamw_torch",
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
        num_train_epochs=3.0, logging_steps=10, eval_steps=200, save_steps=200, save_total_limit=2,
        metric_for_best_model="eval_loss", greater_is_better=False, bf16=True, gradient_checkpointing=True,
        flash_attn="auto", report_to="tensorboard", ddp_timeout=180000000,
        eval_strategy="steps", run_name="gpu-run",
    )
    # every path absolute, so the run folder works from anywhere
    expected.update(dataset_dir=str(ROOT / "data"), output_dir=str(ROOT / "output/qwen3-movielens-qlora"),
                    logging_dir=str(ROOT / "output/qwen3-movielens-qlora/runs/gpu-run"))
    for key, value in expected.items():
        assert lf[key] == value, key
    assert isinstance(lf["seed"], int)
    assert "device: cuda" in out
    assert "trainable 10,092,544 || all 606,142,464 || trainable% 1.6650" in out
    assert re.search(r"total optimizer steps 234,813, warmup steps 7,045", out)


def test_report_to_takes_a_list_and_names_a_missing_tracker(capsys):
    assert train("--override", "report_to=[tensorboard]") == 0
    capsys.readouterr()
    assert train("--override", "report_to=[tensorboard, wandbb]") == 2
    assert errors(capsys)[0].startswith("error: report_to: unknown integration 'wandbb' (known: ")
    assert train("--override", "report_to=[tensorboard, aim]") == 2
    assert "error: report_to: aim needs the aim package, which is not installed: pip install aim" in errors(capsys)


def test_every_command_option_has_help():
    import argparse

    from movierec.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.dest}" for name, parser in sub.choices.items() for action in parser._actions
               if action.dest != "help" and not action.help]
    assert not missing, missing


@pytest.mark.parametrize("value, expected", [
    ("null", "output_dir: null (a bare ~ is YAML's null: quote a path, '~/runs/x'); name the folder"),
    ("~", "output_dir: null (a bare ~ is YAML's null"),
    ("''", "output_dir: empty; name the folder checkpoints and logs go to"),
    ("'~'", "not a folder of the run's own; name a run folder"),
])
def test_output_dir_null_empty_or_home_is_refused(value, expected, capsys, tmp_path):
    assert train("--override", f"output_dir={value}") == 2
    lines = errors(capsys)
    assert len(lines) == 1 and expected in lines[0]
    assert not (ROOT / "None").exists()


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("# caf\xe9\noutput_dir: out\n".encode("latin-1"))
    assert main(["train", "--config", str(config), "--dry-run"]) == 2
    assert errors(capsys) == [f"error: {config}: not UTF-8 text (byte 5); save the config as UTF-8"]


def test_dry_run_catches_a_missing_model_folder_and_an_unknown_template(tmp_path, capsys):
    assert train("--override", f"model_name_or_path={tmp_path / 'modle'}", "--override", "template=qwne") == 2
    lines = errors(capsys)
    assert f"error: model_name_or_path: {tmp_path / 'modle'} is not a model folder (not found)" in lines
    assert "error: template: LLaMA-Factory has no template 'qwne' (did you mean 'qwen'?)" in lines


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_steps_is_minus_one_or_positive(value, capsys):
    assert train("--override", f"max_steps={value}") == 2
    assert errors(capsys) == [f"error: max_steps: must be -1 (train num_train_epochs) or >= 1, got {value}"]


def test_an_error_comes_alone_without_the_dry_runs_warnings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the reference data is not prepared here: a dry run would warn about it
    assert main(["train", "--config", str(ROOT / REFERENCE), "--dry-run", "--override", "bogus_key=1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: bogus_key: unknown key"]
    (tmp_path / "folder.yaml").mkdir()
    assert main(["train", "--config", "folder.yaml", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: folder.yaml: is a folder, not a config file"


def test_an_uncached_hub_model_offline_stops_training_but_not_a_dry_run(prepared_data, tmp_path, capsys,
                                                                         monkeypatch):
    from movierec.train.config import NOT_CACHED

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    args = ["train", "--config", "configs/demo_tiny.yaml", "--device", "cpu", "--override", f"dataset_dir={prepared_data}",
            "--override", f"output_dir={run}", "--override", "model_name_or_path=nobody/no-such-model"]
    assert main(args) == 2  # training could not load it: one line before anything is written
    assert errors(capsys) == [f"error: model_name_or_path: nobody/no-such-model is {NOT_CACHED}"]
    assert not run.exists()
    assert main([*args, "--dry-run"]) == 0  # a plan needs no weights: a warning
    assert f"warning: model_name_or_path: nobody/no-such-model is {NOT_CACHED}" in capsys.readouterr().err


def test_prompts_longer_than_cutoff_len_are_warned_of_before_training(prepared_data, tmp_path, capsys):
    """LLaMA-Factory keeps a long prompt's start: the candidate at its end would go. Said by the dry run (and at
    launch, the same code path), from the lengths prepare measured; silent when every example fits."""
    import json

    base = ["train", "--config", "configs/demo_tiny.yaml", "--device", "cpu", "--dry-run",
            "--override", f"dataset_dir={prepared_data}", "--override", f"output_dir={tmp_path / 'run'}"]
    assert main(base) == 0
    assert "cutoff_len" not in capsys.readouterr().err
    lengths = json.loads((prepared_data / "manifest.json").read_text())["example_lengths"]
    from movierec.bench.lengths import chars_to_tokens

    tokens = chars_to_tokens(lengths) if lengths["unit"] == "characters" else lengths
    median = int(tokens["quantiles"][50])
    assert main([*base, "--override", f"cutoff_len={median}"]) == 0
    (line,) = [l for l in capsys.readouterr().err.splitlines() if "cutoff_len" in l]
    assert line.startswith(f"warning: cutoff_len {median:,}: ~") and "of the prepared examples are longer" in line
    share = int(line.split(": ~")[1].split("%")[0])
    assert 40 <= share <= 60  # about half: cut at the median
    assert main([*base, "--override", f"cutoff_len={median}", "--override", "neat_packing=true"]) == 0
    assert "LLaMA-Factory cuts" not in capsys.readouterr().err  # packing drops them, and its own line says so
