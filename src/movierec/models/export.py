"""`movierec export`: a run's LoRA adapter merged into the unquantised base model, as a folder that
`transformers` loads on its own (no peft, no movierec): weights, the tokenizer training used (its chat
template set to the training prompt), a model card (README.md) and movierec_export.json.

QLoRA trains the adapter against a 4-bit base; as LLaMA-Factory advises, the merge goes into the base
loaded in full precision (bf16 on GPU, fp32 on CPU), never into 4-bit weights. P(Yes) of the merged
model therefore differs slightly from the 4-bit model `movierec evaluate` scores (the README gives the
difference measured in the tests). Everything is written into a hidden folder beside --out and renamed
into place at the end: an interrupted export leaves no half-written model.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.io import atomic_write_json, atomic_write_text
from movierec.folders.rundir import RunDir, expand
from movierec.folders.staging import staging, written_by
from movierec.train.config import arg

RECORD = "movierec_export.json"  # also what marks a folder as an export (--out may replace only those)
CARD = "README.md"
FORMAT = "movierec-export"
TEMPLATE_CHECKS = 64  # eval prompts on which the chat template must give the training tokens


def main(args) -> int:
    from movierec.device import resolve_device
    from movierec.evaluation.scoring import eval_records

    run = RunDir(args.run).require()
    out = expand(args.out)
    check_out(out, run)
    ckpt = pick_checkpoint(run, args.checkpoint)
    data = run.dataset(args.data)
    lf_args = {**run.lf_args(), "model_name_or_path": run.model_path()}
    records = eval_records(lf_args, data)
    device = resolve_device(args.device)
    print(f"exporting {ckpt.name} of {run.path} -> {out} (merged on {device})")
    with staging(out) as tmp, RunDir.reading(ckpt):
        tokens = save_tokenizer(ckpt, lf_args, records[:TEMPLATE_CHECKS], tmp)
        dtype = save_merged_model(lf_args, ckpt, device, tmp)
        record = export_record(run, ckpt, lf_args, device, dtype, tokens)
        atomic_write_text(tmp / CARD, model_card(out, run, data, record, records[0], tokens["example_prompt"]))
        atomic_write_json(tmp / RECORD, record)
    print(f"wrote {out}: load it with transformers' AutoModelForCausalLM / AutoTokenizer ({out / CARD})")
    return 0


# ---------------------------------------------------------------- checks (before anything is written)


def is_export(path: Path) -> bool:
    return written_by(path, RECORD, FORMAT)


def check_out(out: Path, run: RunDir) -> None:
    """UserError unless --out may be written: outside the run, and new, empty or a previous export."""
    real, run_real = out.resolve(), run.path.resolve()
    if real == run_real or real.is_relative_to(run_real):
        raise UserError(f"--out {out}: inside the run folder {run.path}; export to a folder of its own")
    if run_real.is_relative_to(real):
        raise UserError(f"--out {out}: holds the run folder {run.path}; export to a folder of its own")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; an export is a folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise UserError(f"--out {out}: not empty and not a movierec export (no {RECORD}); nothing was written: "
                        "pick another --out")
    parent = next(p for p in out.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write there ({parent} is not a writable folder)")


def pick_checkpoint(run: RunDir, which: str) -> Path:
    """best (the latest when the run recorded no best) | latest | checkpoint-N."""
    if which == "all":
        raise UserError("--checkpoint all: export takes one checkpoint (best, latest or checkpoint-N)")
    (ckpt,) = run.select(which)
    return ckpt


# ---------------------------------------------------------------- the model and tokenizer


def save_merged_model(lf_args: dict[str, Any], ckpt: Path, device: str, to: Path) -> str:
    """Base in full precision + adapter, merged (W + scaling * B @ A) and saved; returns the dtype's name."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    hub = {k: lf_args[k] for k in ("cache_dir", "trust_remote_code") if lf_args.get(k) is not None}
    if lf_args.get("model_revision"):
        hub["revision"] = lf_args["model_revision"]
    base = AutoModelForCausalLM.from_pretrained(lf_args["model_name_or_path"], dtype=dtype, device_map=device, **hub)
    model = PeftModel.from_pretrained(base, str(ckpt)).merge_and_unload()
    model.save_pretrained(to)
    return str(dtype).removeprefix("torch.")


def save_tokenizer(ckpt: Path, lf_args: dict[str, Any], records: list[dict], to: Path) -> dict[str, Any]:
    """The tokenizer the trainer saved in the checkpoint (eos/pad as LLaMA-Factory's template set them),
    with the training prompt as its chat template, checked to give the training tokens on `records`.
    Returns the answer token ids and one prompt as text."""
    from transformers import AutoTokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template

    if not (ckpt / "tokenizer_config.json").is_file():
        raise UserError(f"{ckpt}: has no saved tokenizer (tokenizer_config.json); export needs the one training used")
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    name = lf_args.get("template", "default")
    template = build_template(tokenizer, name, int(arg(lf_args, "cutoff_len")))
    tokenizer.chat_template = None  # the base model's own chat template is not the prompt training saw
    template.fix_jinja_template(tokenizer)
    tokenizer.padding_side = "left"  # for batched generation, as LLaMA-Factory's export sets it
    scorer = YesNoScorer(None, tokenizer, template)
    for record in records:
        if tokenizer.chat_template is None or chat_ids(tokenizer, record) != scorer.encode(record):
            raise UserError(f"template {name}: its prompt cannot be written as a chat template that tokenizes as "
                            "training did; export supports templates that can (such as qwen and smollm2)")
    tokenizer.save_pretrained(to)
    return {"yes_token_id": scorer.yes_id, "no_token_id": scorer.no_id, "checked_prompts": len(records),
            "example_prompt": tokenizer.decode(scorer.encode(records[0]))}


def chat_ids(tokenizer, record: dict[str, Any]) -> list[int]:
    """A prompt's ids through the chat template: the user turn is the instruction and input, one per line."""
    content = "\n".join(x for x in (record.get("instruction"), record.get("input")) if x)
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


# ---------------------------------------------------------------- the record and the model card


def export_record(run: RunDir, ckpt: Path, lf_args: dict[str, Any], device: str, dtype: str,
                  tokens: dict[str, Any]) -> dict[str, Any]:
    from movierec.train.record import git_revision, versions

    resolved = run.resolved()
    return {
        "format": FORMAT, "format_version": 1,
        "run": str(run.path), "checkpoint": ckpt.name, "step": int(ckpt.name.rsplit("-", 1)[1]),
        "base_model": lf_args["model_name_or_path"], "template": lf_args.get("template"),
        "cutoff_len": lf_args.get("cutoff_len"), "merged_on": device, "dtype": dtype,
        "answer_tokens": {"Yes": tokens["yes_token_id"], "No": tokens["no_token_id"]},
        "chat_template_checked_on_eval_prompts": tokens["checked_prompts"],
        "data_manifest_sha256": resolved.get("data_manifest_sha256"),
        "run_git_revision": resolved.get("git_revision"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "git_revision": git_revision(),
    }


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _metric(block: dict[str, Any], key: str) -> str:
    v, ci = block.get(key), block.get(f"{key}_ci95")
    if v is None:
        return "n/a"
    return f"{v:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and None not in ci else "")


def _evaluation(run: RunDir, ckpt: str) -> str:
    """The exported checkpoint's metrics from the run's metrics.json (as `movierec evaluate` wrote it)."""
    path = run.file(RunDir.METRICS)
    if not path.is_file():
        return f"Not evaluated: the run has no {RunDir.METRICS} (`movierec evaluate --run {run.path}`).\n"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None
    blocks = (m.get("metrics") or {}) if m.get("checkpoint") == ckpt else {}
    if not blocks and ckpt in (m.get("per_checkpoint") or {}):
        blocks = {"overall": m["per_checkpoint"][ckpt]}
    if not blocks:
        return f"{ckpt} was not evaluated ({path} scored {m.get('checkpoint')}).\n"
    rows = [f"| {group} | {_num(b.get('n'))} | {_metric(b, 'auc')} | {_metric(b, 'uauc')} | {_metric(b, 'log_loss')} |"
            for group, b in blocks.items() if group in ("overall", "warm", "cold") and b.get("n")]
    return (f"`movierec evaluate` on {_num(m.get('n'))} eval examples ({path}), scoring the **4-bit** base with the "
            "adapter as trained; this merged model's P(Yes) differ slightly (no 4-bit rounding of the base). "
            "UAUC: mean per-user AUC. Brackets: 95% bootstrap interval over users, where computed.\n\n"
            "| eval users | examples | AUC | UAUC | log loss |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def model_card(out: Path, run: RunDir, data: DatasetDir, record: dict[str, Any], example: dict[str, Any],
               prompt: str) -> str:
    lf, plan = run.lf_args(), run.plan()
    adapter = RunDir.adapter_config(run.path / record["checkpoint"])
    manifest, counts = data.manifest(), data.counts()
    cfg = manifest.get("config") or {}
    quant = (f"QLoRA: {lf['quantization_bit']}-bit {lf.get('quantization_type', 'nf4')} base "
             f"(double quantization {bool(lf.get('double_quantization'))})" if lf.get("quantization_bit")
             else "LoRA on the unquantised base")
    source = "synthetic (`movierec synth`)" if cfg.get("synth") else (cfg.get("url") or cfg.get("input"))
    state = run.trainer_state(run.path / record["checkpoint"])
    trained = state.get("epoch")
    hyper = [("learning rate", lf.get("learning_rate")), ("scheduler", lf.get("lr_scheduler_type")),
             ("warmup steps", plan and plan.warmup_steps),
             ("optimizer steps (planned)", plan and plan.total_optimizer_steps),
             ("epochs (configured)", lf.get("num_train_epochs")),
             (f"trained when exported ({record['checkpoint']})", f"step {_num(record.get('step'))}, epoch "
              + (f"{trained:.3g}" if isinstance(trained, (int, float)) and not isinstance(trained, bool)
                 else "unknown")),
             ("examples per step", plan and plan.examples_per_step),
             ("optimizer", lf.get("optim")), ("weight decay", lf.get("weight_decay")),
             ("max grad norm", lf.get("max_grad_norm")), ("cutoff_len (tokens)", lf.get("cutoff_len")),
             ("precision", "bf16" if lf.get("bf16") else "fp16" if lf.get("fp16") else "fp32"),
             ("seed", lf.get("seed"))]
    return _card_about(out, run, record, lf, adapter, quant, manifest, counts, cfg, source, data) + "".join(
        f"| {k} | {_num(v)} |\n" for k, v in hyper) + _card_usage(out, run, record, lf, example, prompt)


def _card_about(out: Path, run: RunDir, record: dict[str, Any], lf: dict[str, Any], adapter: dict[str, Any],
                quant: str, manifest: dict[str, Any], counts: dict[str, Any], cfg: dict[str, Any], source: str,
                data: DatasetDir) -> str:
    """The card down to the training table's header: what it is, base model, method, data."""
    from movierec.data import hybrid
    from movierec.data.layouts import RELEASES

    return f"""# {out.name}: a Yes/No movie recommender

Given a user's earlier ratings and a candidate movie, this causal LM answers "Yes" (the user will like it) or
"No"; P(Yes) from the two answers' logits ranks movies. Exported by `movierec export` from
`{run.path}` ({record['checkpoint']}): the LoRA adapter merged into the base model, so `transformers` alone
loads it (no peft, no movierec).

## Base model

`{record['base_model']}`, {record['dtype']} (merged on {record['merged_on']}).

## Method

{quant}, LoRA r={adapter.get('r')}, alpha={adapter.get('lora_alpha')}, dropout={adapter.get('lora_dropout')}, \
rsLoRA {bool(adapter.get('use_rslora'))}, on {', '.join(sorted(adapter.get('target_modules') or []))}; \
trained with LLaMA-Factory (`{lf.get('stage')}`, template `{record['template']}`). The adapter was merged into \
the base loaded in full precision ({record['dtype']}), not into 4-bit weights, as LLaMA-Factory advises for QLoRA.

## Data

MovieLens ratings, {RELEASES.get(manifest.get('layout'), manifest.get('layout'))} layout \
(`{manifest.get('layout')}`), from {source}: {_num(counts.get('ratings'))} ratings by {_num(counts.get('users'))} \
users of {_num(counts.get('movies'))} movies. Temporal split at {manifest.get('cutoff_utc')}: \
{_num(counts.get('train'))} training examples before it, {_num(counts.get('eval'))} eval examples at or after. \
Like = rating >= {cfg.get('like_threshold')}; a prompt shows {hybrid.describe(cfg)}. \
Prepared data `{data.path}` (manifest sha256 `{record['data_manifest_sha256']}`).

## Training

| hyperparameter | value |
|---|---|
"""


def _card_usage(out: Path, run: RunDir, record: dict[str, Any], lf: dict[str, Any], example: dict[str, Any],
                prompt: str) -> str:
    """The card from the checkpoint on: its evaluation, the prompt, a runnable P(Yes) snippet, the files."""
    yes, no = record["answer_tokens"]["Yes"], record["answer_tokens"]["No"]
    return f"""
## Checkpoint

`{record['checkpoint']}` (optimizer step {record['step']}) of the run.

## Evaluation

{_evaluation(run, record['checkpoint'])}
## Prompt and scoring

The tokenizer is the one training used; its chat template writes the training prompt (LLaMA-Factory's
`{record['template']}` template, its default system prompt included): `apply_chat_template` gave the training
tokens on {record['chat_template_checked_on_eval_prompts']} eval prompts at export. Training truncated prompts
longer than {_num(lf.get('cutoff_len'))} tokens. An eval prompt, as text:

```text
{prompt}
```

P(Yes) = softmax over the logits of "Yes" (token {yes}) and "No" (token {no}) at the first answer position,
i.e. the last prompt position:

```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = {str(out)!r}
INSTRUCTION = {example.get('instruction', '')!r}
YES, NO = {yes}, {no}  # the first token of each answer

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL).eval()


def p_yes(user_input: str) -> float:
    \"\"\"user_input: the ratings and the candidate, written as in the prompt above.\"\"\"
    messages = [{{"role": "user", "content": INSTRUCTION + "\\n" + user_input}}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device)).logits[0, -1]
    return torch.softmax(logits[[YES, NO]].float(), dim=-1)[0].item()
```

## Files

Model weights and config (`transformers`), tokenizer files, this card, and `{RECORD}` (run, checkpoint,
base model, answer token ids, package versions, time).
"""
