"""`movierec prepare`: leakage, counts, determinism, skipping, bad inputs, oddities, configs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from data_helpers import (
    CONFIG,
    outputs,
    prepare,
    read_jsonl,
    synth_input,
    tree_bytes,
    write_config,
)
from sklearn.metrics import roc_auc_score

from movierec.data.config import DataConfig, load_data_config
from movierec.data.prompts import render_input
from movierec.data.split import split
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir

ROOT = Path(__file__).resolve().parents[1]
TRAIN_NAME, EVAL_NAME, DATASET_INFO = DatasetDir.TRAIN_NAME, DatasetDir.EVAL_NAME, DatasetDir.DATASET_INFO


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("prepared")
    raw = synth_input(base / "raw")
    out = base / "out"
    config = write_config(base / "data.yaml", input=str(raw), out_dir=str(out))
    assert prepare(config) == 0
    return SimpleNamespace(
        base=base, raw=raw, out=out, config=config,
        train=read_jsonl(out / f"{TRAIN_NAME}.jsonl"), eval=read_jsonl(out / f"{EVAL_NAME}.jsonl"),
        manifest=json.loads((out / "manifest.json").read_text()),
        ratings=pd.read_parquet(out / "ratings.parquet"), movies=pd.read_parquet(out / "movies.parquet"),
    )


def test_exact_counts_and_record_fields(prepared):
    assert len(prepared.train) == CONFIG["n_train"] and len(prepared.eval) == CONFIG["n_eval"]
    for rec in prepared.train + prepared.eval:
        assert list(rec) == ["instruction", "input", "output", "user_id", "movie_id", "timestamp", "rating",
                             "label", "history_len", "warm"]
        assert rec["instruction"] == DataConfig().instruction
        assert rec["label"] == int(rec["rating"] >= CONFIG["like_threshold"])
        assert rec["output"] == ("Yes" if rec["label"] else "No")
        assert isinstance(rec["user_id"], int) and isinstance(rec["timestamp"], int)
        assert isinstance(rec["rating"], float) and isinstance(rec["warm"], bool)
    keys = {(r["user_id"], r["movie_id"]) for r in prepared.train + prepared.eval}
    assert len(keys) == len(prepared.train) + len(prepared.eval)  # no target twice


def test_every_eval_target_is_later_than_every_train_target(prepared):
    cutoff = prepared.manifest["cutoff_timestamp"]
    assert max(r["timestamp"] for r in prepared.train) < cutoff <= min(r["timestamp"] for r in prepared.eval)


def test_histories_are_strictly_earlier_and_match_render_input(prepared):
    """Rebuild every prompt from ratings.parquet independently; also proves the vectorised prompts
    equal the single-record render_input byte for byte."""
    ratings, movies = prepared.ratings, prepared.movies.set_index("movieId")
    assert ratings.duplicated(["userId", "timestamp"]).any(), "test data should hold same-second ratings"
    by_user = dict(list(ratings.groupby("userId")))
    eval_targets = {(r["user_id"], r["movie_id"]) for r in prepared.eval}
    skipped = 0
    for rec in prepared.train + prepared.eval:
        mine = by_user[rec["user_id"]]
        target = mine[mine.movieId == rec["movie_id"]]
        assert target.timestamp.tolist() == [rec["timestamp"]] and target.rating.tolist() == [rec["rating"]]
        earlier = mine[mine.timestamp < rec["timestamp"]].sort_values(["timestamp", "movieId"])
        if (rec["user_id"], rec["movie_id"]) in eval_targets:  # eval prompts never show other eval targets
            other = earlier.movieId.map(lambda m: (rec["user_id"], m) in eval_targets)
            skipped += int(other.sum())
            earlier = earlier[~other]
        assert len(earlier) >= CONFIG["min_history"]
        history = earlier.tail(CONFIG["history_len"])
        assert rec["history_len"] == len(history)
        expected = render_input(movies.loc[history.movieId, "title"].tolist(), history.rating.tolist(),
                                movies.loc[rec["movie_id"], "title"], movies.loc[rec["movie_id"], "genres"],
                                CONFIG["like_threshold"])
        assert rec["input"] == expected
    assert skipped > 0, "test data should hold users with several eval targets"


def test_ties_in_time_never_enter_a_history():
    # user 1 rates at t=10, three movies at t=20, one at t=30; user 2 at t=5, 6, 7
    user = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    ts = np.array([10, 20, 20, 20, 30, 5, 6, 7])
    cfg = DataConfig(n_train=2, n_eval=4, history_len=2, min_history=1, cutoff_quantile=0.85)
    parts = split(user, ts, cfg)
    assert parts.cutoff == 20 and parts.eligible_train == 2 and parts.eligible_eval == 4
    got = {int(t): ex.history[ex.owner == i].tolist()
           for ex in (parts.train, parts.eval) for i, t in enumerate(ex.target)}
    # row 4 is an eval target like rows 1-3, so its history skips them: each eval rating is seen once
    assert got == {1: [0], 2: [0], 3: [0], 4: [0], 6: [5], 7: [5, 6]}


def test_skipping_other_eval_targets_keeps_min_history():
    """A user whose latest ratings are all eval targets: each prompt skips the others and still shows
    min_history ratings (the eligible targets sit min_history rows after the user's first)."""
    user = np.array([1] * 7 + [2] * 5)
    ts = np.array([10, 11, 12, 13, 14, 15, 16, 1, 2, 3, 4, 5])
    cfg = DataConfig(n_train=1, n_eval=3, history_len=10, min_history=4, cutoff_quantile=0.6)
    parts = split(user, ts, cfg)
    ex = parts.eval
    assert sorted(ex.target.tolist()) == [4, 5, 6]
    assert {int(t): ex.history[ex.owner == i].tolist() for i, t in enumerate(ex.target)} == {
        4: [0, 1, 2, 3], 5: [0, 1, 2, 3], 6: [0, 1, 2, 3]}


def test_warm_and_cold_eval_users(prepared):
    train_users = {r["user_id"] for r in prepared.train}
    assert all(r["warm"] for r in prepared.train)
    assert all(r["warm"] == (r["user_id"] in train_users) for r in prepared.eval)
    warm = np.mean([r["warm"] for r in prepared.eval])
    assert 0 < warm < 1, "eval should hold warm and cold users"
    stats = prepared.manifest["splits"]["eval"]
    assert stats["warm_share"] == pytest.approx(warm) and stats["cold_share"] == pytest.approx(1 - warm)


def test_manifest_reports_what_was_written(prepared):
    m = prepared.manifest
    assert m["counts"]["train"] == CONFIG["n_train"] and m["counts"]["eval"] == CONFIG["n_eval"]
    assert m["counts"]["ratings"] == len(prepared.ratings) and m["counts"]["movies"] == len(prepared.movies)
    for name, recs in (("train", prepared.train), ("eval", prepared.eval)):
        assert m["splits"][name]["positive_rate"] == pytest.approx(np.mean([r["label"] for r in recs]))
        assert m["splits"][name]["users"] == len({r["user_id"] for r in recs})
    both = prepared.train + prepared.eval
    assert m["history_lengths"]["mean"] == pytest.approx(np.mean([r["history_len"] for r in both]))
    chars = [len(r["instruction"]) + 1 + len(r["input"]) for r in both]  # the user turn LLaMA-Factory builds
    assert (m["prompt_chars"]["max"], m["prompt_chars"]["min"]) == (max(chars), min(chars))
    assert m["prompt_chars"]["std"] == pytest.approx(np.std(chars))
    assert set(m["inputs"]) == {"ratings.csv", "movies.csv", "truth.parquet"}  # synth's truth is an input too
    assert m["config"]["n_train"] == CONFIG["n_train"] and len(m["fingerprint"]) == 64
    assert set(m["files"]) == {p.name for p in outputs(prepared.out)} - {"manifest.json"}
    for name, entry in m["files"].items():
        payload = (prepared.out / name).read_bytes()
        assert entry == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert set(m["oddities"]) >= {"ratings_duplicate_dropped", "ratings_unknown_movie_dropped", "movies_no_genres",
                                  "titles_with_comma", "titles_with_quote", "titles_non_ascii"}


def test_parquet_schemas(prepared):
    r = prepared.ratings
    assert [str(t) for t in r.dtypes] == ["int32", "int32", "float32", "int64"]
    assert list(r.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert r.equals(r.sort_values(["userId", "timestamp", "movieId"], ignore_index=True))
    assert list(prepared.movies.columns) == ["movieId", "title", "genres"]


def test_dataset_info_bytes(prepared):
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    expected = {name: {"file_name": f"{name}.jsonl", "columns": columns} for name in (TRAIN_NAME, EVAL_NAME)}
    written = (prepared.out / DATASET_INFO).read_bytes()
    assert written == (json.dumps(expected, indent=2, sort_keys=True) + "\n").encode()
    committed = ROOT / "data" / DATASET_INFO
    if committed.exists():
        assert committed.read_bytes() == written


def test_rerun_is_byte_identical_and_skips_unless_forced(prepared, capsys):
    before = tree_bytes(prepared.out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in outputs(prepared.out)}
    capsys.readouterr()
    assert prepare(prepared.config) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in outputs(prepared.out)} == mtimes
    assert prepare(prepared.config, "--force") == 0
    assert "up to date" not in capsys.readouterr().out
    assert tree_bytes(prepared.out) == before
    assert (prepared.out / "manifest.json").stat().st_mtime_ns != mtimes["manifest.json"]


@pytest.mark.parametrize("edit", ["one byte", "appended line", "deleted"])
@pytest.mark.parametrize("name", [f"{TRAIN_NAME}.jsonl", "ratings.parquet", DATASET_INFO])
def test_changed_output_is_rebuilt(prepared, tmp_path, capsys, name, edit):
    """An output edited (even keeping its size and mtime) or deleted since prepare wrote it is not "up to date"."""
    out = tmp_path / "out"
    assert prepare(prepared.config, "--out", str(out)) == 0
    before = tree_bytes(out)
    path = out / name
    data, stat = path.read_bytes(), path.stat()
    if edit == "one byte":  # same size, same mtime: only the hash (or the cache's ctime) can tell
        with open(path, "r+b") as f:
            f.seek(len(data) // 2)
            f.write(bytes([data[len(data) // 2] ^ 1]))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif edit == "appended line":
        path.write_bytes(data + b"{}\n")
    else:
        path.unlink()
    capsys.readouterr()
    assert prepare(prepared.config, "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "up to date" not in captured.out
    assert f"{path} {'is missing' if edit == 'deleted' else 'changed since'}" in captured.err
    assert path.read_bytes() == data
    assert tree_bytes(out) == before
    assert prepare(prepared.config, "--out", str(out)) == 0
    assert "up to date" in capsys.readouterr().out


def test_up_to_date_check_uses_the_hash_cache(prepared, tmp_path, monkeypatch, capsys):
    """A re-run hashes each output once; later re-runs only stat them."""
    from movierec.folders import datadir

    out = tmp_path / "out"
    assert prepare(prepared.config, "--out", str(out)) == 0
    monkeypatch.setattr(DatasetDir, "RACY_NS", -10**18)  # the files are fresh; count them as old
    hashed = []
    real = datadir._sha256_file
    monkeypatch.setattr(datadir, "_sha256_file", lambda path: hashed.append(path.name) or real(path))
    capsys.readouterr()
    for _ in range(3):
        assert prepare(prepared.config, "--out", str(out)) == 0
        assert "up to date" in capsys.readouterr().out
    assert sorted(hashed) == sorted(prepared.manifest["files"])  # once each, on the first re-run


def test_out_naming_a_file_exits_2_and_writes_nothing(tmp_path, capsys):
    """Checked first: the demo config would otherwise generate its input before failing."""
    target = tmp_path / "data.txt"
    target.write_text("keep me\n")
    for out in (target, target / "below"):
        capsys.readouterr()
        assert prepare(ROOT / "configs/data/demo.yaml", "--override", f"input={tmp_path / 'raw'}",
                       "--out", str(out)) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(target) in errors[0] and "is a file" in errors[0], err
        assert "Traceback" not in err
    assert target.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


def test_a_missing_input_given_with_input_is_never_generated(tmp_path, capsys):
    """demo.yaml generates its own input when absent; a mistyped --input must not become synthetic data."""
    raw, out = tmp_path / "typo", tmp_path / "out"
    capsys.readouterr()
    assert prepare(ROOT / "configs/data/demo.yaml", "--input", str(raw), "--out", str(out)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"--input {raw}: not found" in errors[0] and "Traceback" not in err, err
    assert not raw.exists() and not out.exists()


def test_a_missing_input_given_with_input_is_never_downloaded(tmp_path, capsys, monkeypatch):
    from movierec.data import prepare as prepare_module

    monkeypatch.setattr(prepare_module, "download", lambda *a: pytest.fail("downloaded an explicit --input"))
    config = write_config(tmp_path / "c.yaml", input=str(tmp_path / "raw.zip"), out_dir=str(tmp_path / "out"),
                          url="https://example.invalid/ml-25m.zip")
    assert prepare(config, "--input", str(tmp_path / "typo.zip")) == 2
    assert f"--input {tmp_path / 'typo.zip'}: not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_changed_config_rebuilds(prepared, tmp_path):
    out = tmp_path / "out"
    assert prepare(prepared.config, "--out", str(out)) == 0
    assert prepare(prepared.config, "--out", str(out), "--override", "seed=1") == 0
    assert read_jsonl(out / f"{TRAIN_NAME}.jsonl") != prepared.train
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 1


def test_zip_input_gives_the_same_examples(prepared, tmp_path):
    archive = tmp_path / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("ratings.csv", "movies.csv", "README.txt"):
            z.writestr(f"ml-25m/{name}", (prepared.raw / name).read_bytes() if name != "README.txt" else "hi")
    out = tmp_path / "out"
    assert prepare(prepared.config, "--input", str(archive), "--out", str(out)) == 0
    for name in (f"{TRAIN_NAME}.jsonl", f"{EVAL_NAME}.jsonl", "ratings.parquet", "movies.parquet"):
        assert (out / name).read_bytes() == (prepared.out / name).read_bytes()
    assert list(json.loads((out / "manifest.json").read_text())["inputs"]) == ["ml-25m.zip"]


def test_oddities_are_handled_and_counted(prepared, tmp_path):
    raw = shutil.copytree(prepared.raw, tmp_path / "raw")
    ratings = pd.read_csv(raw / "ratings.csv")
    movies = pd.read_csv(raw / "movies.csv")
    first = ratings.iloc[:3]
    later = first.assign(timestamp=first.timestamp + 1000, rating=0.5)  # repeats: the later one wins
    same_second = first.iloc[:1].assign(timestamp=first.timestamp.iloc[0] + 1000, rating=5.0)  # tie: last row wins
    unknown = ratings.iloc[:4].assign(movieId=10**7 + np.arange(4))
    extra = pd.concat([later, same_second, unknown])
    with open(raw / "ratings.csv", "a") as f:
        f.write(extra.to_csv(header=False, index=False, float_format="%.1f"))
    config = write_config(tmp_path / "c.yaml", input=str(raw), out_dir=str(tmp_path / "out"))
    assert prepare(config) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["oddities"] == {
        "ratings_duplicate_dropped": 4, "ratings_unknown_movie_dropped": 4,
        "movies_no_genres": int((movies.genres == "(no genres listed)").sum()),
        "titles_with_comma": int(movies.title.str.contains(",").sum()),
        "titles_with_quote": int(movies.title.str.contains('"').sum()),
        "titles_non_ascii": int((~movies.title.map(str.isascii)).sum()), "titles_with_newline": 0,
    }
    assert all(m["oddities"][k] > 0 for k in ("movies_no_genres", "titles_with_comma", "titles_with_quote",
                                              "titles_non_ascii"))
    kept = pd.read_parquet(tmp_path / "out" / "ratings.parquet")
    assert len(kept) == len(ratings) and not kept.movieId.ge(10**7).any()
    merged = first.merge(kept, on=["userId", "movieId"], suffixes=("_old", ""))
    assert merged.rating.tolist() == [5.0, 0.5, 0.5]
    assert (merged.timestamp == merged.timestamp_old + 1000).all()


def _set_line(name: str, index: int, text: str):
    def mutate(raw: Path) -> None:
        lines = (raw / name).read_text().splitlines()
        lines[index] = text
        (raw / name).write_text("\n".join(lines) + "\n")
    return mutate


def _write(name: str, text: str):
    return lambda raw: (raw / name).write_text(text)


def _every_rating(value: str | None = None, at_most: float = 5.0):
    """Every rating set to `value`, or capped at `at_most`."""
    def mutate(raw: Path) -> None:
        header, *rows = (raw / "ratings.csv").read_text().splitlines()
        rows = [(u, m, value or f"{min(float(r), at_most):g}", t) for u, m, r, t in (row.split(",") for row in rows)]
        (raw / "ratings.csv").write_text("\n".join([header, *map(",".join, rows)]) + "\n")
    return mutate


def _truncated_zip(raw: Path) -> None:
    archive = raw / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(raw / "ratings.csv", "ml-25m/ratings.csv")
        z.write(raw / "movies.csv", "ml-25m/movies.csv")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])


BAD_INPUTS = {
    "missing input": (lambda raw: shutil.rmtree(raw), [], "not found"),
    "missing ratings.csv": (lambda raw: (raw / "ratings.csv").unlink(), [], "ratings.csv: file not found"),
    "renamed column": (_set_line("ratings.csv", 0, "userId,movieId,score,timestamp"), [], "missing column 'rating'"),
    "missing movies column": (_set_line("movies.csv", 0, "movieId,title"), [], "missing column 'genres'"),
    "non-numeric rating": (_set_line("ratings.csv", 5, "1,2,good,964982703"), [], "cannot be read"),
    "rating above 5": (_set_line("ratings.csv", 5, "1,2,5.5,964982703"), [], "outside 0.5..5.0 (first on line 6"),
    "rating of 0": (_set_line("ratings.csv", 7, "1,2,0.0,964982703"), [], "outside 0.5..5.0"),
    "negative timestamp": (_set_line("ratings.csv", 5, "1,2,4.0,-964982703"), [],
                           "ratings.csv: 1 negative timestamps (first on line 6: -964982703); expected unix seconds"),
    "empty rating": (_set_line("ratings.csv", 5, "1,2,,964982703"), [], "empty rating"),
    "short row": (_set_line("ratings.csv", 5, "1,2,4.0"), [], "cannot be read"),
    "empty ratings file": (_write("ratings.csv", ""), [], "empty file"),
    "header only": (_write("ratings.csv", "userId,movieId,rating,timestamp\n"), [], "no ratings"),
    "empty movies file": (_write("movies.csv", ""), [], "movies.csv: empty file"),
    "repeated movieId": (_set_line("movies.csv", 2, "1,Again (1999),Drama"), [], "repeated movieId"),
    "truncated zip": (_truncated_zip, ["--input", "{raw}/ml-25m.zip"], "not a readable zip"),
    "too few examples": (lambda raw: None, ["--override", "n_train=100000"], "too few eligible examples"),
    "every example a Yes": (_every_rating("4.5"), [], "like_threshold 4: every rating (9,000) would be labelled Yes"),
    "every example a No": (_every_rating("3.0"), ["--override", "like_threshold=5"],
                           "labelled No, leaving nothing to tell apart; every rating is 3"),
    "threshold above every rating": (_every_rating(at_most=4.5), ["--override", "like_threshold=5"],
                                     "labelled No, leaving nothing to tell apart; ratings here run from 0.5 to 4.5"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_and_writes_nothing(case, tmp_path, capsys):
    mutate, extra, message = BAD_INPUTS[case]
    raw = synth_input(tmp_path / "raw")
    if case == "repeated movieId":
        first_id = (raw / "movies.csv").read_text().splitlines()[1].split(",")[0]
        mutate = _set_line("movies.csv", 2, f"{first_id},Again (1999),Drama")
    mutate(raw)
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", input=str(raw), out_dir=str(out))
    capsys.readouterr()
    assert prepare(config, *[a.format(raw=raw) for a in extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not out.exists()


def test_config_problems_are_reported_together(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", input="x", out_dir="y", histroy_len=5, n_train="many")
    assert prepare(config, "--override", "like_treshold=3.5", "--override", "cutoff_quantile=1.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    text = "\n".join(err)
    assert "histroy_len: unknown key (did you mean 'history_len'?)" in text
    assert "like_treshold: unknown key (did you mean 'like_threshold'?)" in text
    assert "n_train: invalid value 'many': expected int" in text
    assert "cutoff_quantile: must lie strictly between 0 and 1, got 1.5" in text


def test_shipped_configs_load():
    full = load_data_config(ROOT / "configs/data/movielens_25m.yaml")
    assert (full.n_train, full.n_eval, full.history_len, full.like_threshold) == (78_271, 4_450, 10, 4.0)
    assert full.url == "https://files.grouplens.org/datasets/movielens/ml-25m.zip"
    assert full.md5 == "6b51fb2759a8657d3bfcbfc42b592ada" and full.out_dir == "data"
    assert full == DataConfig()  # the dataclass defaults are the reference data
    demo = load_data_config(ROOT / "configs/data/demo.yaml", ["synth.users=200"])
    assert demo.synth.users == 200 and demo.out_dir == "data/demo" and demo.url is None
    for path in (ROOT / "configs/data").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# movierec prepare --config"), path
        keys = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert all("#" in line for line in keys), f"{path}: every key needs a comment"


@pytest.mark.parametrize("release", ["100k", "1m", "10m", "20m", "25m", "32m"])
def test_every_release_has_a_config(release):
    """Each release downloads from GroupLens with an md5, and differs from the reference only in its counts."""
    cfg = load_data_config(ROOT / f"configs/data/movielens_{release}.yaml")
    assert cfg.url == f"https://files.grouplens.org/datasets/movielens/ml-{release}.zip"
    assert Path(cfg.input) == Path("data/raw") / f"ml-{release}.zip" and cfg.synth is None
    assert re.fullmatch(r"[0-9a-f]{32}", cfg.md5)
    reference = DataConfig()
    same = ("history_len", "min_history", "like_threshold", "cutoff_quantile", "seed", "instruction")
    assert all(getattr(cfg, k) == getattr(reference, k) for k in same)
    assert 0 < cfg.n_eval <= cfg.n_train <= reference.n_train
    md5s = {load_data_config(p).md5 for p in (ROOT / "configs/data").glob("movielens_*.yaml")}
    assert len(md5s) == 6


def test_demo_config_generates_its_input(tmp_path):
    out = tmp_path / "demo"
    config = ROOT / "configs/data/demo.yaml"
    assert prepare(config, "--override", f"input={tmp_path / 'raw'}", "--out", str(out)) == 0
    assert (tmp_path / "raw" / "ratings.csv").is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert (m["counts"]["train"], m["counts"]["eval"]) == (4000, 1000)
    assert m["counts"]["ratings"] == 20_000 and m["counts"]["users"] == 350
    assert m["oracle"]["metrics"]["overall"]["auc"] > 0.8  # the generator's truth came along
    with pytest.raises(UserError, match="no_such_key: unknown key"):
        load_data_config(config, ["no_such_key=1"])


def test_oracle_from_the_generators_truth(prepared):
    """`prepare` scores the eval examples' true like-probabilities: the ceiling later stages show."""
    from movierec.data import synth

    oracle = prepared.manifest["oracle"]
    truth = pd.read_parquet(prepared.raw / synth.TRUTH_FILE).set_index(["userId", "movieId"])
    rows = truth.loc[[(r["user_id"], r["movie_id"]) for r in prepared.eval]]
    p = synth.like_probability(rows.mu, rows.star_step, CONFIG["like_threshold"])
    labels = [r["label"] for r in prepared.eval]
    assert oracle["metrics"]["overall"]["auc"] == pytest.approx(roc_auc_score(labels, p))
    assert oracle["metrics"]["overall"]["n"] == CONFIG["n_eval"] and {"warm", "cold"} <= set(oracle["metrics"])


def test_real_data_has_no_oracle(tmp_path):
    raw = synth_input(tmp_path / "raw")
    (raw / "truth.parquet").unlink()
    config = write_config(tmp_path / "c.yaml", input=str(raw), out_dir=str(tmp_path / "out"))
    assert prepare(config) == 0
    assert "oracle" not in json.loads((tmp_path / "out" / "manifest.json").read_text())
