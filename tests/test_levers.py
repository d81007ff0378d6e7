"""Every throughput lever of the fast profiles, for real on CPU: packing, bf16 LoRA, optional packages,
step plans, and the benchmark driver that scripts/gpu_bench.sh runs."""

import json
import math
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, run_cli

from movierec.cli import main

FAST = "configs/qwen3_movielens_qlora_fast.yaml"
BF16_FAST = "configs/qwen3_movielens_lora_bf16_fast.yaml"
REFERENCE = "configs/qwen3_movielens_qlora.yaml"
IGNORE_INDEX = -100


# ---------------------------------------------------------------- packing (LLaMA-Factory's own code paths)


@pytest.fixture(scope="module")
def lf_model(tiny_model, prepared_data, tmp_path_factory):
    """Build datasets and collators the way LLaMA-Factory's SFT workflow does, around one tiny model."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    out = tmp_path_factory.mktemp("lf")

    def build(**extra):
        args = dict(model_name_or_path=str(tiny_model), template="qwen", cutoff_len=1024, stage="sft", do_train=True,
                    finetuning_type="lora", lora_target="all", dataset="movielens_qwen3_train",
                    dataset_dir=str(prepared_data), output_dir=str(out), report_to="none", overwrite_cache=True,
                    preprocessing_num_workers=1, max_samples=24, flash_attn="sdpa", **extra)
        model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
        tokenizer_module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        dataset = get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)["train_dataset"]
        if "model" not in state:  # the training model: LoRA on every linear layer, SDPA; eval() drops dropout
            torch.manual_seed(0)
            state["model"] = load_model(tokenizer_module["tokenizer"], model_args, finetuning_args, is_trainable=True)
            for name, p in state["model"].named_parameters():
                if "lora_B" in name:  # a trained adapter is not zero
                    torch.nn.init.normal_(p, std=0.02)
            state["model"].eval()
        model = state["model"]
        collator = SFTDataCollatorWith4DAttentionMask(
            template=template, model=model, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX,
            block_diag_attn=model_args.block_diag_attn, neat_packing=data_args.neat_packing,
            attn_implementation=model.config._attn_implementation,
            compute_dtype=model_args.compute_dtype or torch.float32,  # load_model sets it; the model is loaded once
            **tokenizer_module)
        return dataset, collator

    state: dict = {}
    return state, build


def _segments(row: dict) -> list[tuple[int, int]]:
    """(start, end) of each example in a neat-packed row: its attention mask numbers them 1, 2, ... (0: padding)."""
    mask = np.asarray(row["attention_mask"])
    return [(int(np.flatnonzero(mask == k)[0]), int(np.flatnonzero(mask == k)[-1]) + 1) for k in range(1, mask.max() + 1)]


def _forward(model, collator, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = collator([dict(r) for r in rows])
    with torch.no_grad():
        out = model(**batch)
    return out.loss, out.logits


def test_neat_packing_gives_the_loss_and_logits_of_unpacked_batches(lf_model):
    """Same 24 examples, packed (6 sequences of 1024 tokens, block-diagonal 4D mask, positions restarting per
    example) and unpacked (one padded batch): same mean loss and same logits at every labelled position.
    Tolerance 1e-5: fp32 on CPU, where only the summation order differs (different shapes and blocking;
    masked keys add exact zeros); a real leak or position error moves logits by O(0.1)."""
    state, build = lf_model
    packed, packed_collator = build(neat_packing=True)
    plain, plain_collator = build()
    model = state["model"]
    assert model.config._attn_implementation == "sdpa"
    assert len(packed) < len(plain) == 24 and sum(len(_segments(r)) for r in packed) == 24  # nothing dropped
    packed_loss, packed_logits = _forward(model, packed_collator, list(packed))
    plain_loss, plain_logits = _forward(model, plain_collator, list(plain))
    assert packed_collator([dict(packed[0])])["attention_mask"].dim() == 4  # the block-diagonal path, not a 2D mask
    assert packed_loss.item() == pytest.approx(plain_loss.item(), rel=1e-5)

    by_ids = {tuple(r["input_ids"]): i for i, r in enumerate(plain)}
    compared = 0
    for r, row in enumerate(packed):
        for start, end in _segments(row):
            i = by_ids[tuple(row["input_ids"][start:end])]
            answer = [t for t, label in enumerate(plain[i]["labels"]) if label != IGNORE_INDEX]
            # logits at position t predict label t + 1: compare the positions that predict the answer
            positions = [t - 1 for t in answer]
            torch.testing.assert_close(packed_logits[r, [start + t for t in positions]], plain_logits[i, positions],
                                       atol=1e-5, rtol=1e-5)
            compared += 1
    assert compared == 24


@pytest.mark.parametrize("neat", [True, False], ids=["neat_packing", "packing-cross-attention"])
def test_no_example_attends_to_another_in_a_packed_sequence(lf_model, neat):
    """Changing the tokens of one packed example moves its own logits and, with neat_packing, nobody else's.
    LLaMA-Factory's plain `packing` (which movierec refuses) is the control: there the later examples move."""
    state, build = lf_model
    packed, collator = build(neat_packing=True) if neat else build(packing=True)
    model = state["model"]
    row = dict(next(r for r in packed if len(_boundaries(r, neat)) >= 3))
    bounds = _boundaries(row, neat)
    _, before = _forward(model, collator, [row])
    (s1, e1) = bounds[1]
    changed = dict(row)
    changed["input_ids"] = list(row["input_ids"])
    rng = np.random.default_rng(0)
    changed["input_ids"][s1:e1 - 3] = rng.permutation(row["input_ids"][s1:e1 - 3]).tolist()  # its prompt, not its answer
    _, after = _forward(model, collator, [changed])
    assert (after[0, s1:e1] - before[0, s1:e1]).abs().max() > 1e-2  # the changed example sees its change
    others = [(s, e) for k, (s, e) in enumerate(bounds) if k != 1]
    moved = max((after[0, s:e] - before[0, s:e]).abs().max().item() for s, e in others)
    if neat:
        assert moved <= 1e-6  # masked keys contribute exact zeros (0.0 here); 1e-6 leaves room for kernel order
    else:
        assert moved > 1e-2  # cross-example attention: the next examples read example 1


def _boundaries(row: dict, neat: bool) -> list[tuple[int, int]]:
    if neat:
        return _segments(row)
    starts = [t for t, p in enumerate(row["position_ids"]) if p == 0]  # positions restart per example
    ends = starts[1:] + [len(row["position_ids"])]
    return [(s, e) for s, e in zip(starts, ends) if e - s > 1]  # padding tokens are each at position 0


def test_dry_run_packing_plan_matches_llamafactory_packing():
    """The dry run's packed-sequence count uses LLaMA-Factory's greedy knapsack on estimated lengths:
    on the same examples it gives the sequences LLaMA-Factory's packed processor makes."""
    from movierec.bench.inputs import make_examples, pack_examples
    from movierec.bench.lengths import ANSWER_TOKENS, default_lengths, pack
    from movierec.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    data = make_examples(1300, default_lengths(), len(tokenizer), tokenizer.eos_token_id, cutoff_len=2048)
    lf = {"cutoff_len": 300, "neat_packing": True}
    packed = pack_examples(data, lf, tokenizer)
    ours = pack([len(x) for x in data["input_ids"]], 300)  # examples of ~262 tokens: one per sequence, some dropped
    assert len(packed["input_ids"]) == len(ours)
    assert sorted(int(np.asarray(m).max()) for m in packed["attention_mask"]) == sorted(len(r) for r in ours)
    dropped = sum(len(x) > 299 for x in data["input_ids"])
    assert dropped > 0 and sum(len(r) for r in ours) == 1300 - dropped  # longer than cutoff_len - 1: dropped
    assert all(len(ids) == 300 for ids in packed["input_ids"]) and ANSWER_TOKENS == 3


# ---------------------------------------------------------------- both fast methods train and score


@pytest.mark.parametrize("config, quantized", [("configs/demo_tiny_fast.yaml", True),
                                               ("configs/demo_tiny_lora_bf16_fast.yaml", False)],
                         ids=["4bit", "bf16-lora"])
def test_fast_demo_profiles_train_and_score(config, quantized, tiny_model, prepared_data, tmp_path, capsys):
    out = tmp_path / "run"
    proc = run_cli(str(ROOT / "scripts/train_llamafactory.py"), "--config", config, "--device", "cpu",
                   "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}",
                   "--override", f"output_dir={out}", "--override", "max_steps=4", "--override", "save_steps=2",
                   "--override", "eval_steps=2", "--override", "per_device_train_batch_size=8", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lf = yaml.safe_load((out / "llamafactory_train.yaml").read_text())
    assert lf.get("quantization_bit") == (4 if quantized else None) and lf["disable_gradient_checkpointing"] is True
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [line["current_steps"] for line in log if "eval_auc" in line][:2] == [2, 4]
    assert main(["evaluate", "--run", str(out), "--checkpoint", "latest", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 80 and 0 <= metrics["metrics"]["overall"]["auc"] <= 1

    from movierec.evaluation.scoring import load_model_for_scoring

    model, _, _ = load_model_for_scoring(lf, out / "checkpoint-4", "cpu")
    assert not any(type(m).__name__ == "Linear4bit" or hasattr(m, "lora_A") for m in model.modules())  # merged


# ---------------------------------------------------------------- optional packages and unsafe packing


@pytest.mark.parametrize("override, package", [("enable_liger_kernel=true", "pip install liger-kernel"),
                                               ("flash_attn=fa2", "pip install flash-attn")])
def test_missing_optional_package_stops_before_any_model_loads(override, package, monkeypatch, tmp_path, capsys,
                                                              prepared_data):
    import movierec.train.checks

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(movierec.train.checks, "installed", lambda module: module not in ("liger_kernel", "flash_attn"))
    out = tmp_path / "out"
    rc = main(["train", "--config", FAST, "--device", "cpu", "--override", override, "--override", f"output_dir={out}",
               "--override", "answer_logits_only=false",  # the fast profile's, which Liger replaces (tested below)
               "--override", f"dataset_dir={prepared_data}",
               "--override", f"model_name_or_path={_not_a_model(tmp_path)}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {override.split('=')[0]}: ") and package in err[0] and "not installed" in err[0]
    assert not out.exists()  # stopped at validation: no run folder, no model load


def test_installed_optional_packages_pass_validation(monkeypatch):
    import movierec.train.checks
    from movierec.train.config import validate
    from movierec.train.schema import load_yaml

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(movierec.train.checks, "installed", lambda module: True)
    cfg = load_yaml(ROOT / FAST)
    cfg.update(enable_liger_kernel=True, flash_attn="fa2", answer_logits_only=False)  # Liger replaces the latter
    lf = validate(cfg, data_required=False).llamafactory  # the reference data need not be prepared here
    assert lf["enable_liger_kernel"] is True and lf["flash_attn"] == "fa2"


@pytest.mark.parametrize("overrides, message", [
    (["packing=true"], "packing: true lets the examples packed into one sequence attend to each other"),
    (["neat_packing=true", "flash_attn=fa2"], "neat_packing: with flash_attn fa2"),
])
def test_unsafe_packing_is_refused(overrides, message, monkeypatch, capsys):
    import movierec.train.checks

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(movierec.train.checks, "installed", lambda module: True)
    args = [x for o in overrides for x in ("--override", o)]
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", *args]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: " + message)


# ---------------------------------------------------------------- step plans and projections


@pytest.mark.parametrize("config", [FAST, BF16_FAST])
def test_dry_run_prints_the_fast_profiles_step_plan(config, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["train", "--config", config, "--dry-run", "--device", "cuda", "--rate", "300"]) == 0
    out = capsys.readouterr().out
    # 78,271 examples / 32 -> 2,446 steps per epoch; 3 epochs; warmup 3% of 7,338
    assert "total optimizer steps 7,338, warmup steps 221, steps per epoch 2,446, examples per step 32" in out
    # eval_steps 0.2 -> every ceil(0.2 * 7,338) = 1,468 steps: 4 times, then the final evaluation
    assert "evaluations: 5 (every 1,468 steps, and after the last), each: loss over 4,450 eval examples + AUC over 4,450" in out
    assert "time at 300 examples/s" in out


def test_dry_run_plan_with_packing(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", "--override", "neat_packing=true",
                 "--override", "cutoff_len=1024", "--override", "per_device_train_batch_size=8"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("packing: ~"))
    sequences = int(line.split("~")[1].split()[0].replace(",", ""))
    assert 78_271 / 4 < sequences < 78_271 / 3  # 3 or 4 examples of ~262 tokens fit in 1,023 tokens
    steps = next(x for x in out.splitlines() if x.startswith("steps: "))
    assert f"steps per epoch {math.ceil(sequences / 8):,}" in steps


def test_projection_counts_every_evaluation():
    from movierec.train.config import MovierecArguments
    from movierec.train.dryrun import time_estimate
    from movierec.train.plan import train_plan as estimate_steps

    lf = {"per_device_train_batch_size": 32, "num_train_epochs": 3.0, "warmup_ratio": 0.03, "eval_strategy": "steps",
          "eval_steps": 0.2}
    plan = estimate_steps(lf, 78_271)
    t = time_estimate(plan, rate=400.0, n_eval=4450, mr=MovierecArguments(eval_auc=True, eval_auc_samples=1000),
                      eval_rate=1000.0, auc_rate=2000.0)
    assert t["evaluations"] == 5 and t["seconds_per_evaluation"] == pytest.approx(4450 / 1000 + 1000 / 2000)
    assert t["train_seconds"] == pytest.approx(7338 * 32 / 400)
    assert t["eval_fraction"] == pytest.approx(t["eval_seconds"] / t["total_seconds"])
    reference = {"per_device_train_batch_size": 1, "num_train_epochs": 3.0, "eval_strategy": "steps", "eval_steps": 200}
    assert time_estimate(estimate_steps(reference, 78_271), 2.2, 4450, MovierecArguments(eval_auc=False))[
        "evaluations"] == 234_813 // 200 + 1


# ---------------------------------------------------------------- the GPU check's Python side, on CPU


def test_gpu_bench_driver_on_cpu(tiny_model, tmp_path):
    """scripts/bench_profiles.py as scripts/gpu_bench.sh runs it, on the tiny model: every part in its own
    process, one JSON with rates, evaluation rates, plans, projections, scoring and the targets; a part that
    fails is reported under `errors` with its last line, the others still run; GPU-only rows are listed."""
    proc = run_cli(str(ROOT / "scripts/bench_profiles.py"), "--reference", "configs/demo_tiny.yaml",
                   "--fast", "configs/demo_tiny_fast.yaml", "--fast", "configs/no-such-profile.yaml",
                   "--scoring", "--scoring-examples", "300", "--packing-variant", "--device", "cpu",
                   "--steps", "3", "--reference-steps", "3", "--override", f"model_name_or_path={tiny_model}",
                   "--override", "per_device_train_batch_size=8", "--override", "per_device_eval_batch_size=8",
                   "--override", "eval_auc_batch_size=8", "--work", str(tmp_path),  # 128 eval examples
                   "--skip", "demo_tiny_fast+compile+buckets", cwd=tmp_path)  # compiling: its own test below
    assert proc.returncode == 1, proc.stderr[-3000:]  # a required part failed
    report = json.loads(proc.stdout)
    error = report["errors"].pop("no-such-profile")
    assert report["errors"] == {} and error.startswith("exit code 2") and "config file not found" in error
    assert report["skipped"] == ["demo_tiny_fast+compile+buckets: --skip"]
    profiles = report["profiles"]
    # (the bf16 profile's own part is left out to keep the test short: test_fast_demo_profiles_train_and_score
    # trains it)
    assert set(profiles) == {"reference", "demo_tiny_fast", "demo_tiny_fast+packing", "demo_tiny_fast+host_sync_levers",
                             "demo_tiny_fast-answer_logits"}
    assert set(report["not_measured"]) == {"demo_tiny_fast+unsloth", "demo_tiny_fast+liger",
                                           "demo_tiny_fast+liger+batch128", "demo_tiny_fast+compile",
                                           "demo_tiny_fast+cudagraphs"}
    assert profiles["demo_tiny_fast-answer_logits"]["answer_logits_only"] is False
    assert profiles["demo_tiny_fast"]["answer_logits_only"] is True
    levers = profiles["demo_tiny_fast+host_sync_levers"]
    assert levers["optim"] == "adamw_torch_fused" and levers["logging_nan_inf_filter"] is False
    ref, fast, packed = profiles["reference"], profiles["demo_tiny_fast"], profiles["demo_tiny_fast+packing"]
    assert ref["per_device_train_batch_size"] == 1 and ref["gradient_checkpointing"] is True
    assert fast["per_device_train_batch_size"] == 8 and fast["gradient_checkpointing"] is False
    assert fast["quantization_bit"] == 4
    for p in profiles.values():
        assert p["examples_per_s"] > 0 and 240 < p["tokens_per_example"] < 290
        assert math.isfinite(p["first_loss"]) and math.isfinite(p["last_loss"]) and p["step_seconds_p90"] > 0
        assert 0 < p["train_peak_memory_gib"] <= p["peak_memory_gib"]
        assert p["eval"]["examples_per_s"] > 0 and p["auc"]["examples_per_s"] > 0 and p["flops_per_token"] > 0
        assert p["projection"]["n_train"] == 4000 and p["projection"]["evaluations"] == p["plan"]["evaluations"]
    assert packed["packing"] is True and packed["plan"]["packing"]["sequences"] < 4000 / 3
    assert report["ratios"]["demo_tiny_fast"]["examples_per_s"] == pytest.approx(
        fast["examples_per_s"] / ref["examples_per_s"])
    assert report["scoring"]["examples"] == 300 and report["scoring"]["seconds"] > 0
    assert set(report["targets"]) >= {"thresholds", "demo_tiny_fast", "scoring"}
    assert json.loads((tmp_path / "bench.json").read_text())["profiles"].keys() == profiles.keys()


def _not_a_model(tmp_path):
    """A folder that holds no model: validation must stop before anything tries to load it."""
    folder = tmp_path / "not-a-model"
    folder.mkdir(exist_ok=True)
    return folder


# ---------------------------------------------------------------- answer_logits_only


@pytest.mark.parametrize("neat", [False, True], ids=["padded", "neat_packing"])
def test_answer_logits_only_gives_the_same_loss_and_gradients(lf_model, neat):
    """The hook on real LLaMA-Factory batches (24 real prompts, right-padded or neat-packed): the LM head runs
    only at the positions that predict a labelled token, and the loss and every LoRA gradient equal the full
    computation's (fp32 on CPU; only the summation order differs). A missed or shifted position would change
    the loss by O(0.1)."""
    from movierec.train import answer_logits

    state, build = lf_model
    dataset, collator = build(neat_packing=neat)
    model = state["model"]
    batch = collator([dict(r) for r in dataset])

    def loss_and_grads():
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full, full_grads = loss_and_grads()
    handle = answer_logits.install(model)
    try:
        kept, kept_grads = loss_and_grads()
    finally:
        handle.remove()
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    positions = int(answer_logits.answer_positions(batch["labels"]).numel())
    assert full.logits.shape[1] == batch["input_ids"].shape[1] > kept.logits.shape[1] == positions
    assert positions <= labelled and positions < batch["input_ids"].shape[1] // 2  # answers: a few tokens per prompt
    assert kept.loss.item() == pytest.approx(full.loss.item(), rel=1e-5)
    assert full_grads.keys() == kept_grads.keys() and len(full_grads) > 0
    for name, grad in full_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    assert model(**batch).logits.shape == full.logits.shape  # removed: the full logits again


@pytest.mark.parametrize("clash", ["enable_liger_kernel=true", "use_unsloth=true", "compute_accuracy=true"])
def test_answer_logits_only_refuses_what_would_read_every_logit(clash, monkeypatch, capsys):
    monkeypatch.setattr("movierec.train.checks.installed", lambda module: True)
    rc = main(["train", "--config", FAST, "--dry-run", "--device", "cuda", "--override", "answer_logits_only=true",
               "--override", clash])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: answer_logits_only: true cannot go with " + clash.split("=")[0]), err


# ---------------------------------------------------------------- shape_buckets (static shapes for torch.compile)


@pytest.mark.parametrize("answer_only", [False, True], ids=["all_logits", "answer_logits_only"])
def test_shape_buckets_give_the_same_loss_and_gradients(lf_model, answer_only):
    """The padding hook on a real LLaMA-Factory batch that is short of rows (the last batch of an epoch): rows
    and length padded to the full row count and a multiple of 64, alone and under answer_logits_only (whose
    positions are padded too); the loss and every LoRA gradient equal the unpadded batch's. A padded position
    that counted would change the loss's normaliser; a fully masked padded row would make it nan."""
    from movierec.train import answer_logits, static_shapes

    state, build = lf_model
    dataset, collator = build()
    model = state["model"]
    rows = [dict(r) for r in dataset]
    full, short = collator([dict(r) for r in rows]), collator([dict(r) for r in rows[:19]])

    def loss_and_grads(batch):
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, plain_grads = loss_and_grads(short)
    handles = [static_shapes.install(model, 64)] + ([answer_logits.install(model)] if answer_only else [])
    try:
        model(**full)  # the largest batch so far: 24 rows
        padded, padded_grads = loss_and_grads(short)
    finally:
        for handle in handles:
            handle.remove()
    length = short["input_ids"].shape[1]
    assert length % 64 != 0  # the test pads for real
    assert padded.logits.shape[0] == 24 and padded.logits.shape[1] % 64 == 0
    assert padded.logits.shape[1] == (static_shapes.bucket(length, 64) if not answer_only else 64)
    assert math.isfinite(padded.loss.item()) and padded.loss.item() == pytest.approx(plain.loss.item(), rel=1e-5)
    assert plain_grads.keys() == padded_grads.keys() and len(plain_grads) > 0
    for name, grad in plain_grads.items():
        torch.testing.assert_close(padded_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_compiled_training_sees_only_bucketed_shapes(tiny_model, prepared_data, tmp_path, monkeypatch, capsys):
    """A real LLaMA-Factory run with torch_compile and shape_buckets (the fast demo profile, answer_logits_only
    on, 4-bit): every batch reaches the compiled model as 8 rows of a multiple of 64 tokens, dynamo compiles one
    graph per padded shape, and training ends with finite losses."""
    import torch._dynamo.utils

    from movierec.train import static_shapes

    shapes = []
    pad_batch = static_shapes.pad_batch

    def recording(kwargs, multiple, rows):
        out = pad_batch(kwargs, multiple, rows)
        shapes.append((tuple(kwargs["input_ids"].shape), tuple(out["input_ids"].shape)))
        return out

    monkeypatch.setattr(static_shapes, "pad_batch", recording)
    monkeypatch.delenv("ACCELERATE_DYNAMO_USE_DYNAMIC", raising=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / "run"
    try:
        rc = main(["train", "--config", "configs/demo_tiny_fast.yaml", "--device", "cpu", "--override",
                   f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}", "--override",
                   f"output_dir={out}", "--override", "max_steps=4", "--override", "eval_strategy=no", "--override",
                   "save_steps=4", "--override", "logging_steps=1", "--override", "per_device_train_batch_size=8",
                   "--override", "torch_compile=true",
                   "--override", "shape_buckets=64"])
        left = [k for k in os.environ if k.startswith("ACCELERATE_DYNAMO_")]  # before the clean-up below
        frames = dict(torch._dynamo.utils.counters["frames"])
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
        monkeypatch.delenv("ACCELERATE_DYNAMO_USE_DYNAMIC", raising=False)  # set by the run for its Trainer
    assert rc == 0, capsys.readouterr().err[-3000:]
    # the compile settings transformers puts in the environment do not outlive the run (a later training in
    # this process, or a child process, would compile too)
    assert left == []
    assert len(shapes) == 4 and any(before != after for before, after in shapes)
    assert all(rows == 8 and length % 64 == 0 for _, (rows, length) in shapes), shapes
    # compiled, not run eagerly: one graph per padded shape, none per raw batch shape or per count of answer
    # positions (the hooks run outside the graph)
    padded = {after for _, after in shapes}
    assert frames.get("ok", 0) > 0 and graphs == len(padded), (frames, graphs, shapes)
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in log if "loss" in line]
    assert losses and all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("overrides, message", [
    (["shape_buckets=12"], "shape_buckets: must be a multiple of 8 tokens"),
    (["shape_buckets=64", "torch_compile=true", "neat_packing=true"], "shape_buckets: cannot go with neat_packing"),
    (["shape_buckets=4096", "torch_compile=true"], "shape_buckets: 4096 is longer than cutoff_len (2048)"),
    (["shape_buckets=64", "torch_compile=true", "compute_accuracy=true", "answer_logits_only=false"],
     "shape_buckets: cannot go with compute_accuracy"),
])
def test_shape_buckets_refusals(overrides, message, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = [x for o in overrides for x in ("--override", o)]
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", *args]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: " + message), err


def test_shape_buckets_without_compile_warns(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", "--override", "shape_buckets=64"]) == 0
    assert "warning: shape_buckets: without torch_compile: true it only adds padding" in capsys.readouterr().err
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", "--override", "shape_buckets=64",
                 "--override", "torch_compile_mode=reduce-overhead"]) == 0
    assert "shape_buckets" not in capsys.readouterr().err


def test_cuda_graphs_need_a_gpu_and_buckets(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    graphs = ["--override", "torch_compile_mode=reduce-overhead"]
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cpu", *graphs, "--override",
                 "optim=adamw_torch"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert err == ["error: torch_compile_mode: reduce-overhead replays CUDA graphs, which need --device cuda; on cpu "
                   "use torch_compile: true without a mode"]
    assert main(["train", "--config", FAST, "--dry-run", "--device", "cuda", *graphs]) == 0
    assert "warning: torch_compile_mode: reduce-overhead records a CUDA graph for every batch shape" in \
        capsys.readouterr().err
    # validation builds transformers' TrainingArguments, which put the compile mode in the environment: gone after
    assert not [k for k in os.environ if k.startswith("ACCELERATE_DYNAMO_")]


def test_bench_driver_refuses_an_unknown_or_required_skip(tmp_path):
    for part, why in [("bogus", "no such part (parts: reference, demo_tiny_fast, "),
                      ("demo_tiny_fast", "a required part")]:
        proc = run_cli(str(ROOT / "scripts/bench_profiles.py"), "--reference", "configs/demo_tiny.yaml", "--fast",
                       "configs/demo_tiny_fast.yaml", "--device", "cpu", "--skip", part, "--work", str(tmp_path / "w"),
                       cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: --skip {part}: {why}"), proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stdout == "" and not (tmp_path / "w").exists()
