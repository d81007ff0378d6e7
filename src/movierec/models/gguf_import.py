"""`movierec import-gguf`: a GGUF file (llama.cpp's format) as a plain transformers model folder that
LLaMA-Factory, `evaluate` and `recommend` load: fp32 safetensors weights, the fast tokenizer and the
GGUF's own chat template, plus movierec_import.json (what was imported, its sha256, the counts).

transformers' GGUF loader (with the `gguf` package) does the reading and dequantizing; this module only
checks the input first, fixes what the loader gets wrong about special tokens, and writes the folder
whole or not at all (staging folder beside --out, renamed at the end).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.staging import written_by
from movierec.folders.io import atomic_write_json

RECORD = "movierec_import.json"  # also what marks a folder as an import (--out may replace only those)
FORMAT = "movierec-gguf-import"
FORMAT_VERSION = 1  # bump when the folder changes: the tests' cached import is keyed by it


def main(args) -> int:
    out = import_gguf(Path(args.file).expanduser(), Path(args.out).expanduser())
    print(f"wrote {out}: use it as model_name_or_path (docs/models.md)")
    return 0


def is_import(path: Path) -> bool:
    return written_by(path, RECORD, FORMAT)


def check_out(out: Path) -> None:
    """UserError unless --out is new, empty or a previous import (which is then replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; an import is a folder")
    if out.is_dir() and any(out.iterdir()) and not is_import(out):
        raise UserError(f"--out {out}: not empty and not a movierec import (no {RECORD}); nothing was written: "
                        "pick another --out or empty it (a previous import there is replaced)")
    parent = next(p for p in out.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write there ({parent} is not a writable folder)")


def read_header(path: Path) -> dict[str, Any]:
    """The GGUF's metadata, checked: a readable GGUF, complete, of an architecture transformers loads."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError("import-gguf needs the `gguf` package (a movierec dependency): pip install 'gguf>=0.10'"
                        ) from None
    from transformers.modeling_gguf_pytorch_utils import (
        GGUF_SUPPORTED_ARCHITECTURES,
        read_field,
    )

    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.gguf"))
        raise UserError(f"{path}: is a folder; name the .gguf file" + (f" (it holds {', '.join(found[:3])})"
                                                                       if found else " (it holds none)"))
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader's errors on a cut file: ValueError, IndexError, ...
        raise UserError(f"{path}: truncated or damaged GGUF file ({type(e).__name__}: {e})") from None
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > path.stat().st_size:  # the reader checks each tensor's shape, not that the file holds it all
        raise UserError(f"{path}: truncated GGUF file ({path.stat().st_size:,} bytes, its tensors need {end:,})")
    fields = {key: read_field(reader, key) for key in ("general.architecture", "tokenizer.ggml.add_bos_token")
              if key in reader.fields}
    arch = (fields.get("general.architecture") or ["?"])[0]
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UserError(f"{path}: architecture {arch!r} is not one transformers' GGUF loader reads "
                        f"({', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    return {"architecture": arch, "tensors": len(reader.tensors),
            "add_bos_token": bool((fields.get("tokenizer.ggml.add_bos_token") or [False])[0])}


def import_gguf(gguf: Path, out: Path) -> Path:
    """Write the model folder for `gguf` to `out` (see the module docstring); returns `out`."""
    from movierec.folders.staging import staging

    header = read_header(gguf)
    check_out(out)
    if gguf.resolve().is_relative_to(out.resolve()):
        raise UserError(f"--out {out}: holds {gguf}, which replacing the folder would delete; import elsewhere")
    print(f"importing {gguf} ({header['architecture']}, {header['tensors']} tensors) -> {out}")
    with staging(out) as tmp:
        tokenizer, model = load(gguf)
        fix_special_tokens(tokenizer, model.config, header["add_bos_token"])
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # the slow tokenizer's "vocab file" is the GGUF itself (a 98 MB copy for SmolLM2): tokenizer.json suffices
        (tmp / "tokenizer.model").unlink(missing_ok=True)
        atomic_write_json(tmp / RECORD, record(gguf, header, model, tokenizer))
    return out


def load(gguf: Path):
    """(tokenizer, fp32 model) through transformers' GGUF loader; its failures become one UserError line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loader's "legacy behaviour" notice is about slow tokenizers
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{gguf}: transformers cannot load it ({why})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def fix_special_tokens(tokenizer, config, add_bos_token: bool) -> None:
    """bos/eos/pad/unk as the GGUF's own ids say (kept in the model config), not as the tokenizer conversion
    guessed them: for SmolLM2 it makes eos `<|im_start|>` and prepends bos, while the GGUF says eos is
    `<|im_end|>` and no bos is added."""
    for name in ("bos", "eos", "pad", "unk"):
        token_id = getattr(config, f"{name}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, f"{name}_token", tokenizer.convert_ids_to_tokens(token_id))
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = add_bos_token


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record(gguf: Path, header: dict[str, Any], model, tokenizer) -> dict[str, Any]:
    from movierec.train.record import versions

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "source": str(gguf.resolve()), "source_sha256": sha256(gguf),
        "architecture": header["architecture"], "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32",
        "vocab_size": len(tokenizer), "has_chat_template": tokenizer.chat_template is not None,
        "special_tokens": {name: getattr(tokenizer, f"{name}_token") for name in ("bos", "eos", "pad", "unk")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
    }
