"""The download path, against a loopback HTTP server: md5 checked, nothing left behind on failure."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from functools import partial

import pytest
from data_helpers import prepare, synth_input, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serves a folder holding ml-25m.zip (built from synthetic CSVs) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    raw = synth_input(root / "raw")
    with zipfile.ZipFile(root / "ml-25m.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("ratings.csv", "movies.csv"):
            z.write(raw / name, f"ml-25m/{name}")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.md5((root / "ml-25m.zip").read_bytes()).hexdigest()
    httpd.shutdown()


def _config(tmp_path, url, md5):
    return write_config(tmp_path / "c.yaml", input=str(tmp_path / "raw" / "ml-25m.zip"), out_dir=str(tmp_path / "out"),
                        url=url, md5=md5)


def test_download_then_prepare(server, tmp_path):
    base, md5 = server
    assert prepare(_config(tmp_path, f"{base}/ml-25m.zip", md5)) == 0
    assert hashlib.md5((tmp_path / "raw" / "ml-25m.zip").read_bytes()).hexdigest() == md5
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["ml-25m.zip"]  # no temp file left
    assert (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("case", ["wrong md5", "not found (404)", "connection refused"])
def test_failed_download_exits_2_and_leaves_nothing(case, server, tmp_path, capsys):
    base, md5 = server
    if case == "connection refused":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{s.getsockname()[1]}"
    url = f"{base}/missing.zip" if case.startswith("not found") else f"{base}/ml-25m.zip"
    assert prepare(_config(tmp_path, url, "0" * 32 if case == "wrong md5" else md5)) == 2
    err = capsys.readouterr().err
    assert ("does not match" if case == "wrong md5" else "put it at") in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no raw/, no partial zip, no out/
