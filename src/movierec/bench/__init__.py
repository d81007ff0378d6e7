"""`movierec bench`: training, evaluation and scoring throughput of a config, on a random model.

No weights and no prepared data are needed. The model is the config's architecture
(movierec/resources/models/<name>.json for a hub id, config.json for a local folder) with random weights,
saved with the tiny tokenizer (movierec.models.tiny); its embeddings keep the architecture's vocabulary
size, the generated token ids stay below the tokenizer's. The examples are pre-tokenized
(LLaMA-Factory's `tokenized_path`) with lengths drawn like the prepared data's (movierec.bench.lengths);
with `neat_packing` they are packed by LLaMA-Factory's own packed processor first.

Training runs N optimizer steps through the same path as `movierec train` (validated config,
movierec.train.worker and its callbacks), then LLaMA-Factory's evaluation (loss over generated eval
examples at the config's eval batch size) and, where the config evaluates with AUC, movierec's
AUC callback over generated prompts: the same calls an evaluation makes during training. The
training rate skips the first WARMUP_FRACTION of the steps (at least one) and, on a GPU, the last
5 (profiled for the GPU-busy fraction); a synchronised clock brackets the timed steps, and no
per-step sync is added (bench.measure). Each part states the tokens per example it drew.

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
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from movierec.bench.hardware import (
    _peak_memory_gib,
    _reset_peak_memory,
    _train_peak_callback,
    measured_matmul_flops,
    peak_flops,
    train_flops_per_token,
)
from movierec.bench.inputs import (
    attended_keys,
    make_examples,
    pack_examples,
    random_model,
)
from movierec.bench.lengths import (
    ANSWER_TOKENS,
    SHARED_PREFIX_TOKENS,
    example_token_stats,
)
from movierec.bench.measure import (
    bench_args,
    measure,
    measure_eval,
    window_callback,
)
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.train.checks import compiles
from movierec.train.config import arg, lora_alpha

# ---------------------------------------------------------------- run and measure


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
    from movierec.device import apply_device, resolve_device
    from movierec.train.checks import check_device_levers
    from movierec.train.config import validate
    from movierec.train.plan import data_counts
    from movierec.train.schema import load_config

    cfg = load_config(config, overrides)
    device = resolve_device(device)
    names = {key: cfg.pop(key) for key in ("dataset", "eval_dataset") if key in cfg}  # data need not be prepared
    checked = validate(cfg, model_required=False)  # a random model of the architecture: no weights needed
    data = DatasetDir(checked.get("dataset_dir") or "data")
    counts = data_counts({**checked.llamafactory, **names}, data)
    problems = check_device_levers(checked.llamafactory, device)
    if problems:
        raise UserError("\n".join(problems))
    return dict(apply_device(checked, device)[0].llamafactory), checked.movierec, device, counts, data


def _device_info(device: str) -> tuple[str, float | None, float | None]:
    """(device name, table peak bf16 FLOP/s, measured bf16 matmul FLOP/s)."""
    if device != "cuda":
        return "cpu", None, None
    import torch

    name = torch.cuda.get_device_name(0)
    return name, peak_flops(name), measured_matmul_flops()


PEAK_MEMORY_KIND = {kind == "cuda": f"{what}; peak_memory_gib includes the evaluation, train_peak_memory_gib stops "
                    "when training ends" for kind, what in (("cuda", "torch.cuda.max_memory_allocated"),
                                                            ("cpu", "peak RSS (VmHWM)"))}


def _n_bench_eval(batch: int) -> int:
    """Eval examples the benchmark times: 16 batches (the dataloader workers' start-up, paid once per
    evaluation, stays a small part of the time), at least 32, at most 1024."""
    return int(min(max(16 * batch, 32), 1024))


def run_bench(config: str | Path, overrides: list[str] | None = None, steps: int = 10, device: str = "auto",
              model_cache: str | Path | None = None) -> dict[str, Any]:
    """Train `steps` steps of `config` on a random model, evaluate once, and return the figures."""
    from movierec.folders.rundir import RunDir
    from movierec.models.params import load_model_config
    from movierec.train.config import RunConfig
    from movierec.train.session import TrainingSession

    if steps < 2:
        raise UserError("--steps: at least 2 (the first step is warm-up and not timed)")
    lf, mr, device, counts, data = _setup(config, overrides, device)
    stats, source = example_token_stats(data.path)
    batch, accum = int(arg(lf, "per_device_train_batch_size")), int(arg(lf, "gradient_accumulation_steps"))
    eval_batch = int(arg(lf, "per_device_eval_batch_size"))
    device_name, peak, matmul = _device_info(device)

    with tempfile.TemporaryDirectory(prefix="movierec-bench-") as tmp:
        work = Path(tmp)
        model_dir, params, tokenizer = random_model(str(lf["model_name_or_path"]), model_cache and Path(model_cache), work)
        rows = steps * batch * accum  # exactly the batches the steps use
        n_eval = _n_bench_eval(eval_batch)

        make, lengths, per_row = _bench_data(lf, stats, tokenizer, rows, n_eval, work)
        args = bench_args(lf, steps, work, model_dir)
        session = TrainingSession(RunConfig(args, mr), device, RunDir(args["output_dir"]), DatasetDir(work / "data"),
                                  "bench")
        session.make_plan(rows)
        record = session.record()
        session.write(record, work)
        peaks: dict[str, float] = {}
        extra = [_train_peak_callback(device, peaks), window_callback(work / "out", steps, device),
                 *_auc_callback(lf, session.lf_args, mr, counts, make)]
        gc.collect()  # a previous bench in this process must not count in this one's peak
        _reset_peak_memory(device)
        with _stdout_to_stderr():
            session.launch(work, verbose=True, extra_callbacks=extra, catch=False)
        result = measure(session.run, steps, batch * accum, per_row)
        result.update(measure_eval(session.run, n_eval, eval_batch, mr.eval_auc_batch_size))
        peak_gib = _peak_memory_gib(device)
        counted = record["parameters"]
        model_cfg = load_model_config(str(model_dir))

    trainable = counted["trainable"] if counted else 0
    flops = train_flops_per_token(model_cfg, params, trainable, attended_keys(lengths))
    plan, projection = _projection(lf, counts, data, mr, result)
    return {
        "profile": Path(config).stem, "config": str(config), "overrides": list(overrides or []),
        "device": device, "device_name": device_name,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accum,
        **_levers(lf), "answer_logits_only": mr.answer_logits_only,
        "shape_buckets": mr.shape_buckets, **result,
        "peak_memory_gib": round(peak_gib, 3), "train_peak_memory_gib": round(peaks["train_peak_gib"], 3),
        "peak_memory_kind": PEAK_MEMORY_KIND[device == "cuda"],
        "flops_per_token": flops, "peak_flops": peak, "measured_matmul_flops": matmul,
        "mfu": flops * result["tokens_per_s"] / peak if peak else None,
        "mfu_vs_measured_matmul": flops * result["tokens_per_s"] / matmul if matmul else None,
        "params": params, "trainable_params": trainable,
        "example_tokens": {"mean": round(float(np.mean(lengths)), 1), "std": round(float(np.std(lengths)), 1),
                           "distribution_mean": round(float(stats["mean"]), 1), "from": source},
        "plan": plan.to_dict() if plan else None, "projection": projection,
    }


def _auc_callback(lf: dict[str, Any], lf_args: dict[str, Any], mr, counts: dict[str, Any], make) -> list:
    """movierec's AUC callback on generated prompts, as many as an evaluation of the config `lf` scores (at
    most _n_bench_eval); none when the config does not evaluate. `lf_args`: the bench run's arguments."""
    from movierec.train.callbacks import ScoreCallback

    if str(arg(lf, "eval_strategy")) == "no" or not mr.auc_examples(counts["eval"] or 1):
        return []
    n_auc = min(mr.auc_examples(counts["eval"] or 4450), _n_bench_eval(mr.eval_auc_batch_size))
    prompts = make(n_auc, 2)["input_ids"]
    return [ScoreCallback(lf_args, mr, [p[:-ANSWER_TOKENS] for p in prompts],
                          np.random.default_rng(3).integers(0, 2, n_auc).tolist())]


def _bench_data(lf: dict[str, Any], stats: dict[str, Any], tokenizer, rows: int, n_eval: int, work: Path):
    """Generated train and eval examples of the drawn lengths, saved as LLaMA-Factory's tokenized data in
    work/data; returns (the example maker, the examples' token lengths, (examples, tokens) per batch row)."""
    from datasets import Dataset, DatasetDict

    cutoff = int(arg(lf, "cutoff_len"))

    def make(n: int, seed: int) -> dict[str, list]:
        return make_examples(n, stats, len(tokenizer), tokenizer.eos_token_id, cutoff, seed)

    if arg(lf, "neat_packing"):  # enough examples for `rows` packed sequences
        fits = max(int((cutoff - 1) / stats["mean"]), 1)
        train = pack_examples(make(int(rows * fits * 1.2) + 64, 0), lf, tokenizer)
        if len(train["input_ids"]) < rows:
            raise UserError(f"bench: packing gave {len(train['input_ids'])} sequences, {rows} needed")
        train = {k: v[:rows] for k, v in train.items()}
        # neat packing numbers the examples of a sequence 1, 2, ... in its attention mask (0: padding)
        lengths = [int(c) for mask in train["attention_mask"] for c in np.bincount(mask)[1:]]
        per_row = (len(lengths) / rows, sum(lengths) / rows)
        eval_data = pack_examples(make(n_eval, 1), lf, tokenizer)
    else:
        train = make(rows, 0)
        lengths = [len(x) for x in train["input_ids"]]
        per_row = (1.0, float(np.mean(lengths)))
        eval_data = make(n_eval, 1)
    DatasetDict({"train": Dataset.from_dict(train), "validation": Dataset.from_dict(eval_data)}).save_to_disk(
        work / "data")
    return make, lengths, per_row


def _projection(lf: dict[str, Any], counts: dict[str, Any], data: DatasetDir, mr, result: dict[str, Any]):
    """The dry run's plan for the prepared data, and the whole run's wall time at the measured rates."""
    from movierec.train.dryrun import time_estimate
    from movierec.train.plan import train_plan

    if not counts["train"]:
        return None, None
    plan = train_plan(lf, counts["train"], 1, data)
    plan = plan if counts["eval"] else plan.without_evaluations()
    projection = time_estimate(plan, result["examples_per_s"], counts["eval"], mr, result["eval"]["examples_per_s"],
                               result["auc"]["examples_per_s"] if result["auc"] else None)
    projection.update(n_train=counts["train"], n_eval=counts["eval"],
                      auc_examples_per_evaluation=mr.auc_examples(counts["eval"]))
    return plan, projection


def _levers(lf: dict[str, Any]) -> dict[str, Any]:
    """The profile's throughput levers, as the JSON reports them."""
    return {"packing": bool(arg(lf, "neat_packing")), "cutoff_len": int(arg(lf, "cutoff_len")),
            "quantization_bit": arg(lf, "quantization_bit"), "gradient_checkpointing": _checkpointing(lf),
            "enable_liger_kernel": bool(arg(lf, "enable_liger_kernel")), "use_unsloth": bool(arg(lf, "use_unsloth")),
            "torch_compile": compiles(lf),
            "torch_compile_mode": arg(lf, "torch_compile_mode"), "optim": str(arg(lf, "optim")),
            "logging_nan_inf_filter": arg(lf, "logging_nan_inf_filter"), "attention": str(arg(lf, "flash_attn"))}


def _checkpointing(lf: dict[str, Any]) -> bool | str:
    if lf.get("use_unsloth"):  # LLaMA-Factory hands unsloth use_gradient_checkpointing="unsloth" whatever is set
        return "unsloth (forced by LLaMA-Factory's use_unsloth)"
    return not lf.get("disable_gradient_checkpointing", False)


def _make_adapter(model_dir: Path, lf: dict[str, Any], out: Path) -> Path:
    """A LoRA adapter of the config's shape (random A, random small B) for the random model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, low_cpu_mem_usage=True)
    targets = sorted({name.split(".")[-1] for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and "lm_head" not in name})
    rank = int(arg(lf, "lora_rank"))
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=lora_alpha(lf), target_modules=targets,
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)  # a trained adapter is not zero
    peft_model.save_pretrained(out)
    return out


def run_scoring_bench(config: str | Path, overrides: list[str] | None = None, examples: int = 4450,
                      device: str = "auto", model_cache: str | Path | None = None) -> dict[str, Any]:
    """Seconds movierec's scorer takes for `examples` eval prompts, loaded and merged as `evaluate` does."""
    from movierec.evaluation.scoring import YesNoScorer, load_model_for_scoring

    if examples < 1:
        raise UserError("--examples: at least 1")
    lf, mr, device, _, data = _setup(config, overrides, device)
    stats, source = example_token_stats(data.path)
    cutoff = int(arg(lf, "cutoff_len"))
    batch = mr.eval_auc_batch_size
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
            "quantization_bit": arg(lf, "quantization_bit"), "seconds": round(seconds, 3),
            "examples_per_s": examples / seconds, "first_batch_seconds": round(first_s, 3),
            "load_and_merge_seconds": round(load_s, 3), "tokens_per_example": float(np.mean([len(p) for p in prompts])),
            "shared_prefix_tokens": SHARED_PREFIX_TOKENS, "peak_memory_gib": round(peak_gib, 3), "params": params,
            "example_tokens_from": source,
            "timing": "score_ids over all prompts after a first batch; tokenization and model loading excluded"}


def main(args) -> int:
    for option, path, want_dir in (("--json-out", args.json_out, False), ("--model-cache", args.model_cache, True)):
        if path and Path(path).exists() and Path(path).is_dir() != want_dir:  # checked before the minutes of work
            raise UserError(f"{option} {path}: is a {'file' if want_dir else 'folder'}; expected a "
                            f"{'folder' if want_dir else 'file name'}")
    if args.scoring:
        result = run_scoring_bench(args.config, args.override, args.examples, args.device, args.model_cache)
    else:
        result = run_bench(args.config, args.override, args.steps, args.device, args.model_cache)
    text = json.dumps(result, indent=2)
    if args.json_out:
        from movierec.folders.io import atomic_write_text

        atomic_write_text(Path(args.json_out), text + "\n")
    print(text)
    return 0
