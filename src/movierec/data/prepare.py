"""`movierec prepare`: MovieLens -> Yes/No examples for LLaMA-Factory, plus what later stages read.

Outputs in out_dir (named and written by datadir.DatasetDir): movielens_qwen3_{train,eval}.jsonl (alpaca
fields + metadata), dataset_info.json, ratings.parquet and movies.parquet (all valid ratings and movies), and
manifest.json, written last with each file's size and sha256. Same inputs and config give the same bytes; a
re-run skips unless --force, the fingerprint (input md5s + config) changed, or an output no longer matches the
manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from movierec.bench.lengths import describe_example_lengths
from movierec.data import hybrid, layouts, synth
from movierec.data.config import DataConfig, load_data_config
from movierec.data.download import download
from movierec.data.fields import LABEL, MOVIE_ID, USER_ID, WARM
from movierec.data.movielens import (
    GENRES,
    MOVIE,
    RATING,
    TIMESTAMP,
    TITLE,
    USER,
    MovieLens,
)
from movierec.data.prompts import NO, YES, render_inputs
from movierec.data.ranking import ranking_lines
from movierec.data.split import Examples, split
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir

# bump when the output format changes, so old outputs count as stale (3: manifest files hold size + sha256;
# titles' line breaks become spaces; 5: the validation examples; 6: validation examples and ranking lists carry
# the prompt options)
FORMAT_VERSION = 6


def main(args: argparse.Namespace) -> int:
    cfg = load_data_config(args.config, args.override, input=args.input, out_dir=args.out)
    out = DatasetDir(cfg.out_dir)
    out.check_writable()  # before anything is generated, downloaded or read
    source = obtain_input(cfg, given=args.input is not None)
    inputs = layouts.input_md5s(source)
    truth = truth_file(source)
    if truth is not None:
        inputs[truth.name] = layouts.md5_file(truth)
    fingerprint = hashlib.sha256(json.dumps(
        {"format_version": FORMAT_VERSION, "config": cfg.to_dict(), "inputs": inputs}, sort_keys=True,
    ).encode()).hexdigest()
    if not args.force and _up_to_date(out, fingerprint):
        print(f"{out.path} is up to date (same inputs, config and outputs); pass --force to rebuild")
        return 0
    start = time.perf_counter()
    data = layouts.load(source)
    _log(f"read {data.ratings.num_rows:,} valid ratings of {data.movies.num_rows:,} movies "
         f"({data.layout} layout)", start)
    files, summary = build(data, cfg, truth)
    _log("built examples", start)
    out.write_outputs(files, {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "inputs": inputs,
                              "layout": data.layout, "config": cfg.to_dict(), **summary})
    train, eval_ = summary["splits"]["train"], summary["splits"]["eval"]
    _log(f"wrote {out.path}: {cfg.n_train:,} train (positive rate {train['positive_rate']:.3f}), "
         f"{cfg.n_eval:,} eval (positive rate {eval_['positive_rate']:.3f}, warm share "
         f"{eval_['warm_share']:.3f}), cutoff {summary['cutoff_utc']}", start)
    return 0


def obtain_input(cfg: DataConfig, given: bool = False) -> Path:
    """The input path. The config's own input, when absent, is generated (config `synth`) or downloaded
    (config `url`); a path `given` on the command line (--input) must exist: a typo never becomes data."""
    source = Path(cfg.input)
    if source.exists():
        return source
    if given:
        raise UserError(f"--input {source}: not found (a path given with --input is never generated or downloaded; "
                        "to fill the config's own input, drop --input or use --override input=PATH)")
    if cfg.synth:
        s = cfg.synth
        print(f"{source} not found; generating synthetic data there", file=sys.stderr)
        synth.write(source, *synth.sizes(None, s.users, s.movies, s.ratings), s.seed)
    elif cfg.url:
        print(f"{source} not found; downloading {cfg.url}", file=sys.stderr)
        download(cfg.url, source, cfg.md5)
    else:
        raise UserError(f"input {source}: not found (expected a MovieLens zip such as ml-25m.zip or ml-100k.zip, "
                        "or its extracted folder); pass --input PATH")
    return source


def truth_file(source: Path) -> Path | None:
    """The synthetic generator's truth.parquet beside its CSVs (real MovieLens has none)."""
    path = source / synth.TRUTH_FILE
    return path if source.is_dir() and path.is_file() else None


def oracle(truth: Path, users: np.ndarray, movies: np.ndarray, labels: np.ndarray, warm: np.ndarray,
           like_threshold: float) -> dict[str, Any]:
    """Metrics of the generator's true like-probabilities on the eval examples: the known ceiling."""
    from movierec.evaluation.metrics import compute_metrics

    t = pq.read_table(truth)
    noise = t.schema.metadata.get(b"noise_sd") if t.schema.metadata else None
    if noise is None or not {USER, MOVIE, synth.MU, synth.STEP} <= set(t.column_names):
        raise UserError(f"{truth}: not a truth file written by `movierec synth`")
    keys = t[USER].to_numpy().astype(np.int64) << 32 | t[MOVIE].to_numpy().astype(np.int64)
    order = np.argsort(keys, kind="stable")
    wanted = users.astype(np.int64) << 32 | movies.astype(np.int64)
    pos = order[np.searchsorted(keys, wanted, sorter=order).clip(max=len(keys) - 1)]
    if (keys[pos] != wanted).any():
        raise UserError(f"{truth}: has no true probability for {(keys[pos] != wanted).sum()} eval ratings "
                        "(it belongs to other ratings: regenerate the input with `movierec synth`)")
    p = synth.like_probability(t[synth.MU].to_numpy()[pos], t[synth.STEP].to_numpy()[pos], like_threshold,
                               float(noise))
    return {"source": "true like-probability of the synthetic generator (truth.parquet)",
            "metrics": compute_metrics(labels, p, users, warm)}


def build(data: MovieLens, cfg: DataConfig,
          truth: Path | None = None) -> tuple[dict[str, bytes | pa.Buffer], dict[str, Any]]:
    """Output file payloads by name, and the manifest's summary of them (with the oracle's metrics
    when the input came with the generator's truth)."""
    r = data.ratings
    _two_classes("rating", r[RATING].to_numpy() >= cfg.like_threshold, cfg, r)  # before minutes of work
    user, ts = r[USER].to_numpy(), r[TIMESTAMP].to_numpy()
    parts, extra, prompt_options, options = hybrid.apply(r, split(user, ts, cfg), cfg)
    warm = np.isin(user[parts.eval.target], user[parts.train.target])
    train_lines, train_label, train_chars = _records(data, parts.train, np.ones(cfg.n_train, dtype=bool), cfg,
                                                     extra["train"])
    eval_lines, eval_label, eval_chars = _records(data, parts.eval, warm, cfg, extra["eval"])
    _two_classes("train example", train_label, cfg, r)
    _two_classes("eval example", eval_label, cfg, r)
    eval_users = user[parts.eval.target]
    d = DatasetDir
    files = {d.jsonl_name(d.TRAIN_NAME): train_lines, d.jsonl_name(d.EVAL_NAME): eval_lines,
             d.RATINGS: _parquet(r), d.MOVIES: _parquet(data.movies)}
    n_valid = len(parts.valid.target)
    if n_valid:  # built as train examples are (split.py); evaluate picks its blend weight on them
        files[d.VALID], valid_label, _ = _records(data, parts.valid, np.ones(n_valid, dtype=bool), cfg,
                                                  extra["valid"])
    summary = {
        "cutoff_timestamp": parts.cutoff,
        "cutoff_utc": datetime.fromtimestamp(parts.cutoff, tz=UTC).isoformat(),
        "counts": {"ratings": r.num_rows, "users": _n_unique(user), "movies": data.movies.num_rows,
                   "rated_movies": _n_unique(r[MOVIE].to_numpy()),
                   "eligible_train": parts.eligible_train, "eligible_eval": parts.eligible_eval,
                   "train": cfg.n_train, "eval": cfg.n_eval,
                   "eligible_valid": parts.eligible_valid, "valid": n_valid},
        "splits": {
            "train": {"positive_rate": _round(train_label.mean()), "users": _n_unique(user[parts.train.target])},
            "eval": {"positive_rate": _round(eval_label.mean()), "users": _n_unique(eval_users),
                     "warm_share": _round(warm.mean()), "cold_share": _round(1 - warm.mean()),
                     "warm_users": _n_unique(eval_users[warm])},
        },
        "valid_from_timestamp": parts.valid_from,
        # both splits together: what training and evaluation cost
        "history_lengths": _describe(np.concatenate([parts.train.history_len, parts.eval.history_len])),
        "prompt_chars": _describe(np.concatenate([train_chars, eval_chars])),
        "example_lengths": describe_example_lengths(cfg.tokenizer, [train_lines, eval_lines],
                                                    np.concatenate([train_chars, eval_chars])),
        "prompt_options": prompt_options,
        "oddities": data.oddities,
    }
    if n_valid:
        summary["splits"]["valid"] = {"positive_rate": _round(valid_label.mean()),
                                      "users": _n_unique(user[parts.valid.target])}
    if cfg.ranking_users:
        files[d.RANKING], summary["ranking"], ranking_counts = ranking_lines(data, parts.eval.target, eval_label,
                                                                            cfg, options)
        if ranking_counts:
            prompt_options["counts"]["ranking"] = ranking_counts
    if truth is not None:
        summary["oracle"] = oracle(truth, eval_users, r[MOVIE].to_numpy()[parts.eval.target], eval_label,
                                   warm, cfg.like_threshold)
    return files, summary


def _records(data: MovieLens, ex: Examples, warm: np.ndarray, cfg: DataConfig,
             extra: tuple = (None, ())) -> tuple[bytes, np.ndarray, np.ndarray]:
    """JSONL bytes of one split, its labels, and its prompt lengths in characters (`extra`: the hybrid
    options' lines, see hybrid.apply)."""
    r, movies = data.ratings, data.movies
    movie_ids = movies[MOVIE].to_numpy()
    titles = movies[TITLE].to_numpy(zero_copy_only=False)
    genres = movies[GENRES].to_numpy(zero_copy_only=False)
    movie, rating = r[MOVIE].to_numpy(), r[RATING].to_numpy()
    tgt = ex.target
    target_pos = np.searchsorted(movie_ids, movie[tgt])  # every rated movie is in movies (see load)
    history_pos = np.searchsorted(movie_ids, movie[ex.history])
    inputs = render_inputs(ex.owner, titles[history_pos], rating[ex.history], titles[target_pos],
                           genres[target_pos], cfg.like_threshold, *extra).tolist()
    label = rating[tgt] >= cfg.like_threshold
    columns = zip(inputs, label.tolist(), r[USER].to_numpy()[tgt].tolist(), movie[tgt].tolist(),
                  r[TIMESTAMP].to_numpy()[tgt].tolist(), rating[tgt].tolist(), ex.history_len.tolist(),
                  warm.tolist())
    lines = [json.dumps({"instruction": cfg.instruction, "input": text, "output": YES if y else NO,
                         USER_ID: u, MOVIE_ID: m, TIMESTAMP: t, "rating": s, LABEL: int(y),
                         "history_len": h, WARM: w}, ensure_ascii=False)
             for text, y, u, m, t, s, h, w in columns]
    # LLaMA-Factory's alpaca converter sends instruction + "\n" + input as the user turn
    prompt_chars = np.array([len(text) for text in inputs]) + len(cfg.instruction) + 1
    return ("\n".join(lines) + "\n").encode("utf-8"), label, prompt_chars


def _two_classes(what: str, liked: np.ndarray, cfg: DataConfig, r: pa.Table) -> None:
    """UserError unless `liked` holds both answers: a Yes/No model (and AUC) needs Yes and No examples."""
    n, yes = len(liked), int(np.count_nonzero(liked))
    if 0 < yes < n:
        return
    ratings = r[RATING].to_numpy()
    lo, hi = ratings.min(), ratings.max()
    fix = (f"every rating is {lo:g}: these ratings cannot tell likes apart" if lo == hi else
           f"ratings here run from {lo:g} to {hi:g}: pick a threshold above the lowest and at most the highest "
           "(4.0 as in the reference)" + ("" if what == "rating" else ", or raise n_train / n_eval"))
    raise UserError(f"like_threshold {cfg.like_threshold:g}: every {what} ({n:,}) would be labelled "
                    f"{YES if yes else NO}, leaving nothing to tell apart; {fix}")


def _describe(x: np.ndarray) -> dict[str, float]:
    return {"min": int(x.min()), "mean": _round(x.mean()), "std": _round(x.std()),
            "p50": _round(np.percentile(x, 50)), "p95": _round(np.percentile(x, 95)), "max": int(x.max())}


def _n_unique(x: np.ndarray) -> int:
    return len(pd.unique(x))  # np.unique sorts, and is slow on tens of millions of rows


def _round(x: float) -> float:
    return round(float(x), 6)


def _parquet(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue()


def _up_to_date(out: DatasetDir, fingerprint: str) -> bool:
    """Same fingerprint, and every output still as the manifest recorded it (sizes, cached sha256s)."""
    if not out.is_prepared() or out.manifest().get("fingerprint") != fingerprint:
        return False
    try:
        changed = out.changed()
    except UserError as e:  # a manifest edited by hand
        changed = [str(e)]
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        print(f"{changed[0]}{more}; rebuilding", file=sys.stderr)
        return False
    return True


def _log(message: str, start: float) -> None:
    print(f"[prepare {time.perf_counter() - start:5.1f}s] {message}", file=sys.stderr)
