"""`movierec recommend`: rank movies by P(Yes) from a user's latest history: one user (printed), or
every eval user at once (`--users all --out FILE.parquet`: the top K of each, one row per movie)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from movierec.data.fields import MOVIE_ID, P_YES, USER_ID
from movierec.data.movielens import TIMESTAMP
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir
from movierec.train.config import arg

DEFAULT_POOL = 200  # most-rated movies the user has not rated, scored when no --candidates are given


def load_catalog(data: DatasetDir):
    """(manifest, ratings, movies) as written by `movierec prepare`, checked against its manifest."""
    import pandas as pd

    data.verify([data.RATINGS, data.MOVIES])
    data.data_config()  # build_records reads it
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


def candidate_movies(ratings, user_id: int, candidates: str | None, pool: int = DEFAULT_POOL,
                     popular: list[int] | None = None) -> list[int]:
    """--candidates, else the `pool` most-rated movies the user has not rated (`popular`: all movies, most
    rated first, computed once by the caller for many users)."""
    if candidates is not None:
        return parse_candidates(candidates)
    seen = set(ratings.loc[ratings["userId"] == user_id, "movieId"].tolist())
    popular = popular if popular is not None else ratings["movieId"].value_counts(sort=True).index.tolist()
    out = []
    for m in popular:
        if m not in seen:
            out.append(int(m))
            if len(out) == pool:
                break
    return out


def build_records(manifest: dict[str, Any], ratings, movies, user_id: int, movie_ids: list[int]) -> list[dict]:
    """One alpaca record per candidate, rendered like the training prompts."""
    from movierec.data.prompts import render_input

    cfg = manifest["config"]
    history = ratings[ratings["userId"] == user_id].sort_values([TIMESTAMP, "movieId"]).tail(int(cfg["history_len"]))
    by_id = movies if movies.index.name == "movieId" else movies.set_index("movieId")
    unknown = [m for m in movie_ids if m not in by_id.index]
    if unknown:
        raise UserError(f"--candidates: unknown movie id(s) {', '.join(map(str, unknown[:5]))}")
    data_cfg = hybrid_config(cfg)
    if data_cfg is not None:  # the hybrid prompt options, by prepare's rules (data/hybrid.py)
        from movierec.data.hybrid import for_candidates

        both, shown, user_line, tails = for_candidates(ratings, data_cfg, user_id, movie_ids)
        return [{MOVIE_ID: m, "instruction": cfg["instruction"],
                 "input": render_input(by_id.loc[both.movieId.to_numpy()[rows], "title"].tolist(),
                                       both.rating.to_numpy()[rows].astype(float).tolist(), by_id.at[m, "title"],
                                       by_id.at[m, "genres"], data_cfg.like_threshold, user_line, tail)}
                for m, rows, tail in zip(movie_ids, shown, tails)]
    titles = by_id.loc[history["movieId"], "title"].tolist()
    stars = history["rating"].astype(float).tolist()
    return [{MOVIE_ID: m, "instruction": cfg["instruction"],
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


def _load(args):
    """(run's lf_args, checkpoint, data folder, device) of `args`, checked."""
    from movierec.device import resolve_device

    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    if args.checkpoint == "all":
        raise UserError("--checkpoint: recommend uses one checkpoint (best, latest or checkpoint-N)")
    if (args.user is None) == (args.users is None):
        raise UserError("give --user ID (one user, printed) or --users all --out FILE.parquet (every eval user)")
    if args.users is not None and (args.users != "all" or not args.out):
        raise UserError("--users: only `all` (every eval user), with --out FILE.parquet")
    if args.out and args.users is None:
        raise UserError("--out: only with --users all (one --user is printed)")
    run = RunDir(args.run).require()
    lf_args = {**run.lf_args(), "model_name_or_path": run.model_path()}
    (ckpt,) = run.select(args.checkpoint)  # a recorded best that is broken or gone is named, never replaced
    return lf_args, ckpt, run.dataset(args.data), resolve_device(args.device)


def main(args) -> int:
    from movierec.evaluation.scoring import YesNoScorer, load_model_for_scoring

    lf_args, ckpt, data, device = _load(args)
    manifest, ratings, movies = load_catalog(data)
    if args.users is not None:
        return recommend_all(args, lf_args, ckpt, data, device, manifest, ratings, movies)
    if not (ratings["userId"] == args.user).any():
        raise UserError(f"--user {args.user}: no ratings for this user in {data.file(data.RATINGS)}")
    movie_ids = candidate_movies(ratings, args.user, args.candidates)
    records = build_records(manifest, ratings, movies, args.user, movie_ids)
    model, tokenizer, template = load_model_for_scoring(lf_args, ckpt, device)
    scorer = YesNoScorer(model, tokenizer, template, int(arg(lf_args, "cutoff_len")))
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


def _check_writable(out: Path) -> None:
    """--out can be written (its folder, or the nearest existing one above it): checked before any scoring."""
    import tempfile

    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".movierec-probe-"):
            pass
    except OSError as e:
        raise UserError(f"--out: cannot write to {out} ({e.strerror or e} in {folder})") from None


def recommend_all(args, lf_args, ckpt, data: DatasetDir, device: str, manifest, ratings, movies) -> int:
    """Every eval user's candidates scored in one call (each user's history prefix computed once), the
    top K per user written to --out as parquet: user_id, rank, movie_id, title, p_yes."""
    import pandas as pd

    from movierec.evaluation.scoring import (
        YesNoScorer,
        eval_records,
        load_model_for_scoring,
    )
    from movierec.folders.io import atomic_write_bytes

    out = Path(args.out)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if out.suffix != ".parquet":
        raise UserError(f"--out: expected a .parquet file, got {out}")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out: {out.parent} is not a folder")
    if out.is_dir():
        raise UserError(f"--out: {out} is a folder; name the .parquet file to write")
    _check_writable(out)
    users = sorted({int(r[USER_ID]) for r in eval_records(lf_args, data)})
    popular = ratings["movieId"].value_counts(sort=True).index.tolist()
    by_id = movies.set_index("movieId")
    per_user = dict(iter(ratings[ratings["userId"].isin(users)].groupby("userId")))  # one pass over the ratings
    records, owners, candidates = [], [], []
    for user in users:
        movie_ids = candidate_movies(per_user[user], user, args.candidates, popular=popular)
        records += build_records(manifest, per_user[user], by_id, user, movie_ids)
        owners += [user] * len(movie_ids)
        candidates += movie_ids
    model, tokenizer, template = load_model_for_scoring(lf_args, ckpt, device)
    batch = {"batch_size": args.batch_size} if args.batch_size else {}
    scorer = YesNoScorer(model, tokenizer, template, int(arg(lf_args, "cutoff_len")), **batch)
    probs = scorer.score_ids(scorer.encode_many(records), progress=True, groups=owners)
    table = pd.DataFrame({USER_ID: owners, MOVIE_ID: candidates, P_YES: probs})
    table = table.sort_values([USER_ID, P_YES], ascending=[True, False], kind="stable")
    table["rank"] = table.groupby(USER_ID).cumcount() + 1
    table = table[table["rank"] <= args.top_k]
    table["title"] = by_id.loc[table[MOVIE_ID], "title"].to_numpy()
    table = table[[USER_ID, "rank", MOVIE_ID, "title", P_YES]].reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, table.to_parquet(index=False))
    print(f"top {args.top_k} of {len(records) // max(len(users), 1):,} candidates for each of {len(users):,} eval "
          f"users ({ckpt.name}): {out}")
    return 0
