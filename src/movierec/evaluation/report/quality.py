"""The report's Recommendation Quality section: the LLM beside the baselines and the oracle, with 95%
intervals where metrics.json / baselines.json carry them (`auc_ci95: [low, high]`), and ranking metrics."""

from __future__ import annotations

import math
from typing import Any

from movierec.evaluation.report.markdown import NA, fmt, table
from movierec.evaluation.report.stats import ordered_baselines

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
    digits = min(max(2, -math.floor(math.log10(hi - lo))), 5) if hi > lo else 2  # a constant: as its neighbours
    return f"{v:.{digits + 1}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _metric_row(name: str, blocks: dict, group: str) -> list[Any]:
    b = blocks.get(group) or {}
    return [name, group] + [metric_cell(b, key) if b.get("n") else "—" for _, key in METRIC_COLUMNS]


def _ranking(rankings: dict[str, dict]) -> str:
    """One row per model: HR@k, NDCG@k, MRR (with intervals) and the lists scored."""
    cols: list[str] = []
    for block in rankings.values():
        cols += [k for k in block if k.startswith(("hr@", "ndcg@", "mrr")) and not k.endswith("_ci95")
                 and k not in cols]
    cols.sort(key=lambda k: (("hr@", "ndcg@", "mrr").index(k.split("@")[0] + ("@" if "@" in k else "")),
                             int(k.split("@")[1]) if "@" in k else 0))  # hr@1, hr@5, hr@10, ndcg@1, ..., mrr
    sizes = next(iter(rankings.values())).get("candidates_per_user") or {}
    return ("\n### Ranking\n\nEach eval user with a liked eval target ranks one list: their eval targets and "
            "unrated movies sampled by popularity (prepared once, the same for every model); relevant = the "
            f"liked targets. {fmt(next(iter(rankings.values())).get('users'))} lists of "
            f"{fmt(sizes.get('min'))}-{fmt(sizes.get('max'))} candidates.\n\n"
            + table(["Model", *cols], [[name, *(metric_cell(b, k) for k in cols)] for name, b in rankings.items()]))


def section(run: dict, plots: dict[str, str]) -> str:
    out = ["## Recommendation Quality\n\n"]
    m, base = run["metrics"], run["baselines"]
    if m is None and base is None:
        return out[0] + f"{NA} (run `movierec evaluate --run DIR` and `movierec baselines --data DATA`)\n"
    models, rankings = {}, {}  # name -> {group: metrics block}, name -> ranking block
    out += _llm_rows(run, models, rankings)
    where = run["baselines_path"]
    if base is not None:
        for k, blocks in ordered_baselines(base):
            models[f"baseline: {k}"], rankings[f"baseline: {k}"] = blocks, blocks.get("ranking")
        out.append(f"Baselines from `{where}` (fitted on ratings before "
                   f"cutoff_timestamp {base.get('cutoff_timestamp')}, scored on the same eval examples).\n\n")
    elif run.get("baselines_note"):
        out.append(f"Baselines {NA}: {run['baselines_note']}.\n\n")
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
    out += [_paired(pair, who) for pair, who in _pairs(m, base)]
    out.append(_blend_parts(((m or {}).get("blend") or {}).get("vs_parts")))
    rankings = {name: r for name, r in rankings.items() if r}
    if rankings:
        out.append(_ranking(rankings))
    if m and m.get("per_checkpoint"):
        out.append("\n### Per Checkpoint\n\n")
        cols = [(label, k) for label, k in METRIC_COLUMNS if any(k in v for v in m["per_checkpoint"].values())]
        out.append(table(["Checkpoint", *(label for label, _ in cols)],
                         [[c, *(metric_cell(v, k) for _, k in cols)] for c, v in m["per_checkpoint"].items()]))
    if "auc_comparison" in plots:
        out.append(f"\n![AUC with 95% intervals]({plots['auc_comparison']})\n")
    if "calibration" in plots:
        out.append(f"\n![Calibration]({plots['calibration']})\n")
    return "".join(out)


def _llm_rows(run: dict, models: dict, rankings: dict) -> list[str]:
    """Adds the LLM's rows (fine-tuned, zero-shot, llm+mf blend) to `models` and `rankings`; their text."""
    m, out = run["metrics"], []
    if m is not None and m.get("metrics"):
        name = f"LLM fine-tuned ({m.get('checkpoint', '?')})"
        models[name], rankings[name] = m["metrics"], m.get("ranking") or m["metrics"].get("ranking")
        out.append(f"LLM scored by `movierec evaluate`: {m.get('checkpoint')} on {fmt(m.get('n'))} eval examples; "
                   "P(Yes) from the Yes/No logits, threshold 0.5.\n\n")
        stale = stale_note(m.get("checkpoint"), run["checkpoints"])
        if stale:
            out.append(f"**Note:** {stale}\n\n")
    else:
        out.append(f"LLM metrics {NA} (no metrics.json: run `movierec evaluate --run DIR`).\n\n")
    if m is not None and m.get("zero_shot"):
        models["LLM zero-shot (base model)"] = m["zero_shot"]["metrics"]
        rankings["LLM zero-shot (base model)"] = m["zero_shot"].get("ranking")
        out.append("The zero-shot row scores the base model without the adapter, the same way "
                   "(`movierec evaluate --checkpoint base`).\n\n")
    elif m is not None:
        out.append("No zero-shot row (run `movierec evaluate --run DIR --checkpoint base`).\n\n")
    blend = (m or {}).get("blend")
    if blend:
        models[blend_label(blend)] = blend["metrics"]
        out.append(f"The {blend['name']} row blends the fine-tuned LLM's P(Yes) with the mf baseline's P(like) "
                   f"({blend['rule']}), picked on {fmt(blend['validation']['n'])} validation examples (train-period "
                   "targets the LLM never read), never on these eval examples.\n\n")
    return out


def blend_label(blend: dict) -> str:
    """The blend's row name: its name and the weight on the LLM."""
    return f"{blend['name']} blend (w = {blend['weight']:.2f})"


def _pairs(m: dict | None, base: dict | None) -> list[tuple[dict, str]]:
    """metrics.json's paired comparisons (the LLM's, the blend's) whose baseline is among those shown."""
    shown = (base or {}).get("baselines") or {}
    pairs = [((m or {}).get("paired"), "LLM"), (((m or {}).get("blend") or {}).get("paired"), "blend")]
    return [(pair, who) for pair, who in pairs if pair and pair.get("baseline") in shown]


def _paired(paired: dict, who: str = "LLM") -> str:
    """The fine-tuned LLM (or the llm+mf blend) against the best baseline on the same examples, the same
    user resamples (computed by evaluate: compare.py)."""
    rows = []
    for key, label in (("auc", "AUC"), ("uauc", "UAUC"), ("log_loss", "Log loss")):
        d = paired["comparison"].get(key) or {}
        if d.get("diff") is None:
            continue
        lo, hi = d.get("diff_ci95") or (None, None)
        rows.append([label, fmt(d["a"], 4), fmt(d["b"], 4), f"{d['diff']:+.4f}",
                     f"[{lo:+.4f}, {hi:+.4f}]" if lo is not None else "—", fmt(d.get("share_a_better"), 3)])
    title, model = ("LLM", "the fine-tuned LLM") if who == "LLM" else ("LLM+mf Blend", "the llm+mf blend")
    return (f"\n### {title} vs the Best Baseline\n\nPaired user-level bootstrap ({paired['comparison'].get('n_boot')} "
            f"resamples of {fmt(paired['comparison'].get('users'))} users): {model} minus "
            f"`{paired['baseline']}` (the baseline with the highest AUC), on the same eval examples.\n\n"
            + table(["Metric", who, paired["baseline"], "Difference", "95% interval", f"Share {who} better"], rows))


def _blend_parts(parts: dict | None) -> str:
    """The llm+mf blend against each of its parts (does blending pay?), paired as above."""
    if not parts:
        return ""
    rows = []
    for name, pair in parts.items():
        d = pair["comparison"].get("auc") or {}
        lo, hi = d.get("diff_ci95") or (None, None)
        rows.append([name, fmt(d.get("a"), 4), fmt(d.get("b"), 4), f"{d['diff']:+.4f}" if d.get("diff") is not None
                     else NA, f"[{lo:+.4f}, {hi:+.4f}]" if lo is not None else "—"])
    return ("\n### LLM+mf Blend vs its Parts\n\nPaired as above: the blend's AUC minus each part's, on the same "
            "eval examples.\n\n" + table(["Part", "Blend AUC", "Part AUC", "Difference", "95% interval"], rows))


def stale_note(scored: str | None, checkpoints: list[str]) -> str | None:
    """What to say when metrics.json scored a checkpoint the run no longer holds (a resume rotated it away)."""
    if not scored or not scored.startswith("checkpoint-") or not checkpoints:
        return None
    if scored not in checkpoints:
        latest = max(int(c.rsplit("-", 1)[1]) for c in checkpoints)
        return (f"metrics.json scored {scored}, which the run no longer holds (it has trained on to step {latest:,}); "
                "rerun `movierec evaluate`")
    return None
