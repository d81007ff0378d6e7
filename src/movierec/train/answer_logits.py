"""Logits only where the loss reads them: the `answer_logits_only` lever.

LLaMA-Factory's SFT labels are IGNORE_INDEX on every prompt position, so the loss reads the logits at the
few positions that predict the answer ("Yes"/"No" and the end-of-turn tokens). The model still computes
the LM head at every position: for Qwen3-0.6B that is a 1,024 x 151,936 matmul per token (about a quarter
of the forward FLOPs) and a float32 [batch, ~270, 151,936] logits tensor (165 MB per example) that the
loss upcasts, softmaxes and back-propagates.

A forward pre-hook on the top-level model (the PeftModel, which the Trainer, DDP and DeepSpeed all call)
hands the model transformers' own `logits_to_keep` (as a tensor of positions) and the loss's
`shift_labels` for exactly those positions. The positions are those whose next token is labelled in any
row of the batch. Every labelled token is still scored, with the same normaliser, so the loss and the
gradients equal the full computation (tests/test_answer_logits.py checks both to 1e-5).

One host sync per forward finds the positions (`nonzero`); it replaces the far larger logits work. With
`shape_buckets` (train/static_shapes.py) the positions are padded to a multiple of its value with positions
whose labels are ignored, so a compiled LM head sees a few sizes.
"""

from __future__ import annotations

import inspect
from typing import Any

IGNORE_INDEX = -100  # transformers' and LLaMA-Factory's label for "no loss here"


def answer_positions(labels):
    """Positions p whose next token (p + 1) carries a label in some row: the logits the loss reads."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def _pre_hook(module, args, kwargs: dict[str, Any]):
    import torch

    from movierec.train.static_shapes import bucket  # (it imports this module)

    labels = kwargs.get("labels")
    if labels is None or args or "logits_to_keep" in kwargs or "shift_labels" in kwargs:
        return None  # scoring and generation (no labels), or a caller that already chose
    keep = answer_positions(labels)
    shift_labels = labels[:, keep + 1]
    multiple = getattr(module, "_movierec_shape_multiple", None)  # shape_buckets: a few counts of positions too
    if multiple and (extra := bucket(keep.numel(), multiple) - keep.numel()):
        keep = torch.cat([keep, keep.new_zeros(extra)])  # extra positions whose labels are ignored
        shift_labels = torch.cat([shift_labels, shift_labels.new_full((labels.shape[0], extra), IGNORE_INDEX)], 1)
    return args, {**kwargs, "logits_to_keep": keep, "shift_labels": shift_labels}


def install(model):
    """Register the hook on `model` (what the Trainer calls); returns the handle (`.remove()` undoes it).

    Raises:
        ValueError: the model's forward takes no `logits_to_keep` (an architecture transformers has not
            ported to it), so the lever cannot apply.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # the CausalLM inside peft
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        raise ValueError(f"answer_logits_only: {type(inner).__name__}.forward takes no logits_to_keep; "
                         "set answer_logits_only: false for this model")
    import torch

    # eager even inside a compiled model: the positions depend on the labels' values, and a traced hook would be
    # compiled again for every count of them; the model's forward is compiled on what the hook hands it
    return model.register_forward_pre_hook(torch.compiler.disable(_pre_hook), with_kwargs=True)
