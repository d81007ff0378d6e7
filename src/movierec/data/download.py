"""Download a file with a progress bar and an md5 check; nothing is left behind on failure."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from movierec.errors import UserError
from movierec.folders.io import current_umask


def download(url: str, dest: Path, md5: str | None) -> None:
    """Fetch `url` to `dest` (via a temp file beside it, renamed once complete and verified)."""
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest, got = hashlib.md5(), 0
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    got += len(chunk)
        if size and got != size:  # the connection closed early: without an md5 to check, only the length tells
            raise UserError(f"{url}: the download was cut short ({got:,} of {size:,} bytes; nothing was kept); "
                            "try again")
        if md5 and digest.hexdigest() != md5:
            raise UserError(f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}; "
                            f"the download is corrupt or the file changed (nothing was kept)")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download {url} ({reason}); download it yourself and put it at {dest}, "
                        f"or pass --input PATH") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
        if not dest.exists():
            for p in created:  # innermost first; only folders this call made
                if p.exists() and not any(p.iterdir()):
                    p.rmdir()
