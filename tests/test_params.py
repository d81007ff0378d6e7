import pytest

from movierec.errors import UserError
from movierec.models.params import count_parameters, format_counts, load_model_config

TINY = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
            "max_position_embeddings": 256, "tie_word_embeddings": True}


def test_qwen3_06b_reference_counts():
    counts = count_parameters("Qwen/Qwen3-0.6B", lora_rank=16, lora_target="all", lora_alpha=64)
    assert counts["trainable"] == 10_092_544
    assert counts["total"] == 606_142_464
    assert f"{counts['percent']:.4f}" == "1.6650"
    assert counts["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert format_counts(counts) == "trainable params: 10,092,544 || all params: 606,142,464 || trainable%: 1.6650"


def test_shipped_config_has_the_reference_architecture():
    cfg = load_model_config("Qwen/Qwen3-0.6B")
    assert cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (1024, 28, 151936)


def test_meta_count_equals_a_real_peft_model_counted_by_llamafactory():
    import torch
    from llamafactory.extras.misc import count_parameters as lf_count
    from llamafactory.model.model_utils.misc import find_all_linear_modules
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3Config(**TINY))
    targets = find_all_linear_modules(model, freeze_vision_tower=True)
    real = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    trainable, total = lf_count(real)

    counts = count_parameters(TINY, lora_rank=4)
    assert (counts["trainable"], counts["total"]) == (trainable, total)
    assert counts["target_modules"] == sorted(targets)


def test_explicit_targets_and_rank_scale():
    # q_proj and v_proj only: per layer r*(64+64) + r*(64+32) for q (64->64) and v (64->32)
    counts = count_parameters(TINY, lora_rank=2, lora_target="q_proj,v_proj")
    assert counts["trainable"] == 2 * (2 * (64 + 64) + 2 * (64 + 32))


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="no config.json"):
        count_parameters("someone/NoSuchModel-1B", lora_rank=8)
