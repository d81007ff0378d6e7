"""The embedded tiny model: Qwen3's architecture class, ChatML tokens, Yes/No as single tokens."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from movierec.cli import main


def test_make_tiny_model_builds_a_loadable_qwen3(tmp_path):
    out = tmp_path / "tiny"
    assert main(["make-tiny-model", str(out)]) == 0
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
    assert "holds no model" in capsys.readouterr().err and (keep / "important.txt").exists()
