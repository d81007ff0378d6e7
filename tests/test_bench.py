"""`movierec bench` and the fast profiles: a real tiny-model benchmark on CPU, configs, bad input."""

import importlib.util
import json

import pytest

from conftest import ROOT
from movierec.cli import main

TINY = str(ROOT / "configs/demo_tiny.yaml")
TINY_FAST = str(ROOT / "configs/demo_tiny_fast.yaml")
REFERENCE = ROOT / "configs/qwen3_movielens_qlora.yaml"
FAST = ROOT / "configs/qwen3_movielens_qlora_fast.yaml"


def printed_json(out: str) -> dict:
    """The JSON document at the end of stdout. On a terminal stdout holds nothing else, but under
    pytest LLaMA-Factory's log handler may hold the captured stdout of its first import."""
    return json.loads(out if out.startswith("{") else out[out.rindex("\n{\n") + 1:])


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no prepared data (data/demo/manifest.json) here: default lengths


def test_bench_tiny_model_prints_rates_as_json(tiny_model, capsys):
    rc = main(["bench", "--config", TINY, "--override", f"model_name_or_path={tiny_model}",
               "--override", "per_device_train_batch_size=2", "--steps", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    result = printed_json(out)
    assert result["steps"] == 4 and result["warmup_steps"] == 1
    assert result["examples_per_s"] > 0 and result["tokens_per_s"] > 0 and result["peak_memory_gib"] > 0
    assert 150 < result["tokens_per_example"] < 260  # ~200-token prompts + 3 answer tokens
    assert result["device"] == "cpu" and result["mfu"] is None and result["profile"] == "demo_tiny"
    assert result["prompt_lengths"].startswith("defaults")


def test_bench_profiles_prints_both_and_the_ratio(tiny_model, capsys):
    spec = importlib.util.spec_from_file_location("bench_profiles", ROOT / "scripts/bench_profiles.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--reference", TINY, "--fast", TINY_FAST, "--steps", "2", "--device", "cpu",
                        "--override", f"model_name_or_path={tiny_model}", "--override", "cutoff_len=32"]) == 0
    result = printed_json(capsys.readouterr().out)
    ref, fast = result["reference"], result["fast"]
    assert ref["per_device_train_batch_size"] == 1 and fast["per_device_train_batch_size"] == 32
    assert ref["tokens_per_example"] == fast["tokens_per_example"] == 32  # every example cut to cutoff_len
    assert result["ratio"]["examples_per_s"] == pytest.approx(fast["examples_per_s"] / ref["examples_per_s"])


def test_manifest_prompt_chars_become_token_lengths(tmp_path):
    from movierec.bench import ANSWER_TOKENS, CHARS_PER_TOKEN, TEMPLATE_TOKENS, make_examples, prompt_token_stats

    (tmp_path / "manifest.json").write_text(json.dumps({"prompt_chars": {"mean": 700, "std": 0, "min": 700, "max": 700}}))
    stats, source = prompt_token_stats(tmp_path)
    assert stats["mean"] == pytest.approx(700 / CHARS_PER_TOKEN + TEMPLATE_TOKENS) and "manifest.json" in source
    data = make_examples(5, stats, vocab_size=100, eos_id=7, cutoff_len=2048)
    length = round(700 / CHARS_PER_TOKEN + TEMPLATE_TOKENS) + ANSWER_TOKENS
    assert [len(x) for x in data["input_ids"]] == [length] * 5
    labels, ids = data["labels"][0], data["input_ids"][0]
    assert labels[:-ANSWER_TOKENS] == [-100] * (length - ANSWER_TOKENS) and labels[-ANSWER_TOKENS:] == ids[-ANSWER_TOKENS:]
    assert ids[-2] == 7 and max(max(x) for x in data["input_ids"]) < 100
    assert [len(x) for x in make_examples(2, stats, 100, 7, cutoff_len=64)["input_ids"]] == [64, 64]


def test_rates_skip_the_warmup_steps(tmp_path):
    from movierec.bench import measure

    steps = [{"step": i, "seconds": 5.0 if i == 1 else 0.5, "examples": 4} for i in range(1, 6)]
    (tmp_path / "step_times.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    log = [{"current_steps": i, "total_tokens": 1000 * i} for i in range(1, 6)]
    (tmp_path / "trainer_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))
    result = measure(tmp_path, 5)
    assert result["warmup_steps"] == 1
    assert result["examples_per_s"] == pytest.approx(16 / 2.0) and result["tokens_per_s"] == pytest.approx(4000 / 2.0)


def test_peak_flops_of_known_gpus():
    from movierec.bench import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA GeForce RTX 3090") == 71e12
    assert peak_flops("Tesla T4") is None


def test_fast_profiles_validate_and_keep_the_reference_method():
    from movierec.config import load_yaml, validate

    for path in (FAST, ROOT / "configs/demo_tiny_fast.yaml"):
        cfg = load_yaml(path)
        for key in ("dataset", "eval_dataset", "dataset_dir"):
            cfg.pop(key)
        lf, _ = validate(cfg)
        assert lf["disable_gradient_checkpointing"] is True and lf["gradient_accumulation_steps"] == 1
    reference, fast = load_yaml(REFERENCE), load_yaml(FAST)
    same = ["model_name_or_path", "template", "quantization_bit", "quantization_type", "double_quantization",
            "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "dataset", "eval_dataset", "num_train_epochs",
            "learning_rate", "lr_scheduler_type", "warmup_ratio", "optim", "weight_decay", "max_grad_norm", "bf16"]
    assert {k: fast[k] for k in same} == {k: reference[k] for k in same}


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.yaml"], "error: config file not found: configs/nope.yaml"),
    (["--config", TINY, "--override", "lora_rnak=8"], "error: lora_rnak: unknown key (did you mean 'lora_rank'?)"),
    (["--config", TINY, "--steps", "1"], "error: --steps: at least 2"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(["bench", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
