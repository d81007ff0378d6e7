"""A few fixed batch shapes for torch.compile and CUDA graphs: the `shape_buckets` lever.

LLaMA-Factory's collator pads each batch to its longest example, rounded up to a multiple of 8, so
length-grouped batches of MovieLens prompts (~230-330 tokens) come in a dozen or more lengths, and the
last batch of an epoch has fewer rows. torch.compile with static shapes compiles once per shape, and a
CUDA graph is recorded once per shape; with dynamic shapes inductor gives up part of its work.

`shape_buckets: N` pads every training batch, just before the forward, up to a multiple of N tokens, and
a batch with fewer rows than the largest one seen so far up to that row count. The added positions are
ignored everywhere: their attention mask is 0 (a padded row attends only its own first token, so no row is
fully masked) and their labels are IGNORE_INDEX, so the loss, its normaliser and every gradient are the
unpadded batch's (tests/test_levers.py checks the loss to 1e-5 and the gradients to 1e-4, without
dropout). With `lora_dropout` > 0 the dropout masks are drawn over the padded tensors, so the real tokens
get other (equally likely) masks than without padding: a run follows another random stream, as with
another seed, not the same numbers. With `shape_buckets` and `torch_compile`, movierec traces with static
shapes (`dynamic=False`) and lets dynamo keep a graph per shape. Evaluation-loss batches are padded too.

A forward pre-hook on the top-level model (the PeftModel, which the Trainer, DDP and DeepSpeed call)
does the padding. Hooks run inside the compiled call; this one (and answer_logits_only's) is excluded from
tracing (`torch.compiler.disable`), so the compiled forward sees only the padded shapes and nothing is
compiled per raw batch shape.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from movierec.train.answer_logits import IGNORE_INDEX

# the shapes dynamo may keep per compiled function: training and evaluation buckets, with room to spare
RECOMPILE_LIMIT = 64


def bucket(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple`."""
    return -(-length // multiple) * multiple


def pad_batch(kwargs: dict[str, Any], multiple: int, rows: int) -> dict[str, Any]:
    """The batch's 2D tensors padded to `rows` rows and a multiple of `multiple` columns (see the module)."""
    import torch

    ids = kwargs["input_ids"]
    n, length = ids.shape
    new_rows, new_length = max(rows, n), bucket(length, multiple)
    if (new_rows, new_length) == (n, length):
        return kwargs
    out = dict(kwargs)
    for key, value in kwargs.items():
        if not (torch.is_tensor(value) and value.dim() == 2 and tuple(value.shape) == (n, length)):
            continue
        padded = value.new_full((new_rows, new_length), IGNORE_INDEX if key == "labels" else 0)
        padded[:n, :length] = value
        if key == "position_ids":  # keep counting, as a longer example would
            padded[:, length:] = torch.arange(length, new_length, device=value.device)
            padded[n:, :length] = torch.arange(length, device=value.device)
        elif key == "attention_mask":
            padded[n:, 0] = 1  # a padded row attends its first token: never a row with nothing to attend
        out[key] = padded
    return out


def _pre_hook(module, args, kwargs: dict[str, Any]):
    mask = kwargs.get("attention_mask")
    if kwargs.get("labels") is None or args or "input_ids" not in kwargs or (mask is not None and mask.dim() != 2):
        return None  # scoring and generation (no labels), or packed rows with their own 4D masks
    seen = module._movierec_rows  # the largest batch seen in training and in evaluation mode
    rows = seen[module.training] = max(seen.get(module.training, 0), int(kwargs["input_ids"].shape[0]))
    return args, pad_batch(kwargs, module._movierec_shape_multiple, rows)


def install(model, multiple: int):
    """Register the padding hook on `model` (register it before answer_logits', which reads the padded labels);
    returns the handle (`.remove()` undoes it)."""
    import torch

    model._movierec_shape_multiple = int(multiple)
    model._movierec_rows = {}
    # eager even inside a compiled model: traced, the hook itself would be compiled again for every batch shape
    # the collator makes; the model's forward is compiled on the padded shapes only
    return model.register_forward_pre_hook(torch.compiler.disable(_pre_hook), with_kwargs=True)


def configure_compile() -> None:
    """Static shapes for the Trainer's torch.compile (accelerate reads ACCELERATE_DYNAMO_USE_DYNAMIC when the
    Trainer builds its accelerator) and a graph per bucket instead of dynamo's default limit of 8."""
    import torch._dynamo

    os.environ["ACCELERATE_DYNAMO_USE_DYNAMIC"] = "false"
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)


@contextlib.contextmanager
def compile_env_restored() -> Iterator[None]:
    """transformers' TrainingArguments (and configure_compile) put the compile settings in ACCELERATE_DYNAMO_*
    environment variables, which every later Trainer of the process, and its child processes, would obey:
    they are put back as they were when the block ends (a validation, a training)."""
    before = {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE_DYNAMO_")}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("ACCELERATE_DYNAMO_")]:
            del os.environ[key]
        os.environ.update(before)
