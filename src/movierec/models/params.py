"""Parameter counts of a LoRA model from its config alone: no weights, no network.

The model is built on the meta device (shapes only), wrapped with the same LoRA targets
LLaMA-Factory picks, and counted the way LLaMA-Factory's `count_parameters` counts (every
parameter's numel, tied weights once), so the numbers match the ones a training run prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from movierec.errors import UserError
from movierec.resources import shipped

MODELS_DIR = shipped("resources", "models")


def model_config_path(model_name_or_path: str | Path) -> Path:
    """config.json of a local model folder, else the shipped architecture config
    movierec/resources/models/<name>.json matching the last part of a hub id or folder, lower-cased
    ("Qwen/Qwen3-0.6B" -> qwen3-0.6b.json, "output/smollm2-135m-instruct" -> smollm2-135m-instruct.json)."""
    local = Path(model_name_or_path)
    for candidate in (local, local / "config.json"):
        if candidate.is_file():
            return candidate
    name = f"{str(model_name_or_path).rstrip('/').split('/')[-1].lower()}.json"
    if (MODELS_DIR / name).is_file():
        return MODELS_DIR / name
    known = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.json"))) or "none"
    raise UserError(f"model_name_or_path: no config.json for {model_name_or_path!r} "
                    f"(not a local model folder; shipped configs in {MODELS_DIR}: {known})")


def load_model_config(model_config: str | Path | dict) -> dict:
    """A config dict from a dict, a config.json path, a model folder or a known hub id."""
    if isinstance(model_config, dict):
        return dict(model_config)
    path = model_config_path(model_config)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read model config ({e})") from None


def tied_embeddings(model_cfg: dict) -> bool:
    """Whether the output head shares the input embedding: the config's key, else its model class's default
    (which differs: False for Llama and Qwen3, True for GPT-2), never a guess."""
    if "tie_word_embeddings" in model_cfg:
        return bool(model_cfg["tie_word_embeddings"])
    from transformers import AutoConfig

    return bool(AutoConfig.for_model(**model_cfg).tie_word_embeddings)


def _targets(lora_target: str | list[str]) -> list[str] | str:
    names = [t.strip() for t in lora_target.split(",")] if isinstance(lora_target, str) else list(lora_target)
    # "all" = every linear layer but the output head, as LLaMA-Factory's find_all_linear_modules
    return "all" if names == ["all"] else names


def count_parameters(model_config: str | Path | dict, lora_rank: int, lora_target: str | list[str] = "all",
                     lora_alpha: int | None = None, additional_target: str | list[str] | None = None,
                     use_dora: bool = False) -> dict:
    """Trainable and total parameters of the base model wrapped with LoRA.

    Returns:
        {"trainable": int, "total": int, "percent": float, "target_modules": sorted names}.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = load_model_config(model_config)
    if "model_type" not in cfg:
        raise UserError("model config: no model_type (is this a transformers config.json?)")
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        targets = _targets(lora_target)
        if targets == "all":
            targets = sorted({name.split(".")[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and "lm_head" not in name})
        extra = _targets(additional_target) if additional_target else None
        lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha or 2 * lora_rank, target_modules=targets,
                          modules_to_save=extra, use_dora=use_dora, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "percent": 100 * trainable / total,
            "target_modules": sorted(targets)}


def format_counts(counts: dict) -> str:
    """The line LLaMA-Factory prints: `trainable params: 1,234 || all params: 5,678 || trainable%: 21.7324`."""
    return (f"trainable params: {counts['trainable']:,} || all params: {counts['total']:,} "
            f"|| trainable%: {counts['percent']:.4f}")


def count_for_config(cfg: dict, model_config: str | Path | dict | None = None) -> dict | None:
    """Counts for a training config (its LoRA keys), from `model_config` or the config's model.

    None when the run is not LoRA or the architecture is unknown (no config.json to read).
    """
    if cfg.get("finetuning_type", "lora") != "lora":
        return None
    if model_config is None:
        try:
            model_config = model_config_path(str(cfg.get("model_name_or_path", "")))
        except UserError:
            return None
    return count_parameters(model_config, lora_rank=int(cfg.get("lora_rank", 8)),
                            lora_target=cfg.get("lora_target", "all"), lora_alpha=cfg.get("lora_alpha"),
                            additional_target=cfg.get("additional_target"),
                            use_dora=bool(cfg.get("use_dora", False)))
