"""What `movierec bench` measures besides time: FLOPs per token (for MFU), the GPU's peak and a measured
bf16 matmul rate, and peak memory (see the package docstring for the FLOPs formula)."""

from __future__ import annotations

import re
import time
from pathlib import Path

# Dense bf16 tensor-core peak (no sparsity) per GPU, by a substring of torch's device name, first
# match wins (so the PCIe/NVL variants come before the plain names, which are the SXM figures).
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
                   "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "3090": 71e12, "4090": 165e12}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def measured_matmul_flops(n: int = 8192, iters: int = 20) -> float:
    """bf16 FLOP/s of a large square matmul on the current GPU (what its tensor cores reach here)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    flops = 2 * n**3 * iters / (time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    return flops


def train_flops_per_token(model_cfg: dict, base_params: int, trainable: int, ctx: float) -> float:
    """FLOPs per real training token (see the module docstring)."""
    from movierec.models.params import tied_embeddings

    embedding = 0 if tied_embeddings(model_cfg) else model_cfg["vocab_size"] * model_cfg["hidden_size"]
    attn_dim = model_cfg["num_attention_heads"] * model_cfg.get(
        "head_dim", model_cfg["hidden_size"] // model_cfg["num_attention_heads"])
    return 4 * (base_params - embedding) + 6 * trainable + 12 * model_cfg["num_hidden_layers"] * attn_dim * ctx


def _reset_peak_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the peak RSS


def _peak_memory_gib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 2**20


def _train_peak_callback(device: str, out: dict):
    """Records the peak memory when training ends, before the evaluation (whose fp32 logits may exceed it)."""
    from transformers import TrainerCallback

    class TrainPeak(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            out["train_peak_gib"] = _peak_memory_gib(device)

    return TrainPeak()
