"""`movierec report --run DIR`: report.md + plots/*.png rebuilt from a run folder's files only.

The sections mirror the reference run's parameter-and-performance sheet. Every input but
resolved_config.yaml is optional: a section whose files are missing says so. inputs reads the
files, stats computes the numbers, sections and quality write the markdown, plots the PNGs. The
comparisons with the baselines (paired bootstrap, llm+mf blend) come computed in metrics.json (evaluate).
"""

from __future__ import annotations

import argparse
import sys

from movierec.evaluation.report import quality, sections
from movierec.evaluation.report.inputs import load_run, run_files
from movierec.evaluation.report.plots import write_plots
from movierec.evaluation.report.stats import (
    parameter_counts,
)
from movierec.folders.io import atomic_write_text
from movierec.folders.rundir import RunDir


def build_report(run: dict, plots: dict[str, str], files: list[str]) -> str:
    """The markdown text; `plots` maps plot names to paths relative to the run folder, `files` lists it."""
    resolved = run["resolved"]
    head = (f"# Fine-tuning Parameters and Performance: {resolved.get('run_name', run['dir'].name)}\n\n"
            f"Rebuilt by `movierec report` from the files in `{run['dir']}`"
            + (f" (run created {resolved['created']})" if resolved.get("created") else "") + ".\n"
            + (f"\n**Warning:** {run['data_note']}.\n" if run.get("data_note") else ""))
    counts = parameter_counts(resolved, run["arch"])
    parts = [head, sections.model(run, run["arch"], counts), sections.method(run, counts), sections.dataset(run),
             sections.hyperparameters(run), sections.precision(run), sections.hardware(run),
             sections.performance(run), sections.eval_history(run, plots), quality.section(run, plots),
             sections.output(run, files), sections.command(run)]
    return "\n---\n\n".join(parts)


def main(args: argparse.Namespace) -> int:
    run = load_run(args.run, args.baselines)
    if run.get("data_note"):
        print(f"warning: {run['data_note']}", file=sys.stderr)
    plots = write_plots(run, run["dir"] / RunDir.PLOTS)
    path = run["dir"] / RunDir.REPORT
    atomic_write_text(path, build_report(run, plots, run_files(run["dir"])))
    print(f"wrote {path} and {len(plots)} plot(s) in {run['dir'] / 'plots'}")
    if run.get("baselines_note"):  # there, but computed on other data
        print(f"note: {run['baselines_note']}")
    for label, p, data in (("data manifest", run["manifest_path"], run["manifest"]),
                           ("baselines", run["baselines_path"], run["baselines"])):
        if p is not None and data is None and not (label == "baselines" and run.get("baselines_note")):
            print(f"note: {label} {p} not found; the report says so")
    return 0
