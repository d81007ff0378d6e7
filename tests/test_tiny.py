"""The embedded tiny model: Qwen3's architecture class, ChatML tokens, Yes/No as single tokens."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from movierec.cli import main


def test_make_tiny_model_builds_a_loadable_qwen3(tmp_path):
    out = tmp_path / "tiny"
    assert main(["make-tiny-model", str(out), "--pretrain-steps", "3"]) == 0  # the full build: tiny_model fixture
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert len(tokenizer.encode("Yes", add_special_tokens=False)) == 1
    assert len(tokenizer.encode("No", add_special_tokens=False)) == 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # prompts split into words, not characters (Qwen3's own tokenizer gives ~200 tokens per prompt)
    prompt = "- Golden Island Letter (1989): 5.0 stars\n- Tomorrow (2001): 4.0 stars"
    assert len(tokenizer.encode(prompt)) < len(prompt) / 2.5


def test_make_tiny_model_never_replaces_an_unrelated_folder(tmp_path, capsys):
    keep = tmp_path / "runs"
    keep.mkdir()
    (keep / "important.txt").write_text("x")
    assert main(["make-tiny-model", str(keep)]) == 2
    assert "did not write" in capsys.readouterr().err and (keep / "important.txt").exists()
    (keep / "config.json").write_text("{}")  # an export, a downloaded model: a config.json is no proof of ours
    assert main(["make-tiny-model", str(keep), "--pretrain-steps", "0"]) == 2
    assert (keep / "important.txt").exists() and not (tmp_path / "runs.tmp").exists()


def test_make_tiny_model_rebuilds_only_its_own_folder(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["make-tiny-model", str(out), "--pretrain-steps", "0"]) == 0
    assert main(["make-tiny-model", str(out), "--pretrain-steps", "0"]) == 0  # its own marker: replaced quietly
    assert "warning" not in capsys.readouterr().err
    assert main(["make-tiny-model", str(out), "--pretrain-steps", "0", "--seed", "1"]) == 0
    assert "runs trained on it will be evaluated against the new weights" in capsys.readouterr().err


def test_tiny_model_is_adaptable(tiny_model):
    """What lets LoRA adapt it: logits with room to move (a random Qwen3-init tiny model keeps them
    within about +-1.3), and pre-training that made prompt text predictable."""
    import torch

    from movierec.models.tiny import INSTRUCTION, QWEN_SYSTEM, _corpus

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    text = [t for t in _corpus(99, prompts=3) if t.startswith("The user")][0]  # unseen random prompt
    ids = tokenizer(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{INSTRUCTION}\n{text}<|im_end|>\n",
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.logits.std() > 2.0
    assert out.loss < 2.0  # an untrained model of this vocabulary is near ln(2048) = 7.6 or far above
