"""A tiny, randomly initialised Qwen3 built offline: the demo's and the tests' model.

Same architecture class as Qwen/Qwen3-0.6B (`Qwen3ForCausalLM`), a few small layers, and a
byte-level BPE tokenizer trained with `tokenizers` on prompt-like text, with Qwen's ChatML
special tokens and chat template, and "Yes" / "No" as single tokens like Qwen3's own vocabulary.

It is built so that LoRA can adapt it: its embedding gives the logits a usable range (EMBED_STD),
and a short causal-LM pre-training on prompt-shaped text with random titles, stars and genres
(`pretrain`) gives its attention the structure of a prompt. Fine-tuned on the demo data it learns
the answer format within a few dozen steps and then ranks movies by the user's history and by the
candidate, so the demo and the tests can tell a working pipeline from a broken one.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from movierec.errors import UserError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Small enough to train 4-bit QLoRA on 2 CPU cores in seconds per step, yet every module
# LLaMA-Factory targets with `lora_target: all` (q/k/v/o/gate/up/down_proj) is there.
TINY_ARCH = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
VOCAB_SIZE = 2048
# Qwen3's initialisation (std 0.02) leaves a random tiny model's tied embedding / lm_head so small
# that every output logit stays within about +-1.3 whatever the hidden state: LoRA adapts only the
# linear layers, so it cannot move the output distribution and training stalls at the base rate
# (measured: loss 6.3 -> 5.9 with LoRA; full fine-tuning, which trains the embedding, reaches 0.8).
# With std 0.3 the final RMS-normed hidden state (norm ~ sqrt(hidden_size)) gives logits of std
# ~2.4: LoRA learns the answer format in ~30 steps (loss 15.5 -> 0.4) and then the ranking.
EMBED_STD = 0.3
# Pre-training (all weights, fp32, ~40 s on 2 CPU cores): next-token prediction on prompts rendered
# as `prepare` renders them, but with random titles, stars and genres (`_corpus`), so the model
# learns the format, not any data set's ratings or answers. Without it, LoRA on the demo data learns
# the user's history (AUC 0.78) but hardly the candidate (per-user AUC 0.50); with it, per-user AUC
# 0.63 (same data, same 750 steps).
PRETRAIN_STEPS = 300
PRETRAIN_BATCH = 32
PRETRAIN_LR = 3e-3

# Written into every folder make-tiny-model builds: only a folder holding it is ever replaced by a rebuild.
MARKER = "movierec_tiny.json"

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
INSTRUCTION = ("Given a user's movie ratings, predict whether the user will like the candidate movie. "
               "Answer Yes or No.")


def _corpus(seed: int, prompts: int = 3000) -> list[str]:
    """Prompt-like text rendered exactly as `prepare` renders prompts, so the tiny tokenizer splits
    them into about as many tokens as Qwen3's tokenizer does (~150-200), not into characters."""
    from movierec.data.movielens import GENRE_NAMES
    from movierec.data.prompts import render_input
    from movierec.data.synth import FOREIGN, WORDS

    rng = random.Random(seed)
    words = [*WORDS.tolist(), *FOREIGN.tolist()]

    def title() -> str:
        name = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        return f"{name} ({rng.randint(1920, 2020)})"

    out = [QWEN_SYSTEM, INSTRUCTION]
    for _ in range(prompts):
        n = rng.randint(5, 10)
        genres = "|".join(rng.sample(GENRE_NAMES, rng.randint(1, 3)))
        out.append(render_input([title() for _ in range(n)], [rng.randint(1, 10) / 2 for _ in range(n)],
                                title(), genres, 4.0))
        out.append(f"{INSTRUCTION}\n{rng.choice(['Yes', 'No'])}")
    return out


def build_tokenizer(seed: int = 0):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
        model_max_length=TINY_ARCH["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    for word in ("Yes", "No"):
        if len(fast.encode(word, add_special_tokens=False)) != 1:
            raise RuntimeError(f"tiny tokenizer: {word!r} is not a single token")
    return fast


def pretrain(model, tokenizer, seed: int = 0, steps: int = PRETRAIN_STEPS) -> list[float]:
    """Causal-LM training of every weight on prompt-shaped text without answers; returns the losses."""
    import torch

    texts = [f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{INSTRUCTION}\n{text}<|im_end|>\n"
             for text in _corpus(seed + 1, prompts=4000) if text.startswith("The user")]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.sample(encoded, PRETRAIN_BATCH)
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, x in enumerate(batch):
            ids[row, : len(x)], mask[row, : len(x)] = torch.tensor(x), 1
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def build_tiny_model(out_dir: str | Path, seed: int = 0, pretrain_steps: int = PRETRAIN_STEPS) -> Path:
    """Write a tiny `Qwen3ForCausalLM` (pre-trained on prompt-shaped text) + tokenizer to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **TINY_ARCH,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBED_STD)  # tied: also the lm_head (see EMBED_STD)
    if pretrain_steps:
        pretrain(model, tokenizer, seed, pretrain_steps)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"seed": seed, "pretrain_steps": pretrain_steps}) + "\n")
    if out_dir.exists():
        import shutil

        if any(out_dir.iterdir()) and built_settings(out_dir) is None:
            shutil.rmtree(tmp)
            raise UserError(f"{out_dir} was not written by make-tiny-model (no {MARKER}); it is kept: pick a new folder")
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def built_settings(folder: Path) -> dict | None:
    """The settings a previous make-tiny-model build recorded in `folder` (None: not a folder it wrote)."""
    try:
        settings = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def main(args) -> None:
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"{args.out} exists and is not a folder")
    previous = built_settings(out) if out.is_dir() else None
    if out.is_dir() and any(out.iterdir()) and previous is None:  # a user's notes, an export, a real model
        raise UserError(f"{args.out} is a non-empty folder that make-tiny-model did not write (no {MARKER}); "
                        "it is kept: pick a new folder")
    if out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
        raise UserError(f"{args.out} holds the current directory; pick a new folder")
    if args.pretrain_steps < 0:
        raise UserError("--pretrain-steps must be >= 0")
    wanted = {"seed": args.seed, "pretrain_steps": args.pretrain_steps}
    if previous is not None and previous != wanted:
        print(f"warning: replacing the tiny model in {out} built with {previous} by one built with {wanted}: runs "
              "trained on it will be evaluated against the new weights", file=sys.stderr)
    path = build_tiny_model(out, seed=args.seed, pretrain_steps=args.pretrain_steps)
    print(f"tiny Qwen3 written to {path}")
