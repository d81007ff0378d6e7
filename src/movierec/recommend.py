"""`movierec recommend`: rank movies for one user by P(Yes), from the user's latest history."""

from __future__ import annotations

from typing import Any

import numpy as np

from movierec.errors import UserError
from movierec.datadir import DatasetDir
from movierec.rundir import RunDir

DEFAULT_POOL = 200  # most-rated movies the user has not rated, scored when no --candidates are given


def load_catalog(data: DatasetDir):
    """(manifest, ratings, movies) as written by `movierec prepare`, checked against its manifest."""
    import pandas as pd

    data.verify([data.RATINGS, data.MOVIES])
    return data.manifest(), pd.read_parquet(data.file(data.RATINGS)), pd.read_parquet(data.file(data.MOVIES))


def parse_candidates(text: str) -> list[int]:
    """`--candidates 1,2,3`: movie ids, duplicates dropped (first kept), at least one."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    try:
        ids = [int(x) for x in parts]
    except ValueError:
        raise UserError(f"--candidates: expected comma-separated movie ids, got {text!r}") from None
    if not ids:
        raise UserError(f"--candidates: no movie id in {text!r}")
    return list(dict.fromkeys(ids))


def candidate_movies(ratings, user_id: int, candidates: str | None, pool: int = DEFAULT_POOL) -> list[int]:
    if candidates is not None:
        return parse_candidates(candidates)
    seen = set(ratings.loc[ratings["userId"] == user_id, "movieId"].tolist())
    popular = ratings["movieId"].value_counts(sort=True)
    return [int(m) for m in popular.index if m not in seen][:pool]


def build_records(manifest: dict[str, Any], ratings, movies, user_id: int, movie_ids: list[int]) -> list[dict]:
    """One alpaca record per candidate, rendered like the training prompts."""
    from movierec.data.prompts import render_input

    cfg = manifest["config"]
    history = ratings[ratings["userId"] == user_id].sort_values(["timestamp", "movieId"]).tail(int(cfg["history_len"]))
    by_id = movies.set_index("movieId")
    unknown = [m for m in movie_ids if m not in by_id.index]
    if unknown:
        raise UserError(f"--candidates: unknown movie id(s) {', '.join(map(str, unknown[:5]))}")
    data_cfg = hybrid_config(cfg)
    if data_cfg is not None:  # the hybrid prompt options, by prepare's rules (data/hybrid.py)
        from movierec.data.hybrid import for_candidates

        both, shown, user_line, tails = for_candidates(ratings, data_cfg, user_id, movie_ids)
        return [{"movie_id": m, "instruction": cfg["instruction"],
                 "input": render_input(by_id.loc[both.movieId.to_numpy()[rows], "title"].tolist(),
                                       both.rating.to_numpy()[rows].astype(float).tolist(), by_id.at[m, "title"],
                                       by_id.at[m, "genres"], data_cfg.like_threshold, user_line, tail)}
                for m, rows, tail in zip(movie_ids, shown, tails)]
    titles = by_id.loc[history["movieId"], "title"].tolist()
    stars = history["rating"].astype(float).tolist()
    return [{"movie_id": m, "instruction": cfg["instruction"],
             "input": render_input(titles, stars, by_id.at[m, "title"], by_id.at[m, "genres"],
                                   float(cfg["like_threshold"]))}
            for m in movie_ids]


def hybrid_config(cfg: dict[str, Any]):
    """The manifest's data config when it turns a hybrid prompt option on, else None."""
    import dataclasses

    from movierec.data.config import DataConfig
    from movierec.data.hybrid import any_option

    names = {f.name for f in dataclasses.fields(DataConfig)} - {"synth"}
    data_cfg = dataclasses.replace(DataConfig(), **{k: v for k, v in cfg.items() if k in names})
    return data_cfg if any_option(data_cfg) else None


def main(args) -> int:
    from movierec.device import resolve_device
    from movierec.scoring import YesNoScorer, load_model_for_scoring

    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    if args.checkpoint == "all":
        raise UserError("--checkpoint: recommend uses one checkpoint (best, latest or checkpoint-N)")
    run = RunDir(args.run).require()
    lf_args = {**run.lf_args(), "model_name_or_path": run.model_path()}
    which = args.checkpoint
    try:
        (ckpt,) = run.select(which)
    except UserError:
        if which != "best":
            raise
        (ckpt,) = run.select("latest")  # runs without a tracked best
    data = run.dataset(args.data)
    manifest, ratings, movies = load_catalog(data)
    if not (ratings["userId"] == args.user).any():
        raise UserError(f"--user {args.user}: no ratings for this user in {data.file(data.RATINGS)}")
    movie_ids = candidate_movies(ratings, args.user, args.candidates)
    records = build_records(manifest, ratings, movies, args.user, movie_ids)
    device = resolve_device(args.device)
    model, tokenizer, template = load_model_for_scoring(lf_args, ckpt, device)
    scorer = YesNoScorer(model, tokenizer, template, int(lf_args.get("cutoff_len", 2048)))
    probs = scorer.score(records)
    order = np.argsort(-probs, kind="stable")[: args.top_k]
    titles = movies.set_index("movieId")["title"]
    rated = ratings.loc[ratings["userId"] == args.user].set_index("movieId")["rating"]
    print(f"top {len(order)} of {len(records)} candidates for user {args.user} ({ckpt.name}):")
    for rank, i in enumerate(order, 1):
        m = movie_ids[i]
        note = f"  (already rated {float(rated.at[m]):g})" if m in rated.index else ""
        print(f"{rank:>3}. P(Yes)={probs[i]:.3f}  {m:>7}  {titles.at[m]}{note}")
    if rated.index.isin(movie_ids).any():
        print(f"{int(rated.index.isin(movie_ids).sum())} candidate(s) the user has already rated: their prompts show "
              "the latest ratings, which may include that movie")
    q = np.quantile(probs, [0, 0.5, 1])
    print(f"P(Yes) over all {len(probs)} candidates: min {q[0]:.3f}, median {q[1]:.3f}, max {q[2]:.3f}")
    return 0
