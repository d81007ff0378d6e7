"""`movierec bench` and the fast profiles: a real tiny-model benchmark on CPU, configs, bad input."""

import json
import math

import pytest
from conftest import ROOT

from movierec.cli import main

TINY = str(ROOT / "configs/demo_tiny.yaml")
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
    assert 240 < result["tokens_per_example"] < 290  # real ML-100K examples: ~262 tokens
    assert result["device"] == "cpu" and result["mfu"] is None and result["profile"] == "demo_tiny"
    assert "MovieLens-100K" in result["example_tokens"]["from"]
    # every measure of a part: step time percentiles, finite losses at both ends, GPU-busy (null on CPU, why)
    assert 0 < result["step_seconds_p50"] <= result["step_seconds_p90"] and result["timed_steps"] == 3
    assert math.isfinite(result["first_loss"]) and math.isfinite(result["last_loss"]) and result["losses_logged"] >= 1
    assert result["gpu_busy_fraction"] is None and result["gpu_busy_note"].startswith("CPU run")
    assert result["train_peak_memory_gib"] > 0 and result["flops_per_token"] > 0
    # one evaluation as during training: LLaMA-Factory's loss at the eval batch size, movierec's AUC
    assert result["eval"]["batch_size"] == 8 and result["eval"]["examples"] == 128 and result["eval"]["examples_per_s"] > 0
    assert result["auc"]["batch_size"] == 32 and result["auc"]["examples"] == 512  # 16 batches, at most the eval set
    # the demo's plan (configs/data/demo.yaml: 4,000 / 1,000 examples, here at batch 2: 6,000 steps, eval every
    # 150) and the run projected from the measured rates
    assert result["plan"]["total_optimizer_steps"] == 6000 and result["plan"]["evaluations"] == 6000 // 150 + 1
    projection = result["projection"]
    assert projection["train_seconds"] == pytest.approx(6000 * 2 / result["examples_per_s"])
    assert projection["seconds_per_evaluation"] == pytest.approx(
        1000 / result["eval"]["examples_per_s"] + 1000 / result["auc"]["examples_per_s"])


def test_generated_examples_have_the_drawn_lengths_and_answer_labels():
    from movierec.bench.inputs import make_examples
    from movierec.bench.lengths import ANSWER_TOKENS

    stats = {"mean": 200.0, "std": 0.0, "min": 200.0, "max": 200.0, "quantiles": [200.0] * 101}
    data = make_examples(5, stats, vocab_size=100, eos_id=7, cutoff_len=2048)
    assert [len(x) for x in data["input_ids"]] == [200] * 5
    labels, ids = data["labels"][0], data["input_ids"][0]
    assert labels[:-ANSWER_TOKENS] == [-100] * (200 - ANSWER_TOKENS) and labels[-ANSWER_TOKENS:] == ids[-ANSWER_TOKENS:]
    assert ids[-2] == 7 and max(max(x) for x in data["input_ids"]) < 100
    assert [len(x) for x in make_examples(2, stats, 100, 7, cutoff_len=64)["input_ids"]] == [64, 64]


def test_peak_flops_of_known_gpus():
    from movierec.bench.hardware import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA GeForce RTX 3090") == 71e12
    assert peak_flops("Tesla T4") is None


BF16_FAST = ROOT / "configs/qwen3_movielens_lora_bf16_fast.yaml"
TINY_BF16_FAST = ROOT / "configs/demo_tiny_lora_bf16_fast.yaml"
METHOD = ["model_name_or_path", "template", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_rslora",
          "dataset", "eval_dataset", "num_train_epochs", "lr_scheduler_type", "warmup_ratio", "adam_beta1",
          "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "bf16", "metric_for_best_model", "seed"]
# the same AdamW update in one kernel, no per-step loss check, the LM head only where the loss reads it (same
# loss and gradients, tests/test_levers.py): same optimisation (the configs say why)
SAME_OPTIMISATION = {"optim": ("adamw_torch", "adamw_torch_fused"), "logging_nan_inf_filter": (None, False),
                     "answer_logits_only": (None, True)}
QUANTIZATION = ["quantization_bit", "quantization_method", "quantization_type", "double_quantization"]
# the throughput knobs a fast profile may change (and output_dir); anything else must equal its reference
KNOBS = {"per_device_train_batch_size", "gradient_accumulation_steps", "group_by_length", "learning_rate",
         "disable_gradient_checkpointing", "gradient_checkpointing", "dataloader_num_workers", "dataloader_pin_memory",
         "flash_attn", "enable_liger_kernel", "neat_packing", "overwrite_cache", "preprocessing_num_workers",
         "per_device_eval_batch_size", "eval_steps", "save_steps", "eval_auc_samples", "eval_auc_batch_size",
         "output_dir", *QUANTIZATION, *SAME_OPTIMISATION}


@pytest.mark.parametrize("reference, fast, quantized", [
    (REFERENCE, FAST, True), (REFERENCE, BF16_FAST, False),
    (ROOT / "configs/demo_tiny.yaml", ROOT / "configs/demo_tiny_fast.yaml", True),
    (ROOT / "configs/demo_tiny.yaml", TINY_BF16_FAST, False)])
def test_fast_profiles_change_only_throughput_knobs(reference, fast, quantized):
    """Same model, LoRA, data, epochs and schedule as the reference; the learning rate follows the batch
    by the square-root rule (reference run: 1 example per step; demo_tiny.yaml: its own batch)."""
    from movierec.train.config import validate
    from movierec.train.schema import load_yaml

    ref, cfg = load_yaml(reference), load_yaml(fast)
    lf = validate({k: v for k, v in cfg.items() if k not in ("dataset", "eval_dataset", "dataset_dir")}).llamafactory
    assert lf["disable_gradient_checkpointing"] is True and lf["gradient_accumulation_steps"] == 1
    assert {k: cfg.get(k) for k in METHOD} == {k: ref.get(k) for k in METHOD}
    assert {k: cfg.get(k) for k in QUANTIZATION} == ({k: ref.get(k) for k in QUANTIZATION} if quantized else
                                                    dict.fromkeys(QUANTIZATION))
    changed = {k for k in set(ref) | set(cfg) if ref.get(k) != cfg.get(k)}
    assert changed <= KNOBS, changed - KNOBS
    assert all(ref.get(k) == options[0] and cfg.get(k) in options for k, options in SAME_OPTIMISATION.items())
    ref_batch = 1 if reference == REFERENCE else ref["per_device_train_batch_size"]  # the reference run's batch
    expected = ref["learning_rate"] * math.sqrt(cfg["per_device_train_batch_size"] / ref_batch)
    assert cfg["learning_rate"] == pytest.approx(expected, rel=0.01)
    assert not cfg["enable_liger_kernel"] and not cfg["neat_packing"] and cfg["flash_attn"] == "sdpa"


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.yaml"], "error: config file not found: configs/nope.yaml"),
    (["--config", TINY, "--override", "lora_rnak=8"], "error: lora_rnak: unknown key (did you mean 'lora_rank'?)"),
    (["--config", TINY, "--steps", "1"], "error: --steps: at least 2"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(["bench", *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
