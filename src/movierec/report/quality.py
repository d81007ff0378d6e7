"""The report's Recommendation Quality section: the LLM beside the baselines and the oracle, with 95%
intervals where metrics.json / baselines.json carry them (`auc_ci95: [low, high]`), and ranking metrics."""

from __future__ import annotations

import math
from typing import Any

from movierec.report.sections import NA, fmt, table
from movierec.report.stats import ordered_baselines

METRIC_COLUMNS = [("N", "n"), ("AUC", "auc"), ("UAUC", "uauc"), ("Log loss", "log_loss"),
                  ("Accuracy", "accuracy"), ("F1", "f1"), ("ECE", "ece")]
GROUPS = ("overall", "warm", "cold")


def metric_cell(block: dict, key: str) -> str:
    """A metric's text: 4 decimals, or with its 95% interval (`KEY_ci95`) as "0.800 [0.78, 0.82]",
    the bounds to two significant digits of the interval's width and the value to one more."""
    v, ci = block.get(key), block.get(f"{key}_ci95")
    if v is None or not ci or None in ci:
        return fmt(v, 4)
    lo, hi = ci
    digits = min(max(2, -math.floor(math.log10(hi - lo))), 5) if hi > lo else 4
    return f"{v:.{digits + 1}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _metric_row(name: str, blocks: dict, group: str) -> list[Any]:
    b = blocks.get(group) or {}
    return [name, group] + [metric_cell(b, key) if b.get("n") else "—" for _, key in METRIC_COLUMNS]


def _ranking(rankings: dict[str, dict]) -> str:
    """One row per model; columns are the ranking block's keys (hr@10, ndcg@10, mrr, ...) in file order."""
    cols: list[str] = []
    for block in rankings.values():
        cols += [k for k in block if not k.endswith("_ci95") and k not in cols]
    return ("\n### Ranking\n\nRanking metrics as `movierec evaluate` and `movierec baselines` computed them "
            "(each model's `ranking` block).\n\n"
            + table(["Model", *cols], [[name, *(metric_cell(b, k) for k in cols)] for name, b in rankings.items()]))


def section(run: dict, plots: dict[str, str]) -> str:
    out = ["## Recommendation Quality\n\n"]
    m, base = run["metrics"], run["baselines"]
    if m is None and base is None:
        return out[0] + f"{NA} (run `movierec evaluate --run DIR` and `movierec baselines --data DATA`)\n"
    models, rankings = {}, {}  # name -> {group: metrics block}, name -> ranking block
    if m is not None:
        name = f"LLM ({m.get('checkpoint', '?')})"
        models[name], rankings[name] = m["metrics"], m.get("ranking") or m["metrics"].get("ranking")
        out.append(f"LLM scored by `movierec evaluate`: {m.get('checkpoint')} on {fmt(m.get('n'))} eval examples; "
                   "P(Yes) from the Yes/No logits, threshold 0.5.\n\n")
    else:
        out.append(f"LLM metrics {NA} (no metrics.json: run `movierec evaluate --run DIR`).\n\n")
    where = run["baselines_path"]
    if base is not None:
        for k, blocks in ordered_baselines(base):
            models[f"baseline: {k}"], rankings[f"baseline: {k}"] = blocks, blocks.get("ranking")
        out.append(f"Baselines from `{where}` (fitted on ratings before "
                   f"cutoff_timestamp {base.get('cutoff_timestamp')}, scored on the same eval examples).\n\n")
    elif where is not None:
        out.append(f"Baselines {NA}: `{where}` not found (run `movierec baselines --data {where.parent}`, "
                   "or pass `--baselines FILE`).\n\n")
    else:
        out.append(f"Baselines {NA}: no data_manifest in resolved_config.yaml to find them by "
                   "(pass `--baselines FILE`).\n\n")
    oracle = (base or {}).get("oracle") or (m or {}).get("oracle")
    if oracle:
        name = "oracle (true probabilities)"
        models[name], rankings[name] = oracle["metrics"], oracle.get("ranking") or oracle["metrics"].get("ranking")
        out.append("The oracle row scores the synthetic generator's true like-probabilities: the ceiling "
                   "any model can reach on this data.\n\n")
    rows = [_metric_row(name, blocks, group) for group in GROUPS for name, blocks in models.items() if group in blocks]
    if any(f"{key}_ci95" in (blocks.get(g) or {})
           for blocks in models.values() for g in GROUPS for _, key in METRIC_COLUMNS):
        out.append("Brackets: 95% confidence interval.\n\n")
    out.append(table(["Model", "Users", *(c for c, _ in METRIC_COLUMNS)], rows))
    rankings = {name: r for name, r in rankings.items() if r}
    if rankings:
        out.append(_ranking(rankings))
    if m and m.get("per_checkpoint"):
        out.append("\n### Per Checkpoint\n\n")
        cols = [(label, k) for label, k in METRIC_COLUMNS if any(k in v for v in m["per_checkpoint"].values())]
        out.append(table(["Checkpoint", *(label for label, _ in cols)],
                         [[c, *(metric_cell(v, k) for _, k in cols)] for c, v in m["per_checkpoint"].items()]))
    if "calibration" in plots:
        out.append(f"\n![Calibration]({plots['calibration']})\n")
    return "".join(out)
