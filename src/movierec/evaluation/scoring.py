"""Yes/No scoring shared by `evaluate`, the training callback and `recommend`.

P(Yes) = softmax over the "Yes" and "No" logits at the first answer position, from one forward
pass per batch: prompts are tokenised exactly as LLaMA-Factory's supervised preprocessing
tokenises them for training (same template, same truncation), batches are length-sorted and
left-padded with explicit position ids, and only the last position's logits are computed. Shared
prefixes are computed once: the prompts' common prefix always, and per group (a ranking list, a
user's candidates) the group's own, which holds the user's history; on a GPU a group's candidates
are packed into rows behind it instead.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.train.config import arg

# Grouped scoring packs a group's candidates into rows of at most this many tokens (the attention mask of
# a row is quadratic in its length), and a forward takes about batch_size x PACK_TOKENS_PER_PROMPT tokens
# (a candidate's own tokens are a tenth of a full prompt's, so a batch goes further than batch_size prompts).
PACK_ROW_TOKENS = 1024
PACK_TOKENS_PER_PROMPT = 256


def build_template(tokenizer, template: str, cutoff_len: int = 2048):
    """LLaMA-Factory's template object (also fixes the tokenizer's eos/pad as training did)."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    return get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template, cutoff_len=cutoff_len))


class YesNoScorer:
    """Scores alpaca records (instruction/input) with a causal LM: returns P(Yes) per record."""

    def __init__(self, model, tokenizer, template, cutoff_len: int = 2048, batch_size: int = 32,
                 packing: bool | None = None):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.cutoff_len, self.batch_size, self.packing = cutoff_len, batch_size, packing
        self.yes_id = self._answer_token("Yes")
        self.no_id = self._answer_token("No")
        if self.yes_id == self.no_id:  # P(Yes) reads the first answer token: it must tell the answers apart
            raise UserError(f"this tokenizer and template start both answers with token {self.yes_id}: "
                            "P(Yes) cannot be read from the first answer position")

    def _answer_token(self, answer: str) -> int:
        """The first token training labels for `answer`, from the template (never a fixed id: each
        tokenizer has its own: SmolLM2's are 10539 and 5230)."""
        messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": answer}]
        _, answer_ids = self.template.encode_multiturn(self.tokenizer, messages)[0]
        return answer_ids[0]

    def encode(self, record: dict[str, Any]) -> list[int]:
        """Prompt token ids exactly as LLaMA-Factory's supervised preprocessing builds them."""
        from llamafactory.data.data_utils import Role
        from llamafactory.data.processor.processor_utils import infer_seqlen

        content = "\n".join(x for x in (record.get("instruction"), record.get("input")) if x)
        messages = [{"role": Role.USER.value, "content": content},
                    {"role": Role.ASSISTANT.value, "content": record.get("output") or "Yes"}]
        source_ids, target_ids = self.template.encode_multiturn(self.tokenizer, messages, record.get("system"))[0]
        source_len, _ = infer_seqlen(len(source_ids), len(target_ids), self.cutoff_len)
        return source_ids[:source_len]

    def encode_many(self, records: list[dict[str, Any]]) -> list[list[int]]:
        """`encode` for many records, with one batched tokenizer call instead of three per record.

        The template runs twice over a stand-in tokenizer: first to collect every text it would
        tokenize, then to hand back the ids of one batched call; ids are identical to `encode`'s.
        """
        real = self.tokenizer
        texts: dict[str, list[int] | None] = {}
        collecting = _RecordingTokenizer(real, texts)
        self.tokenizer = collecting
        try:
            for record in records:
                self.encode(record)
            keys = list(texts)
            for key, ids in zip(keys, real(keys, add_special_tokens=False)["input_ids"] if keys else []):
                texts[key] = ids
            collecting.replay = True
            return [self.encode(record) for record in records]
        finally:
            self.tokenizer = real

    def score_ids(self, prompts: list[list[int]], progress: bool = False,
                  groups: Sequence[Hashable] | None = None) -> np.ndarray:
        """P(Yes) per prompt.

        The prompts' common prefix (system prompt, instruction, headings) is run once and its KV cache
        reused by every batch; batches are length-sorted and left-padded. With `groups` (a key per prompt:
        a ranking list, a user's candidates), each group's own longer common prefix (the user's history) is
        run once more, from that cache, and reused by the group's batches; or, when `self.packing` says so,
        each group is packed into rows (see `_score_packed`).
        """
        import torch

        out = np.empty(len(prompts), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                if groups is not None and self._packs():
                    self._score_packed(prompts, groups, out, progress)
                else:
                    self._score_cached(prompts, groups, out, progress)
        finally:
            self.model.train(was_training)
        return out

    def _packs(self) -> bool:
        """Pack groups into rows? `packing` None: on a GPU, where a forward's cost is mostly the host's and
        packing runs a list in a fraction of one; on a CPU the per-group cache computes fewer FLOPs and wins
        (docs/throughput.md)."""
        if not _packable(self.model):
            return False
        return next(self.model.parameters()).device.type != "cpu" if self.packing is None else self.packing

    def _score_cached(self, prompts: list[list[int]], groups: Sequence[Hashable] | None, out: np.ndarray,
                      progress: bool) -> None:
        """The global prefix's cache, and each group's (when `groups`), reused by length-sorted batches."""
        from tqdm.auto import tqdm

        keys = groups if groups is not None else [None] * len(prompts)
        members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            members.setdefault(key, []).append(i)
        global_len = _common_prefix_len(prompts)
        device = next(self.model.parameters()).device
        n_batches = sum(-(-len(idx) // self.batch_size) for idx in members.values())
        # disable=None: a bar on a terminal only (a log file would get thousands of redraws)
        with tqdm(total=n_batches, desc="scoring", unit="batch", disable=None if progress else True) as bar:
            global_cache = self._extend(None, prompts[0][:global_len], 0, device) if global_len else None
            for idx in members.values():
                group = [prompts[i] for i in idx]
                group_len = _common_prefix_len(group, minimum=global_len + 1) if groups is not None else 0
                cache, prefix_len = global_cache, global_len
                if group_len > global_len:
                    cache = self._extend(global_cache, group[0][global_len:group_len], global_len, device)
                    prefix_len = group_len
                order = np.array(idx)[np.argsort([len(p) for p in group], kind="stable")[::-1]]  # longest first
                for start in range(0, len(order), self.batch_size):
                    batch = order[start:start + self.batch_size]
                    out[batch] = self._score_batch([prompts[i][prefix_len:] for i in batch], prefix_len, cache,
                                                   device)
                    bar.update(1)

    def _score_packed(self, prompts: list[list[int]], groups: Sequence[Hashable], out: np.ndarray,
                      progress: bool) -> None:
        """Grouped scoring: a row holds a group's common prefix once and then its candidates' own tokens.

        Each candidate's tokens sit at the positions they have in its full prompt and attend to the prefix
        and to themselves, never to another candidate (a 4D mask), so a row computes exactly what one
        forward per prompt would. A long group spreads over several rows (PACK_ROW_TOKENS each), rows of
        similar length share a forward (about batch_size x PACK_TOKENS_PER_PROMPT tokens), and the LM
        head computes only the Yes and No logits, at each candidate's last token.
        """
        import torch
        from tqdm.auto import tqdm

        members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(groups):
            members.setdefault(key, []).append(i)
        rows = []  # (prefix ids, [prompt index, ...])
        for idx in members.values():
            prefix = _common_prefix_len([prompts[i] for i in idx], minimum=1)
            row, length = [], prefix
            for i in idx:
                if row and length + len(prompts[i]) - prefix > PACK_ROW_TOKENS:
                    rows.append((prefix, row))
                    row, length = [], prefix
                row.append(i)
                length += len(prompts[i]) - prefix
            rows.append((prefix, row))
        lengths = [prefix + sum(len(prompts[i]) - prefix for i in row) for prefix, row in rows]
        order = np.argsort(lengths, kind="stable")[::-1]
        budget = self.batch_size * PACK_TOKENS_PER_PROMPT
        batches, start = [], 0
        while start < len(order):
            size = max(1, budget // lengths[order[start]])  # the longest row of the batch comes first
            batches.append([rows[j] for j in order[start:start + size]])
            start += size
        device = next(self.model.parameters()).device
        with _answer_head(self.model, [self.yes_id, self.no_id]):
            for batch in tqdm(batches, desc="scoring", unit="batch", disable=None if progress else True):
                index, probs = self._forward_packed(prompts, batch, device)
                out[index] = probs

    def _forward_packed(self, prompts, batch, device) -> tuple[np.ndarray, np.ndarray]:
        """One forward over packed rows: (prompt indices, their P(Yes))."""
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(prefix + sum(len(prompts[i]) - prefix for i in row) for prefix, row in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        segment = torch.full((len(batch), width), -1, dtype=torch.long)  # 0: prefix, k: candidate k, -1: pad
        rows, ends, index = [], [], []
        for r, (prefix, row) in enumerate(batch):
            first = prompts[row[0]]
            ids[r, :prefix] = torch.tensor(first[:prefix])
            positions[r, :prefix] = torch.arange(prefix)
            segment[r, :prefix] = 0
            at = prefix
            for k, i in enumerate(row, start=1):
                own = prompts[i][prefix:]
                ids[r, at:at + len(own)] = torch.tensor(own)
                positions[r, at:at + len(own)] = torch.arange(prefix, prefix + len(own))
                segment[r, at:at + len(own)] = k
                at += len(own)
                rows.append(r)
                ends.append(at - 1)
                index.append(i)
        key, query = segment[:, None, :], segment[:, :, None]
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        allowed = causal & (key >= 0) & ((key == 0) | (key == query))
        allowed |= torch.eye(width, dtype=torch.bool)  # a pad position attends to itself: no empty row
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), use_cache=False).logits
        pair = logits[torch.tensor(rows, device=device), torch.tensor(ends, device=device)].float()
        return np.array(index), torch.softmax(pair, dim=-1)[:, 0].cpu().numpy()

    def _extend(self, cache, ids: list[int], start: int, device):
        """The KV cache of `ids` at positions start.. after `cache` (None: from position 0); `cache` is kept."""
        import torch

        cache = copy.deepcopy(cache) if cache is not None else None
        positions = torch.arange(start, start + len(ids), device=device)[None]
        return self.model(input_ids=torch.tensor([ids], device=device), position_ids=positions, past_key_values=cache,
                          use_cache=True, logits_to_keep=1).past_key_values

    def _score_batch(self, suffixes: list[list[int]], prefix_len: int, prefix_cache, device) -> np.ndarray:
        """P(Yes) of each prefix + suffix, the suffixes left-padded after the (cached) prefix."""
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(x) for x in suffixes)
        ids = torch.full((len(suffixes), width), pad, dtype=torch.long)
        mask = torch.zeros((len(suffixes), prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for row, suffix in enumerate(suffixes):  # left padding: the last position is the answer's
            ids[row, width - len(suffix):] = torch.tensor(suffix)
            mask[row, prefix_len + width - len(suffix):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_len:]  # as without padding
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(suffixes))
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), past_key_values=cache,
                            use_cache=cache is not None, logits_to_keep=1).logits[:, -1, :]
        pair = logits[:, [self.yes_id, self.no_id]].float()
        return torch.softmax(pair, dim=-1)[:, 0].cpu().numpy()

    def score(self, records: Iterable[dict[str, Any]], progress: bool = False,
              group_by: str | None = None) -> np.ndarray:
        """P(Yes) per record; `group_by` names the field whose records share a prompt prefix (see score_ids)."""
        records = list(records)
        groups = [r[group_by] for r in records] if group_by else None
        return self.score_ids(self.encode_many(records), progress=progress, groups=groups)


class _RecordingTokenizer:
    """Stands in for a tokenizer inside LLaMA-Factory's template: records, then replays, `encode`."""

    def __init__(self, tokenizer, texts: dict[str, list[int] | None]):
        self._tokenizer, self._texts, self.replay = tokenizer, texts, False

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs) -> list[int]:
        if add_special_tokens or kwargs:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens, **kwargs)
        if self.replay:
            return list(self._texts[text])
        self._texts.setdefault(text, None)
        return []

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


def _packable(model) -> bool:
    """Packed rows need an attention that takes a 4D mask and a plain linear LM head."""
    import torch

    attention = getattr(model.config, "_attn_implementation", None)
    return attention in ("sdpa", "eager") and isinstance(model.get_output_embeddings(), torch.nn.Linear)


@contextlib.contextmanager
def _answer_head(model, token_ids: list[int]):
    """The LM head cut to the rows of `token_ids` while the block runs (logits[..., k] is token_ids[k]):
    a packed row reads hundreds of positions, and the full vocabulary at each would dwarf the model."""
    import torch

    head = model.get_output_embeddings()
    slim = torch.nn.Linear(head.in_features, len(token_ids), bias=head.bias is not None,
                           device=head.weight.device, dtype=head.weight.dtype)
    slim.weight.data = head.weight.data[token_ids]
    if head.bias is not None:
        slim.bias.data = head.bias.data[token_ids]
    model.set_output_embeddings(slim)
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def _common_prefix_len(prompts: list[list[int]], minimum: int = 8) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (0 if short)."""
    if len(prompts) < 2:
        return 0
    first = np.array(prompts[0])
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        diff = np.flatnonzero(first[:n] != np.array(p[:n]))
        n = int(diff[0]) if diff.size else n
    return n if n >= minimum else 0


def merge_for_scoring(model) -> int:
    """Fold each LoRA layer and its 4-bit base into one plain Linear, for inference only.

    The base weight is dequantized exactly as every 4-bit forward dequantizes it (to the compute
    dtype), then W + scaling * B @ A is stored, as LLaMA-Factory's export merges adapters. Scores
    equal the unmerged model's up to float rounding (~1e-7); scoring stops paying for
    dequantization and the separate adapter matmuls on every batch. Returns the layers merged.
    """
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from bitsandbytes.nn import Linear4bit

    merged = 0
    for name, module in list(model.named_modules()):
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "lora_A") or getattr(module, "use_dora", {}).get("default"):
            continue
        if isinstance(base, Linear4bit):
            dtype = base.compute_dtype or torch.float32
            weight = dequantize_4bit(base.weight.data, base.weight.quant_state).to(dtype)
        elif isinstance(base, torch.nn.Linear):
            weight, dtype = base.weight.data, base.weight.dtype
        else:
            continue
        weight = weight.float()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                delta = module.lora_B[adapter].weight.float() @ module.lora_A[adapter].weight.float()
                weight = weight + module.scaling[adapter] * delta
        linear = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                 device=weight.device, dtype=dtype)
        linear.weight.data = weight.to(dtype)
        if base.bias is not None:
            linear.bias.data = base.bias.data.to(dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, linear)
        merged += 1
    return merged


def subsample(records: list[dict[str, Any]], n: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """A deterministic subsample (same records at every evaluation of a run)."""
    if not n or n >= len(records):
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[i] for i in keep]


def eval_records(lf_args: dict[str, Any], data: DatasetDir) -> list[dict[str, Any]]:
    """The records of the config's eval_dataset (the first one if several), checked against the manifest."""
    if not lf_args.get("eval_dataset"):
        raise UserError("the run has no eval_dataset to score")
    path = data.dataset_file(str(lf_args["eval_dataset"]).split(",")[0].strip())
    if data.is_prepared() and path.name in (data.manifest().get("files") or {}):
        data.verify([path.name])
    return data.read_jsonl(path)


# ---------------------------------------------------------------- loading a trained run


def load_model_for_scoring(lf_args: dict[str, Any], adapter: Path | None, device: str, merge: bool = True):
    """Base model + adapter loaded through LLaMA-Factory, quantized as in training.

    merge=True folds adapter and dequantized base into plain layers (see merge_for_scoring).
    """
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    from movierec.device import keep_fp32_on_cpu

    keys = ("model_name_or_path", "template", "cutoff_len", "quantization_bit", "quantization_method",
            "quantization_type", "double_quantization", "flash_attn", "trust_remote_code", "cache_dir",
            "model_revision", "enable_thinking")
    args = {k: lf_args[k] for k in keys if lf_args.get(k) is not None}
    args["finetuning_type"] = "lora"
    if adapter is not None:
        args["adapter_name_or_path"] = str(adapter)
    if device == "cpu":
        args["infer_dtype"] = "float32"
    model_args, data_args, finetuning_args, _ = get_infer_args(args)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = build_template(tokenizer, arg(lf_args, "template"), int(arg(lf_args, "cutoff_len")))
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    keep_fp32_on_cpu(model)  # score with the same fp32 kernels training used
    if merge:
        merge_for_scoring(model)
    return model, tokenizer, template
