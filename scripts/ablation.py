#!/usr/bin/env python
"""The prompt ablation on real data: one prepared variant per prompt option, the same eval rows for all,
the tiny model trained on each (configs/tiny_ml100k.yaml), every baseline and the llm+mf blend beside it.

    python scripts/ablation.py --raw ML100K_DIR --out output/ablation          # ~5 trainings, see --variants
    python scripts/ablation.py --raw DIR --config configs/data/demo.yaml --train-config configs/demo_tiny.yaml
        --out output/ablation-demo --model output/tiny-qwen3         # (one command)

Writes OUT/table.md (AUC [95% interval], UAUC, HR@10, NDCG@10, the paired AUC difference from the best
baseline with its interval, the blend's paired difference from each of its parts, steps and training time)
and OUT/ablation.json. `--table-only` rebuilds the table from the finished variants. A variant already done (its
metrics.json exists) is not trained again: rerun after an interruption to finish the rest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: data-config overrides (every option is off in the reference data config)
    "reference": [],
    "relevant history": ["history_select=relevant"],
    "+ candidate/user stats": ["history_select=relevant", "candidate_stats=true", "user_stats=true"],
    "+ cf_score": ["history_select=relevant", "cf_score=true"],
    "all": ["history_select=relevant", "candidate_stats=true", "user_stats=true", "cf_score=true"],
}


def movierec(*args: str) -> None:
    cmd = [sys.executable, "-m", "movierec", *args]
    print("$", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"error: {' '.join(args[:1])} failed; fix the cause and rerun (finished variants are kept)")


def tiny_model(args: argparse.Namespace) -> None:
    """The training config's tiny model (`output/tiny-qwen3`, built offline), made when it is missing."""
    import yaml

    model = args.model or yaml.safe_load(args.train_config.read_text()).get("model_name_or_path", "")
    path = Path(model) if Path(model).is_absolute() else ROOT / model
    if Path(model).name == "tiny-qwen3" and not path.exists():
        movierec("make-tiny-model", str(path))


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    slug = name.replace(" ", "-").replace("/", "-").replace("+", "plus")
    data, run = args.out / "data" / slug, args.out / "runs" / slug
    metrics = run / "metrics.json"
    if not metrics.is_file() and args.table_only:
        sys.exit(f"error: {name}: not finished ({metrics} missing); run without --table-only")
    if not metrics.is_file():
        movierec("prepare", "--config", str(args.config), "--input", str(args.raw), "--out", str(data),
                 *[x for o in overrides for x in ("--override", o)])
        movierec("baselines", "--data", str(data))
        start = time.perf_counter()
        train = [str(ROOT / "scripts" / "train_llamafactory.py"), "--config", str(args.train_config), "--device", "cpu",
                 "--override", f"dataset_dir={data}", "--override", f"output_dir={run}", "--overwrite",
                 *(["--override", f"model_name_or_path={args.model}"] if args.model else []),
                 *[x for o in args.train_override for x in ("--override", o)]]
        print("$", " ".join(train), flush=True)
        if subprocess.run([sys.executable, *train], cwd=ROOT).returncode != 0:
            sys.exit(f"error: training {name} failed; see {run}/train.log")
        (run / "ablation_time.json").write_text(json.dumps({"train_seconds": time.perf_counter() - start}))
        movierec("evaluate", "--run", str(run), "--checkpoint", "best", "--device", "cpu")
    return {"variant": name, "overrides": overrides, "data": str(data), "run": str(run),
            "metrics": json.loads(metrics.read_text()),
            "baselines": json.loads((data / "baselines.json").read_text()),
            "train_seconds": json.loads((run / "ablation_time.json").read_text())["train_seconds"],
            "steps": json.loads((run / "trainer_state.json").read_text()).get("global_step")}


def _cell(block: dict, key: str = "auc") -> str:
    value, ci = block.get(key), block.get(f"{key}_ci95")
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")


def _diff(pair: dict | None) -> str:
    if not pair:
        return "—"
    d = pair["comparison"]["auc"]
    return f"{d['diff']:+.3f} [{d['diff_ci95'][0]:+.3f}, {d['diff_ci95'][1]:+.3f}]"


def _row(name: str, overall: dict, ranking: dict | None, paired: dict | None, parts: dict | None = None,
         steps="", seconds="") -> str:
    r = ranking or {}
    versus = f"{_diff(paired)} vs {paired['baseline']}" if paired else "—"
    own = f"{_diff(parts['llm'])}; {_diff(parts['mf'])}" if parts else "—"
    hr, ndcg = r.get("hr@10"), r.get("ndcg@10")
    return (f"| {name} | {_cell(overall)} | {_cell(overall, 'uauc')} | {'—' if hr is None else f'{hr:.3f}'} | "
            f"{'—' if ndcg is None else f'{ndcg:.3f}'} | {versus} | {own} | {steps} | {seconds} |\n")


def table(results: list[dict]) -> str:
    out = ["| row | AUC [95% CI] | UAUC [95% CI] | HR@10 | NDCG@10 | ΔAUC vs best baseline [95% CI] | "
           "blend minus LLM; minus mf | steps | train time |\n", "|---|---|---|---|---|---|---|---|---|\n"]
    eval_rows = set()
    for r in results:
        m = r["metrics"]
        eval_rows.add(m["n"])
        out.append(_row(f"LLM, {r['variant']}", m["metrics"]["overall"], m.get("ranking"), m.get("paired"), None,
                        r["steps"], f"{r['train_seconds'] / 60:.1f} min"))
        if m.get("blend"):
            b = m["blend"]
            out.append(_row(f"llm+mf (w={b['weight']:g}), {r['variant']}", b["metrics"]["overall"], None,
                            b.get("paired"), b.get("vs_parts")))
    base = results[0]["baselines"]
    for name, block in base["baselines"].items():
        out.append(_row(f"baseline: {name}", block["overall"], block.get("ranking"), None))
    if len(eval_rows) != 1:
        out.append(f"\nwarning: the variants scored different numbers of eval examples: {sorted(eval_rows)}\n")
    return "".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--raw", type=Path, help="the MovieLens input (zip or folder) every variant prepares")
    p.add_argument("--out", type=Path, default=ROOT / "output" / "ablation", help="where data, runs and the table go")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "data" / "movielens_100k.yaml",
                   help="the reference data config; each variant adds its options as overrides")
    p.add_argument("--train-config", type=Path, default=ROOT / "configs" / "tiny_ml100k.yaml", help="training config")
    p.add_argument("--model", help="base model folder (default: the training config's)")
    p.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every training run, e.g. max_steps=300 for a quick look")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="rows to run")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from finished variants")
    args = p.parse_args()
    for key in ("raw", "out", "config", "train_config"):  # the commands below run from the repository root
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).expanduser().resolve())
    if args.model and Path(args.model).expanduser().exists():
        args.model = str(Path(args.model).expanduser().resolve())
    if not args.table_only and (args.raw is None or not args.raw.exists()):
        sys.exit(f"error: --raw {args.raw}: not found")
    if not args.table_only:
        tiny_model(args)
    results = [run_variant(name, VARIANTS[name], args) for name in args.variants]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2, default=str))
    text = table(results)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
