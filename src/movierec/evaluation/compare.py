"""`evaluate`'s comparisons with the baselines, on the same eval examples (the report only renders them).

    paired   the fine-tuned LLM minus the baseline with the highest AUC: AUC, UAUC and log loss with the
             same user-level bootstrap resamples for both (metrics.paired_bootstrap), on the examples both scored
    blend    llm+mf (blend.py): its weight picked on the validation examples, its metrics on the eval
             examples, its own paired comparison with the same best baseline, and with each of its parts
             (`vs_parts`: the blend minus the LLM, the blend minus mf)

They read what `movierec baselines` wrote: baselines.json and, beside it, baselines_predictions.jsonl (per
eval example, a column per baseline) and baselines_validation.jsonl (mf per validation example).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from movierec.data.fields import LABEL, MOVIE_ID, USER_ID, WARM
from movierec.errors import UserError
from movierec.evaluation import blend
from movierec.folders.datadir import DatasetDir
from movierec.folders.io import read_json

KEY = [USER_ID, MOVIE_ID]  # an eval (or validation) example: a user's rating of a movie, once each


@dataclass(frozen=True)
class Baselines:
    """What `movierec baselines` wrote for the data evaluate scores."""

    path: Path  # baselines.json
    result: dict[str, Any]  # its content
    eval: pd.DataFrame  # user_id, movie_id, label, a P(like) column per baseline
    valid: pd.DataFrame | None  # user_id, movie_id, label, mf; None when the data has no validation examples


def load_baselines(path: Path, data_sha: str) -> tuple[Baselines | None, str | None]:
    """The baselines at `path` (baselines.json) and its per-example files, or None and why not."""
    if not path.is_file():
        return None, (f"no {path}: run `movierec baselines --data DIR` before evaluate for the paired comparison "
                      "with the best baseline and the llm+mf blend")
    result = read_json(path, hint="rerun `movierec baselines`")
    if not isinstance(result, dict) or not isinstance(result.get("baselines"), dict):
        raise UserError(f"{path}: not a baselines.json as `movierec baselines` writes it; rerun `movierec baselines`")
    reserved = sorted(set(result["baselines"]) & {*KEY, LABEL, WARM, "p"})  # the columns a comparison joins on
    if reserved:
        raise UserError(f"{path}: a baseline named {reserved[0]!r}, a column of the per-example files; rerun "
                        "`movierec baselines`")
    if result.get("data_manifest_sha256") not in (None, data_sha):
        return None, (f"{path} was computed on other prepared data (manifest sha256 "
                      f"{str(result['data_manifest_sha256'])[:12]}...): no paired comparison or blend; "
                      "rerun `movierec baselines`")
    predictions = path.parent / DatasetDir.BASELINE_PREDICTIONS
    if not predictions.is_file():
        return None, f"no {predictions} beside {path}: rerun `movierec baselines`"
    scored = list(_aucs(result))  # the baselines a comparison may pick: their scores must be there
    valid = path.parent / DatasetDir.BASELINE_VALIDATION
    return Baselines(path, result, _frame(predictions, scored),
                     _frame(valid, ["mf"]) if valid.is_file() else None), None


def _frame(path: Path, scores: list[str]) -> pd.DataFrame:
    """A JSONL file of `movierec baselines`: one row per (user, movie) with its label and a P(like) in [0, 1]
    per name in `scores`; one line UserError when it is not one (checked before any scoring: a damaged file
    must not cost the minutes of scoring first)."""
    fix = "rerun `movierec baselines`"
    try:
        frame = pd.read_json(path, lines=True, convert_dates=False, dtype=False)
    except (ValueError, AttributeError, TypeError) as e:  # a line that is not JSON, or not an object
        raise UserError(f"{path}: not JSON lines of objects ({e}); {fix}") from None
    if frame.empty:
        raise UserError(f"{path}: holds no examples; {fix}")
    missing = [c for c in [*KEY, LABEL, *scores] if c not in frame or frame[c].isna().any()]
    if missing:
        raise UserError(f"{path}: {', '.join(missing)} missing on some lines; {fix}")
    for column in KEY:
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise UserError(f"{path}: {column} holds values that are not integers; {fix}")
    if not frame[LABEL].isin([0, 1]).all() or frame[LABEL].map(type).eq(bool).any():
        raise UserError(f"{path}: label holds values other than 0 and 1; {fix}")
    for column in scores:
        values = pd.to_numeric(frame[column], errors="coerce")
        if frame[column].map(type).eq(bool).any() or values.isna().any() or not values.between(0, 1).all():
            raise UserError(f"{path}: {column} holds values that are not probabilities in [0, 1]; {fix}")
        frame[column] = values.astype(np.float64)
    duplicated = frame.duplicated(KEY)
    if duplicated.any():
        user, movie = (int(frame.at[duplicated.idxmax(), c]) for c in KEY)
        raise UserError(f"{path}: user {user}, movie {movie} appears on more than one line "
                        f"({int(duplicated.sum()):,} repeats); {fix}")
    return frame


def best_baseline(result: dict[str, Any]) -> str | None:
    """The baseline with the highest overall AUC in baselines.json (None when none has one)."""
    aucs = _aucs(result)
    return max(aucs, key=aucs.get) if aucs else None


def _aucs(result: dict[str, Any]) -> dict[str, float]:
    """Each baseline's overall AUC in baselines.json, where it holds one (a number)."""
    aucs = {}
    for name, block in result["baselines"].items():
        overall = block.get("overall") if isinstance(block, dict) else None
        auc = overall.get("auc") if isinstance(overall, dict) else None
        if isinstance(auc, (int, float)) and not isinstance(auc, bool):
            aucs[name] = float(auc)
    return aucs


def paired(labels: np.ndarray, probs: np.ndarray, other: np.ndarray, users: np.ndarray, baseline: str,
           n_boot: int) -> dict[str, Any]:
    """`probs` minus the baseline's `other` on the same examples and user resamples (seed 0, as every interval)."""
    from movierec.evaluation.metrics import paired_bootstrap

    return {"baseline": baseline, "examples": len(labels),
            "comparison": paired_bootstrap(labels, probs, other, users, n_boot=n_boot, seed=0)}


def compare(records: list[dict], probs: np.ndarray, valid_records: list[dict], valid_probs: np.ndarray,
            base: Baselines, n_boot: int) -> tuple[dict | None, dict | None, str | None]:
    """metrics.json's `paired` and `blend` entries for the LLM's P(Yes) `probs` on `records` (and
    `valid_probs` on `valid_records`, the validation examples), and a note when the blend is left out."""
    best = best_baseline(base.result)
    if best is None or best not in base.eval or "mf" not in base.eval:
        return None, None, f"{base.path}: no baseline with an AUC and per-example scores; rerun `movierec baselines`"
    llm = pd.DataFrame({USER_ID: [r[USER_ID] for r in records], MOVIE_ID: [r[MOVIE_ID] for r in records],
                        LABEL: [int(r[LABEL]) for r in records], "p": probs,
                        WARM: [bool(r.get(WARM, True)) for r in records]})
    both = llm.merge(base.eval[KEY + sorted({best, "mf"})], on=KEY, how="inner")
    if len(both) < len(llm):  # `movierec baselines` scores every eval example of the data it ran on
        return None, None, (f"{base.path}: scores {len(both):,} of the {len(llm):,} eval examples evaluate scored "
                            "(not the baselines of this data): no paired comparison or blend; rerun "
                            "`movierec baselines`")
    y, users = both.label.to_numpy(), both.user_id.to_numpy()
    pair = paired(y, both.p.to_numpy(), both[best].to_numpy(), users, best, n_boot)
    weight, note = choose(valid_records, valid_probs, base)
    if weight is None:
        return pair, None, note
    from movierec.evaluation.metrics import compute_metrics

    p = blend.blend(both.p.to_numpy(), both.mf.to_numpy(), weight["weight"])
    parts = {"llm": paired(y, p, both.p.to_numpy(), users, "llm", n_boot),
             "mf": paired(y, p, both.mf.to_numpy(), users, "mf", n_boot)}
    return pair, {"name": blend.NAME, **weight, "rule": blend.RULE,
                  "metrics": compute_metrics(y, p, users, both.warm.to_numpy(), n_boot=n_boot),
                  "paired": paired(y, p, both[best].to_numpy(), users, best, n_boot), "vs_parts": parts}, None


def choose(valid_records: list[dict], valid_probs: np.ndarray,
           base: Baselines) -> tuple[dict | None, str | None]:
    """The blend weight picked on the validation examples (blend.choose_weight), with what it was picked on;
    None and why when there is nothing to pick it on. Eval labels are never read here."""
    if not valid_records:
        return None, ("the data holds no validation examples (prepared by an older movierec): no llm+mf blend; "
                      "rerun `movierec prepare` and `movierec baselines`")
    if base.valid is None:
        return None, (f"no {base.path.parent / DatasetDir.BASELINE_VALIDATION} beside {base.path} (baselines run on "
                      "data without validation examples): no llm+mf blend; rerun `movierec baselines`")
    llm = pd.DataFrame({USER_ID: [r[USER_ID] for r in valid_records],
                        MOVIE_ID: [r[MOVIE_ID] for r in valid_records], "p": valid_probs})
    v = llm.merge(base.valid[[*KEY, LABEL, "mf"]], on=KEY, how="inner")
    if len(v) < len(llm):
        return None, (f"{base.path.parent / DatasetDir.BASELINE_VALIDATION}: scores {len(v):,} of the {len(llm):,} "
                      "validation examples (not the baselines of this data): no llm+mf blend; rerun "
                      "`movierec baselines`")
    if v.label.nunique() < 2:
        return None, "the validation examples hold a single label: no llm+mf blend"
    weight, aucs = blend.choose_weight(v.label.to_numpy(), v.p.to_numpy(), v.mf.to_numpy())
    return {"weight": weight, "validation": {"n": len(v), "auc_by_weight": [[float(w), a] for w, a in
                                                                            zip(blend.GRID, aucs)],
                                             "llm_auc": aucs[-1], "mf_auc": aucs[0]}}, None
