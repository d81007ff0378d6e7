"""Real MovieLens-100K (from the recbole wheel, see ml100k.py) through the ML-100K reader, prepare and the
baselines; and the fixture's own rule: skip only when the package registry cannot be reached."""

from __future__ import annotations

import http.server
import json
import math
import socket
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import read_jsonl
from ml100k import fetch_wheel

from movierec.cli import main
from movierec.data.config import load_data_config
from movierec.folders.datadir import DatasetDir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_data_config(ROOT / "configs/data/movielens_100k.yaml")
TRAIN_NAME, EVAL_NAME = DatasetDir.TRAIN_NAME, DatasetDir.EVAL_NAME


@pytest.fixture(scope="module")
def real(ml100k_prepared):
    out = ml100k_prepared
    return {"manifest": json.loads((out / "manifest.json").read_text()),
            "train": read_jsonl(out / f"{TRAIN_NAME}.jsonl"), "eval": read_jsonl(out / f"{EVAL_NAME}.jsonl"),
            "ratings": pd.read_parquet(out / "ratings.parquet"), "movies": pd.read_parquet(out / "movies.parquet")}


def test_real_ml100k_counts_and_oddities(real):
    m = real["manifest"]
    assert m["layout"] == "ml-100k" and sorted(m["inputs"]) == ["u.data", "u.item"]
    # 100,000 ratings by 943 users of 1,682 movies; the placeholder movie 267 "unknown" and its 9 ratings go
    assert {k: m["counts"][k] for k in ("ratings", "users", "movies")} == {
        "ratings": 99_991, "users": 943, "movies": 1_681}
    assert (m["counts"]["train"], m["counts"]["eval"]) == (CONFIG.n_train, CONFIG.n_eval) == (40_000, 4_450)
    assert (m["counts"]["eligible_train"], m["counts"]["eligible_eval"]) == (84_914, 9_577)  # quoted in the config
    odd = m["oddities"]
    assert odd["movies_placeholder_dropped"] == 1 and odd["ratings_unknown_movie_dropped"] == 9
    assert odd["movies_genre_unknown"] == 2 and odd["movies_no_genres"] == 1  # 267 and 1373 "Good Morning"
    assert odd["genres_renamed"] == 122 and odd["titles_latin1"] == odd["titles_non_ascii"] == 9
    assert odd["ratings_duplicate_dropped"] == 0
    movies = real["movies"].set_index("movieId")
    assert movies.title[1] == "Toy Story (1995)" and movies.genres[1] == "Animation|Children|Comedy"
    assert movies.title[543] == "Misérables, Les (1995)" and movies.genres[1373] == "(no genres listed)"


def test_real_ml100k_has_no_leakage(real):
    train, eval_ = real["train"], real["eval"]
    cutoff = real["manifest"]["cutoff_timestamp"]
    assert max(r["timestamp"] for r in train) < cutoff <= min(r["timestamp"] for r in eval_)
    targets = [(r["user_id"], r["movie_id"]) for r in train + eval_]
    assert len(set(targets)) == len(targets)
    # every history holds only ratings strictly earlier than its target (eval: minus the other eval
    # targets, which no eval prompt shows): at most that many, one line each
    ratings = real["ratings"]
    examples = pd.DataFrame([{k: r[k] for k in ("user_id", "timestamp", "history_len")} for r in train + eval_])
    eval_ts = pd.DataFrame([{k: r[k] for k in ("user_id", "timestamp")} for r in eval_])
    skip = {u: np.sort(g.timestamp.to_numpy()) for u, g in eval_ts.groupby("user_id")}
    ts_by_user = {u: np.sort(g.timestamp.to_numpy()) for u, g in ratings.groupby("userId")}
    earlier = np.array([np.searchsorted(ts_by_user[u], t) for u, t in zip(examples.user_id, examples.timestamp)])
    earlier[len(train):] -= [np.searchsorted(skip[u], t) for u, t in zip(eval_ts.user_id, eval_ts.timestamp)]
    assert (examples.history_len <= np.minimum(earlier, CONFIG.history_len)).all()
    assert (examples.history_len == np.minimum(earlier, CONFIG.history_len)).all()
    assert (earlier >= CONFIG.min_history).all()
    lines = [sum(line.startswith("- ") and line != "- (none)" for line in r["input"].splitlines()) for r in train + eval_]
    assert lines == examples.history_len.tolist()
    eval_users, train_users = {r["user_id"] for r in eval_}, {r["user_id"] for r in train}
    assert eval_users & train_users and eval_users - train_users  # warm and cold users


def test_real_ml100k_baselines(ml100k_prepared, tmp_path, capsys):
    out = tmp_path / "baselines.json"
    assert main(["baselines", "--data", str(ml100k_prepared), "--out", str(out)]) == 0
    auc = {name: result["overall"]["auc"] for name, result in json.loads(out.read_text())["baselines"].items()}
    assert all(math.isfinite(v) for v in auc.values() if v is not None), auc
    assert all(auc[name] > 0.5 for name in ("popularity", "movie_mean", "gbdt")), auc
    print(capsys.readouterr().out)


# --- the fixture skips only for an unreachable registry ---

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_skips(tmp_path):
    index = f"http://127.0.0.1:{_closed_port()}/simple"
    with pytest.raises(pytest.skip.Exception, match="cannot be reached.*Connection refused"):
        fetch_wheel(tmp_path, ("--isolated", "--retries", "0", "--index-url", index))


def test_reachable_registry_without_the_package_fails(tmp_path):
    (tmp_path / "index").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path / "index")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{httpd.server_address[1]}/simple"
        with pytest.raises(pytest.fail.Exception, match="not because the registry is unreachable"):
            fetch_wheel(tmp_path / "cache", ("--isolated", "--retries", "0", "--index-url", index))
    finally:
        httpd.shutdown()


def test_no_index_at_all_fails(tmp_path):
    (tmp_path / "links").mkdir()
    with pytest.raises(pytest.fail.Exception, match="not because the registry is unreachable"):
        fetch_wheel(tmp_path / "cache", ("--isolated", "--no-index", "--find-links", str(tmp_path / "links")))
