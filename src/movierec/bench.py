"""`movierec bench`: training, evaluation and scoring throughput of a config, on a random model.

No weights and no prepared data are needed. The model is the config's architecture
(configs/models/<name>.json for a hub id, config.json for a local folder) with random weights,
saved with the tiny tokenizer (movierec.tiny); its embeddings keep the architecture's vocabulary
size, the generated token ids stay below the tokenizer's. The examples are pre-tokenized
(LLaMA-Factory's `tokenized_path`) with lengths drawn like the prepared data's (movierec.lengths);
with `neat_packing` they are packed by LLaMA-Factory's own packed processor first.

Training runs N optimizer steps through the same path as `movierec train` (validated config,
movierec.worker and its callbacks), then LLaMA-Factory's evaluation (loss over generated eval
examples at the config's eval batch size) and, where the config evaluates with AUC, movierec's
AUC callback over generated prompts: the same calls an evaluation makes during training. The
training rate skips the first WARMUP_FRACTION of the steps (at least one); on a GPU a step's time
covers its forward, backward and optimizer update (the step timer synchronises).

From the rates and the dry run's step plan for the config's data (dryrun.estimate_steps) comes
the projected wall time of the whole run, evaluations included (dryrun.time_estimate).

FLOPs (for MFU) per real, non-padding training token, LoRA on a frozen base:
    4 * N_frozen + 6 * N_trainable + 12 * layers * (heads * head_dim) * ctx
N_frozen: the base's matmul weights (the tied embedding counted once, as the output head);
forward 2N, backward 2N for the activation gradients only (frozen weights get none); the LoRA
weights 6N as in full training. Attention: QK^T and AV, 4 * ctx * (heads * head_dim) per layer
forward, x3 with backward, ctx = mean number of keys a token attends to (causal, within its own
example: (L + 1) / 2 for an example of L tokens). Activation recomputation (gradient checkpointing)
and masked-out attention are not counted (MFU, not hardware utilisation). The peak is the GPU's
dense bf16 tensor-core figure (PEAK_BF16_FLOPS) and, beside it, a measured bf16 matmul.

`--scoring` times movierec's scorer instead: `evaluate`'s path (base loaded as trained, a LoRA
adapter folded into plain layers) over N generated eval prompts sharing the real prompts' prefix.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from movierec.errors import UserError
from movierec.lengths import (ANSWER_TOKENS, CHARS_PER_TOKEN, SHARED_PREFIX_TOKENS, TEMPLATE_TOKENS,  # noqa: F401
                              example_lengths, prompt_token_stats)
from movierec.datadir import DatasetDir

WARMUP_FRACTION = 0.2
# Dense bf16 tensor-core peak (no sparsity) per GPU, by a substring of torch's device name, first
# match wins (so the PCIe/NVL variants come before the plain names, which are the SXM figures).
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
                   "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "3090": 71e12, "4090": 165e12}
IGNORE_INDEX = -100


# ---------------------------------------------------------------- examples


def make_examples(n: int, stats: dict[str, float], vocab_size: int, eos_id: int, cutoff_len: int,
                  seed: int = 0) -> dict[str, list[list[int]]]:
    """`n` pre-tokenized SFT examples: random ids, the first SHARED_PREFIX_TOKENS the same in every
    example long enough, loss on the last ANSWER_TOKENS (eos included); cut to cutoff_len."""
    rng = np.random.default_rng(seed)
    prefix = rng.integers(0, vocab_size, SHARED_PREFIX_TOKENS).tolist()
    input_ids, labels = [], []
    for length in np.minimum(example_lengths(n, stats, rng), cutoff_len).tolist():
        ids = rng.integers(0, vocab_size, length).tolist()
        if length > SHARED_PREFIX_TOKENS + ANSWER_TOKENS:
            ids[:SHARED_PREFIX_TOKENS] = prefix
        ids[-2] = eos_id
        input_ids.append(ids)
        labels.append([IGNORE_INDEX] * (length - ANSWER_TOKENS) + ids[-ANSWER_TOKENS:])
    return {"input_ids": input_ids, "attention_mask": [[1] * len(x) for x in input_ids], "labels": labels}


def pack_examples(data: dict[str, list], lf: dict[str, Any], tokenizer) -> dict[str, list]:
    """`data` packed exactly as LLaMA-Factory packs tokenized examples (its own packed processor)."""
    from datasets import Dataset
    from llamafactory.data.loader import _get_dataset_processor
    from llamafactory.hparams import DataArguments

    data_args = DataArguments(cutoff_len=int(lf.get("cutoff_len", 2048)), neat_packing=bool(lf.get("neat_packing")),
                              packing=True)
    processor = _get_dataset_processor(data_args, "sft", None, tokenizer, None)
    # the examples are tokens already: hand them to the processor in place of the template's encoding
    processor._encode_data_example = lambda prompt, response, **_: (list(prompt[0]["content"]),
                                                                      list(response[0]["content"]))
    n = len(data["input_ids"])
    source = Dataset.from_dict({
        "_prompt": [[{"role": "user", "content": ids}] for ids in data["input_ids"]],
        "_response": [[{"role": "assistant", "content": labels}] for labels in data["labels"]],
        "_system": [""] * n, "_tools": [""] * n, "_images": [None] * n, "_videos": [None] * n, "_audios": [None] * n,
    })
    packed = source.map(processor.preprocess_dataset, batched=True, batch_size=1000, remove_columns=source.column_names)
    return packed.to_dict()


def attended_keys(lengths: list[int]) -> float:
    """Mean number of keys a token attends to: causal attention within its own example."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return float((lengths * (lengths + 1) / 2).sum() / max(lengths.sum(), 1))


# ---------------------------------------------------------------- model


def _arch_key(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def build_random_model(model_name_or_path: str, out_dir: Path) -> tuple[int, Any]:
    """Save a randomly initialised model of this architecture + the tiny tokenizer to `out_dir`.

    Returns:
        (parameters of the base model, the tokenizer).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from movierec.params import load_model_config
    from movierec.tiny import build_tokenizer

    cfg = load_model_config(model_name_or_path)
    if "model_type" not in cfg:
        raise UserError(f"model_name_or_path: {model_name_or_path} has no model_type in its config")
    config = AutoConfig.for_model(**cfg)
    tokenizer = build_tokenizer()
    if config.vocab_size < len(tokenizer):
        raise UserError(f"model_name_or_path: vocabulary of {config.vocab_size} is smaller than the bench "
                        f"tokenizer's {len(tokenizer)}")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)  # in the config's dtype (bf16 for Qwen3-0.6B)
    params = sum(p.numel() for p in model.parameters())
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "bench_model.json").write_text(json.dumps({"params": params, "source": str(model_name_or_path)}))
    if out_dir.exists():  # another process built it meanwhile
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.replace(out_dir)
    return params, tokenizer


def random_model(model_name_or_path: str, cache: Path | None, work: Path) -> tuple[Path, int, Any]:
    """(folder, base parameters, tokenizer) of a random model of this architecture, built once per
    architecture under `cache` (reused by later benches), else in `work`."""
    from transformers import AutoTokenizer

    from movierec.params import load_model_config

    folder = (cache / f"random-{_arch_key(load_model_config(model_name_or_path))}") if cache else work / "model"
    if (folder / "bench_model.json").is_file():
        return folder, json.loads((folder / "bench_model.json").read_text())["params"], AutoTokenizer.from_pretrained(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    params, tokenizer = build_random_model(model_name_or_path, folder)
    return folder, params, tokenizer


# ---------------------------------------------------------------- run and measure


def bench_args(lf: dict[str, Any], steps: int, work: Path, model_dir: Path) -> dict[str, Any]:
    """The config's LLaMA-Factory args, set to train `steps` steps on the generated data, then evaluate."""
    args = dict(lf)
    for key in ("val_size", "load_best_model_at_end", "resume_from_checkpoint", "metric_for_best_model"):
        args.pop(key, None)
    packed = bool(lf.get("neat_packing") or lf.get("packing"))
    args.update(
        model_name_or_path=str(model_dir),
        dataset="movierec_bench", eval_dataset="movierec_bench",  # names only: tokenized_path replaces the data
        tokenized_path=str(work / "data"),
        output_dir=str(work / "out"),
        max_steps=steps, do_train=True, do_eval=True, do_predict=False, eval_strategy="no",
        save_strategy="no", report_to="none", plot_loss=False, logging_steps=1,
        # trainer_log.jsonl: non-padding tokens per step; with packing the Trainer would sum the 4D mask
        include_num_input_tokens_seen="no" if packed else "non_padding",
    )
    return args


def measure(out_dir: Path, steps: int, per_sequence: tuple[float, float] | None = None) -> dict[str, Any]:
    """Rates over steps after the warm-up, from step_times.jsonl and trainer_log.jsonl's total_tokens.

    per_sequence: (examples, tokens) per packed sequence, for packed runs (their lines count sequences).
    """
    times = [json.loads(line) for line in (out_dir / "step_times.jsonl").read_text().splitlines()]
    if len(times) != steps:
        raise UserError(f"bench: {len(times)} steps were timed, expected {steps}")
    warmup = min(max(1, round(steps * WARMUP_FRACTION)), steps - 1)
    timed = times[warmup:]
    seconds = sum(t["seconds"] for t in timed)
    if per_sequence:
        sequences = sum(t["sequences"] for t in timed)
        examples, tokens = sequences * per_sequence[0], sequences * per_sequence[1]
    else:
        examples = sum(t["examples"] for t in timed)
        seen = {line["current_steps"]: line["total_tokens"]
                for line in map(json.loads, (out_dir / "trainer_log.jsonl").read_text().splitlines())
                if "total_tokens" in line}
        tokens = seen[steps] - seen[warmup]
    return {"steps": steps, "warmup_steps": warmup, "timed_seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds, "tokens_per_example": tokens / examples}


def measure_eval(out_dir: Path, n_eval: int, eval_batch: int, auc_batch: int) -> dict[str, Any]:
    """LLaMA-Factory's evaluation (eval_results.json) and movierec's AUC callback (trainer_log.jsonl)."""
    metrics = json.loads((out_dir / "eval_results.json").read_text())
    out: dict[str, Any] = {"eval": {"examples": n_eval, "batch_size": eval_batch, "seconds": metrics["eval_runtime"],
                                    "examples_per_s": n_eval / metrics["eval_runtime"]}, "auc": None}
    lines = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]
    auc = [line for line in lines if "eval_auc_seconds" in line]
    if auc:
        n, s = auc[-1]["eval_auc_examples"], auc[-1]["eval_auc_seconds"]
        out["auc"] = {"examples": n, "batch_size": auc_batch, "seconds": s, "examples_per_s": n / s}
    return out


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
    embedding = 0 if model_cfg.get("tie_word_embeddings", True) else model_cfg["vocab_size"] * model_cfg["hidden_size"]
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


@contextlib.contextmanager
def _stdout_to_stderr():
    """Training logs (LLaMA-Factory's handler holds the original stdout) go to stderr: stdout is the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _setup(config: str | Path, overrides: list[str] | None, device: str):
    """Validated (lf, mr, device, data counts, data folder) of a config; bench generates its own examples."""
    from movierec.config import load_config, validate
    from movierec.device import apply_device, resolve_device
    from movierec.plan import data_counts

    cfg = load_config(config, overrides)
    device = resolve_device(device)
    names = {key: cfg.pop(key) for key in ("dataset", "eval_dataset") if key in cfg}  # data need not be prepared
    lf, mr = validate(cfg)
    data = DatasetDir(lf.get("dataset_dir") or "data")
    counts = data_counts({**lf, **names}, data)
    apply_device(lf, device)
    return lf, mr, device, counts, data


def _device_info(device: str) -> tuple[str, float | None, float | None]:
    """(device name, table peak bf16 FLOP/s, measured bf16 matmul FLOP/s)."""
    if device != "cuda":
        return "cpu", None, None
    import torch

    name = torch.cuda.get_device_name(0)
    return name, peak_flops(name), measured_matmul_flops()


def _n_bench_eval(batch: int) -> int:
    """Eval examples the benchmark times: 16 batches (the dataloader workers' start-up, paid once per
    evaluation, stays a small part of the time), at least 32, at most 1024."""
    return int(min(max(16 * batch, 32), 1024))


def run_bench(config: str | Path, overrides: list[str] | None = None, steps: int = 10, device: str = "auto",
              model_cache: str | Path | None = None) -> dict[str, Any]:
    """Train `steps` steps of `config` on a random model, evaluate once, and return the figures."""
    from movierec.dryrun import auc_examples, time_estimate
    from movierec.params import count_for_config, load_model_config
    from movierec.plan import train_plan
    from movierec.rundir import RunDir
    from movierec.config import render_llamafactory_args

    if steps < 2:
        raise UserError("--steps: at least 2 (the first step is warm-up and not timed)")
    lf, mr, device, counts, data = _setup(config, overrides, device)
    stats, source = prompt_token_stats(data.path)
    batch, accum = int(lf.get("per_device_train_batch_size", 8)), int(lf.get("gradient_accumulation_steps", 1))
    eval_batch = int(lf.get("per_device_eval_batch_size", 8))
    auc_batch = int(mr.get("eval_auc_batch_size", 16))
    packed = bool(lf.get("neat_packing"))
    cutoff = int(lf.get("cutoff_len", 2048))
    device_name, peak, matmul = _device_info(device)

    from datasets import Dataset, DatasetDict

    from movierec.callbacks import ScoreCallback
    from movierec.worker import run

    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        model_dir, params, tokenizer = random_model(str(lf["model_name_or_path"]), model_cache and Path(model_cache), work)
        rows = steps * batch * accum  # exactly the batches the steps use
        n_eval = _n_bench_eval(eval_batch)

        def make(n: int, seed: int) -> dict[str, list]:
            return make_examples(n, stats, len(tokenizer), tokenizer.eos_token_id, cutoff, seed)

        if packed:  # enough examples for `rows` packed sequences
            per_row = max(int((cutoff - 1) / (stats["mean"] + ANSWER_TOKENS)), 1)
            train = pack_examples(make(int(rows * per_row * 1.2) + 64, 0), lf, tokenizer)
            if len(train["input_ids"]) < rows:
                raise UserError(f"bench: packing gave {len(train['input_ids'])} sequences, {rows} needed")
            train = {k: v[:rows] for k, v in train.items()}
            # neat packing numbers the examples of a sequence 1, 2, ... in its attention mask (0: padding)
            lengths = [int(c) for mask in train["attention_mask"] for c in np.bincount(mask)[1:]]
            per_sequence = (len(lengths) / rows, sum(lengths) / rows)
            eval_data = pack_examples(make(n_eval, 1), lf, tokenizer)
        else:
            train = make(rows, 0)
            lengths = [len(x) for x in train["input_ids"]]
            per_sequence = None
            eval_data = make(n_eval, 1)
        DatasetDict({"train": Dataset.from_dict(train), "validation": Dataset.from_dict(eval_data)}).save_to_disk(
            work / "data")

        args = bench_args(lf, steps, work, model_dir)
        lf_args = render_llamafactory_args(args, RunDir(args["output_dir"]), DatasetDir(work / "data"), "bench", None,
                                           None)
        (work / "lf.yaml").write_text(yaml.safe_dump(lf_args))
        (work / "resolved.yaml").write_text(yaml.safe_dump({"movierec": mr, "device": device,
                                                            "plan": train_plan(lf_args, rows, 1)}))
        peaks: dict[str, float] = {}
        extra = [_train_peak_callback(device, peaks)]
        n_auc = 0
        if lf.get("eval_strategy", "no") != "no" and auc_examples(mr, counts["eval"] or 1):
            n_auc = min(auc_examples(mr, counts["eval"] or 4450), _n_bench_eval(auc_batch))
            prompts = make(n_auc, 2)["input_ids"]
            extra.append(ScoreCallback(lf_args, mr, [p[:-ANSWER_TOKENS] for p in prompts],
                                     np.random.default_rng(3).integers(0, 2, n_auc).tolist()))
        gc.collect()  # a previous bench in this process must not count in this one's peak
        _reset_peak_memory(device)
        with _stdout_to_stderr():
            run(work / "lf.yaml", work / "resolved.yaml", extra)
        result = measure(work / "out", steps, per_sequence)
        result.update(measure_eval(work / "out", n_eval, eval_batch, auc_batch))
        peak_gib = _peak_memory_gib(device)
        counted = count_for_config({**lf, "model_name_or_path": str(model_dir)})
        model_cfg = load_model_config(str(model_dir))

    trainable = counted["trainable"] if counted else 0
    flops = train_flops_per_token(model_cfg, params, trainable, attended_keys(lengths))
    plan = projection = None
    if counts["train"]:
        plan = train_plan(lf, counts["train"], 1, data)
        plan["evaluations"] = plan["evaluations"] if counts["eval"] else 0
        projection = time_estimate(lf, plan, result["examples_per_s"], counts["eval"], mr,
                                   result["eval"]["examples_per_s"],
                                   result["auc"]["examples_per_s"] if result["auc"] else None)
        projection.update(n_train=counts["train"], n_eval=counts["eval"],
                          auc_examples_per_evaluation=auc_examples(mr, counts["eval"]))
    return {
        "profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []),
        "device": device, "device_name": device_name,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
        "packing": packed, "cutoff_len": cutoff,
        "quantization_bit": lf.get("quantization_bit"), "gradient_checkpointing": not lf.get(
            "disable_gradient_checkpointing", False), "enable_liger_kernel": bool(lf.get("enable_liger_kernel")),
        "attention": str(lf.get("flash_attn", "auto")),
        **result,
        "peak_memory_gib": round(peak_gib, 3), "train_peak_memory_gib": round(peaks["train_peak_gib"], 3),
        "peak_memory_kind": ("torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS (VmHWM)")
        + "; peak_memory_gib includes the evaluation, train_peak_memory_gib stops when training ends",
        "flops_per_token": flops, "peak_flops": peak, "measured_matmul_flops": matmul,
        "mfu": flops * result["tokens_per_s"] / peak if peak else None,
        "mfu_vs_measured_matmul": flops * result["tokens_per_s"] / matmul if matmul else None,
        "params": params, "trainable_params": trainable, "prompt_lengths": source,
        "plan": plan, "projection": projection,
    }


def _make_adapter(model_dir: Path, lf: dict[str, Any], out: Path) -> Path:
    """A LoRA adapter of the config's shape (random A, random small B) for the random model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, low_cpu_mem_usage=True)
    targets = sorted({name.split(".")[-1] for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and "lm_head" not in name})
    peft_model = get_peft_model(model, LoraConfig(r=int(lf.get("lora_rank", 8)), lora_alpha=lf.get("lora_alpha") or 16,
                                                  target_modules=targets, task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)  # a trained adapter is not zero
    peft_model.save_pretrained(out)
    return out


def run_scoring_bench(config: str | Path, overrides: list[str] | None = None, examples: int = 4450,
                      device: str = "auto", model_cache: str | Path | None = None) -> dict[str, Any]:
    """Seconds movierec's scorer takes for `examples` eval prompts, loaded and merged as `evaluate` does."""
    from movierec.scoring import YesNoScorer, load_model_for_scoring

    if examples < 1:
        raise UserError("--examples: at least 1")
    lf, mr, device, _, data = _setup(config, overrides, device)
    stats, source = prompt_token_stats(data.path)
    cutoff = int(lf.get("cutoff_len", 2048))
    batch = int(mr.get("eval_auc_batch_size", 16))
    device_name, _, _ = _device_info(device)
    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        model_dir, params, tokenizer = random_model(str(lf["model_name_or_path"]), model_cache and Path(model_cache), work)
        adapter = _make_adapter(model_dir, lf, work / "adapter")
        gc.collect()
        _reset_peak_memory(device)
        start = time.perf_counter()
        with _stdout_to_stderr():
            model, tokenizer, template = load_model_for_scoring({**lf, "model_name_or_path": str(model_dir)}, adapter,
                                                                device)
        load_s = time.perf_counter() - start
        data = make_examples(examples, stats, len(tokenizer), tokenizer.eos_token_id, cutoff, seed=4)
        prompts = [ids[:-ANSWER_TOKENS] for ids in data["input_ids"]]
        scorer = YesNoScorer(model, tokenizer, template, cutoff, batch)
        start = time.perf_counter()
        scorer.score_ids(prompts[:batch])  # first call: kernels, allocator (evaluate pays it once per checkpoint)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        probs = scorer.score_ids(prompts)
        seconds = time.perf_counter() - start
        peak_gib = _peak_memory_gib(device)
    if not np.isfinite(probs).all():
        raise UserError("bench --scoring: non-finite P(Yes)")
    return {"profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []), "device": device,
            "device_name": device_name, "examples": examples, "batch_size": batch,
            "quantization_bit": lf.get("quantization_bit"), "seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "first_batch_seconds": round(first_s, 3),
            "load_and_merge_seconds": round(load_s, 3), "tokens_per_example": float(np.mean([len(p) for p in prompts])),
            "shared_prefix_tokens": SHARED_PREFIX_TOKENS, "peak_memory_gib": round(peak_gib, 3), "params": params,
            "prompt_lengths": source,
            "timing": "score_ids over all prompts after a first batch; tokenization and model loading excluded"}


def main(args) -> int:
    if args.scoring:
        result = run_scoring_bench(args.config, args.override, args.examples, args.device, args.model_cache)
    else:
        result = run_bench(args.config, args.override, args.steps, args.device, args.model_cache)
    text = json.dumps(result, indent=2)
    if args.json_out:
        from movierec.io import atomic_write_text

        atomic_write_text(Path(args.json_out), text + "\n")
    print(text)
    return 0
