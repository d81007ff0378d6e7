"""The report's PNG plots (matplotlib, Agg): loss and eval AUC curves against the baselines, calibration."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from movierec.data.fields import LABEL, P_YES
from movierec.evaluation.report.stats import ordered_baselines
from movierec.folders.io import atomic_write_bytes


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_plots(run: dict, plot_dir: Path) -> dict[str, str]:
    """PNG plots for whatever data exists; returns {name: path relative to the run folder}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    for name, fig in [*_curves(run, plt), ("auc_comparison", _auc_comparison(run, plt)),
                      ("calibration", _calibration(run, plt))]:
        if fig is not None:
            _save(fig, plot_dir / f"{name}.png")
            written[name] = f"{plot_dir.name}/{name}.png"
    return written


def _curves(run: dict, plt) -> list[tuple[str, object]]:
    """Training loss, eval loss and eval AUC per step (the AUC with the baselines and the oracle)."""
    out, log = [], run["log"]
    series = {"train_loss": ("loss", "training loss"), "eval_loss": ("eval_loss", "eval loss"),
              "eval_auc": ("eval_auc", "eval AUC (Yes/No)")}
    for name, (col, label) in series.items():
        if col not in log or log[col].dropna().empty:
            continue
        s = log[col].dropna()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(s.index, s.to_numpy(), marker="o" if len(s) < 50 else None, label=label)
        if name == "eval_auc" and run["baselines"]:
            for i, (b, blocks) in enumerate(ordered_baselines(run["baselines"])):
                v, ci = blocks["overall"].get("auc"), blocks["overall"].get("auc_ci95")
                if v is not None:
                    ax.axhline(v, ls="--", lw=1, color=f"C{i + 1}", label=f"{b} baseline")
                    if ci and None not in ci:  # its 95% interval as a faint band
                        ax.axhspan(ci[0], ci[1], color=f"C{i + 1}", alpha=0.07, lw=0)
            oracle = run["baselines"].get("oracle")
            if oracle and oracle["metrics"]["overall"].get("auc") is not None:
                ax.axhline(oracle["metrics"]["overall"]["auc"], ls=":", lw=1.5, color="k", label="oracle (ceiling)")
        ax.set(xlabel="optimizer step", ylabel=label, title=f"{label} — {run['resolved'].get('run_name', '')}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        out.append((name, fig))
    return out


def _auc_comparison(run: dict, plt):
    """Every model's AUC with its interval, on the same eval examples (None without rows)."""
    rows = auc_rows(run)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, (name, auc, ci) in enumerate(rows):
        err = [[auc - ci[0]], [ci[1] - auc]] if ci else None
        ax.errorbar(auc, y, xerr=err, fmt="o", color="C0" if name.startswith("LLM") else "gray", capsize=3)
    ax.axvline(0.5, ls=":", color="gray", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="AUC on the eval examples (bars: 95% user-level bootstrap interval)",
           title="Models on the same eval examples")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _calibration(run: dict, plt):
    """The fine-tuned model's calibration in 10 bins (None without predictions)."""
    if not run["predictions"]:
        return None
    from movierec.evaluation.metrics import calibration_bins

    pred = pd.DataFrame(run["predictions"])
    bins = calibration_bins(pred[LABEL], pred[P_YES], n_bins=10)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
    ax.plot(bins.mean_pred, bins.frac_pos, marker="o", label="model")
    for row in bins.itertuples():
        ax.annotate(f"{row.count}", (row.mean_pred, row.frac_pos), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set(xlabel="mean P(Yes) in bin", ylabel="share of positives", xlim=(0, 1), ylim=(0, 1),
           title="Calibration (10 equal-width bins; counts annotated)")
    ax.legend(fontsize=8)
    return fig


def auc_rows(run: dict) -> list[tuple[str, float, list[float] | None]]:
    """(model, overall AUC, its 95% interval or None): the LLM, its zero-shot row, the llm+mf blend, the
    baselines, the oracle."""
    blocks = []
    m = run["metrics"] or {}
    if m.get("metrics"):
        blocks.append((f"LLM fine-tuned ({m.get('checkpoint', '?')})", m["metrics"]))
    if m.get("zero_shot"):
        blocks.append(("LLM zero-shot", m["zero_shot"]["metrics"]))
    if m.get("blend"):
        blocks.append((f"LLM+mf blend (w = {m['blend']['weight']:.2f})", m["blend"]["metrics"]))
    if run["baselines"]:
        blocks += [(f"baseline: {name}", b) for name, b in ordered_baselines(run["baselines"])]
    oracle = (run["baselines"] or {}).get("oracle") or m.get("oracle")
    if oracle:
        blocks.append(("oracle (ceiling)", oracle["metrics"]))
    rows = []
    for name, b in blocks:
        o = b.get("overall") or {}
        if o.get("auc") is not None:
            ci = o.get("auc_ci95")
            rows.append((name, o["auc"], ci if ci and None not in ci else None))
    return rows
