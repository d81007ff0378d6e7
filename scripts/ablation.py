#!/usr/bin/env python
"""The prompt ablation on real data: one prepared variant per prompt option, the same eval rows for all,
the tiny model trained on each (configs/tiny_ml100k.yaml), every baseline and the llm+mf blend beside it.

    python scripts/ablation.py --raw data/raw/ml-100k.zip --out output/ablation   # 5 trainings, ~1 h on 2 cores
    python scripts/ablation.py --raw data/demo/raw --config configs/data/demo.yaml --train-config configs/demo_tiny.yaml
        --out output/ablation-demo --model output/tiny-qwen3         # (one command)

`movierec prepare --config configs/data/movielens_100k.yaml` downloads data/raw/ml-100k.zip; data/demo/raw is what
`movierec demo` generates. Writes OUT/table.md (AUC [95% interval], UAUC, HR@10, NDCG@10, the paired AUC difference
from the best baseline with its interval, the blend's paired difference from each of its parts, steps and training
time) and OUT/ablation.json; with --variants the table also keeps the variants finished earlier from the same input,
configs and overrides. `--table-only` rebuilds the table from the finished variants (or from those --variants
names; the row `all` is the four options together); rows trained for different step counts get a warning. A variant already done
(its metrics.json exists, from the same input, configs, model and overrides: OUT/variants/NAME.json records them
with the training time) is not trained again: rerun after an interruption to finish the rest; a changed input
redoes the variants it touches. Bad arguments stop before any work, with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
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


class Stop(Exception):
    """Ends the script: the message (a line of its own, or None when a command already said why) and the exit code."""

    def __init__(self, message: str | None, code: int = 2):
        super().__init__(message)
        self.message, self.code = message, code


def execute(cmd: list[str], step: str, quiet: bool = False, says_why: bool = False) -> None:
    """A command of the ablation; its failure (whose own error line it printed) stops the script with its code.
    quiet: its output is shown only when it fails. says_why: a checking step (prepare, the dry run), whose bad
    input exit (2) comes with its one error line: nothing is added to it."""
    print("$", " ".join(cmd), flush=True)
    pipe = subprocess.PIPE if quiet else None
    with subprocess.Popen(cmd, cwd=ROOT, stdout=pipe, stderr=pipe, text=True) as proc:
        _RUNNING.append(proc)  # SIGTERM is passed on to it (_terminated), so it cleans up as for its own
        try:
            out, err = proc.communicate()
        finally:
            _RUNNING.remove(proc)
    rc = proc.returncode
    if rc != 0 and quiet:
        sys.stdout.write(out)
        sys.stderr.write(err)
    if rc == 2 and says_why:  # bad input: the command said why in its one error line
        raise Stop(None, rc)
    if rc != 0:
        print(f"ablation: stopped at {step} (exit {rc}); finished variants are kept, rerun to go on", file=sys.stderr)
        raise Stop(None, rc)


def movierec(*args: str) -> None:
    execute([sys.executable, "-m", "movierec", *args], args[0], says_why=args[0] == "prepare")


def read(path: Path, fix: str, needs: tuple[str, ...] = ()) -> dict:
    """A JSON object an earlier step wrote, holding the keys `needs`; Stop naming it and `fix` when it is missing,
    damaged or not such an object."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise Stop(f"error: {path}: missing; {fix}") from None
    except (OSError, ValueError) as e:
        raise Stop(f"error: {path}: unreadable ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise Stop(f"error: {path}: not a JSON object; {fix}")
    missing = [k for k in needs if not isinstance(value.get(k), (dict, int)) or isinstance(value.get(k), bool)]
    if missing:
        raise Stop(f"error: {path}: no {', '.join(missing)}; {fix}")
    return value


def fingerprint(args: argparse.Namespace, overrides: list[str]) -> dict:
    """What a variant's results depend on: the input's and configs' contents, the model and every override."""
    from movierec.data.layouts import input_md5s
    from movierec.errors import UserError

    try:
        raw = input_md5s(args.raw)
    except UserError as e:
        raise Stop(f"error: --raw {args.raw}: {e}") from None
    return {"raw": raw, "config": hashlib.sha256(args.config.read_bytes()).hexdigest(), "overrides": overrides,
            "train_config": hashlib.sha256(args.train_config.read_bytes()).hexdigest(), "model": args.model,
            "train_overrides": args.train_override}


def tiny_model(args: argparse.Namespace) -> None:
    """The training config's tiny model (`output/tiny-qwen3`, built offline), made when it is missing."""
    import yaml

    model = args.model or yaml.safe_load(args.train_config.read_text()).get("model_name_or_path", "")
    path = Path(model) if Path(model).is_absolute() else ROOT / model
    if Path(model).name == "tiny-qwen3" and not path.exists():
        movierec("make-tiny-model", str(path))


def _paths(name: str, out: Path) -> tuple[Path, Path, Path, Path]:
    """A variant's data folder, run folder, metrics.json and the ablation's own record of it (kept outside the run
    folder: train --overwrite deletes only what movierec wrote)."""
    slug = name.replace(" ", "-").replace("/", "-").replace("+", "plus")
    data, run = out / "data" / slug, out / "runs" / slug
    return data, run, run / "metrics.json", out / "variants" / f"{slug}.json"


def finished(out: Path) -> list[str]:
    """The variants whose results are complete in OUT, in the table's order."""
    return [name for name in VARIANTS if all(p.is_file() for p in _paths(name, out)[2:])]


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    data, run, metrics, recorded = _paths(name, args.out)
    if not (metrics.is_file() and recorded.is_file()) and args.table_only:
        raise Stop(f"error: {name}: not finished ({metrics} or {recorded} missing); run without --table-only")
    if not args.table_only:
        inputs = fingerprint(args, overrides)
        done = (metrics.is_file() and recorded.is_file()
                and read(recorded, "delete it and rerun").get("inputs") == inputs)
        if metrics.is_file() and not done:
            print(f"ablation: {name}: its input, configs, model or overrides changed since it ran (or {recorded.name} "
                  "is missing); redoing it", file=sys.stderr)
        if not done:
            movierec("prepare", "--config", str(args.config), "--input", str(args.raw), "--out", str(data),
                     *[x for o in overrides for x in ("--override", o)])
            movierec("baselines", "--data", str(data))
            recorded.unlink(missing_ok=True)  # until this variant's results are complete again
            start = time.perf_counter()
            execute([sys.executable, *train_command(args, data, run), "--overwrite"],
                    f"training {name} (see {run}/train.log)")
            seconds = time.perf_counter() - start
            movierec("evaluate", "--run", str(run), "--checkpoint", "best", "--device", "cpu")
            recorded.parent.mkdir(parents=True, exist_ok=True)
            recorded.write_text(json.dumps({"inputs": inputs, "train_seconds": seconds}, indent=2))
    return load_variant(name, overrides, args)


def current(name: str, args: argparse.Namespace) -> bool:
    """Whether finished variant `name` ran on this run's input, configs, model and overrides."""
    recorded = _paths(name, args.out)[3]
    try:
        return read(recorded, "delete it and rerun").get("inputs") == fingerprint(args, VARIANTS[name])
    except Stop as e:  # a damaged record of a variant not asked for: left out of the table, not a stop
        print(f"warning: {name} left out of the table: {e.message.removeprefix('error: ')}", file=sys.stderr)
        return False


def load_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """A finished variant's results (Stop naming the file when one is missing or damaged)."""
    data, run, metrics, recorded = _paths(name, args.out)
    fix = "rerun without --table-only to redo this variant" if args.table_only else "delete it and rerun"
    return {"variant": name, "overrides": overrides, "data": str(data), "run": str(run),
            "metrics": read(metrics, fix, ("n", "metrics")),
            "baselines": read(data / "baselines.json", fix, ("baselines",)),
            "train_seconds": read(recorded, fix).get("train_seconds"),
            "steps": read(run / "trainer_state.json", fix).get("global_step")}


def train_command(args: argparse.Namespace, data: Path, run: Path) -> list[str]:
    return [str(ROOT / "scripts" / "train_llamafactory.py"), "--config", str(args.train_config), "--device", "cpu",
            "--override", f"dataset_dir={data}", "--override", f"output_dir={run}",
            *(["--override", f"model_name_or_path={args.model}"] if args.model else []),
            *[x for o in args.train_override for x in ("--override", o)]]


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
    out = [("| row | AUC [95% CI] | UAUC [95% CI] | HR@10 | NDCG@10 | ΔAUC vs best baseline [95% CI] | "
            "blend minus LLM; minus mf | steps | train time |\n"), "|---|---|---|---|---|---|---|---|---|\n"]
    for r in results:
        out += _checked(_variant_rows, r, Path(r["run"]) / "metrics.json")
    out += _checked(_baseline_rows, results[0]["baselines"], Path(results[0]["data"]) / "baselines.json")
    eval_rows = {r["metrics"]["n"] for r in results}
    if len(eval_rows) != 1:
        out.append(f"\nwarning: the variants scored different numbers of eval examples: {sorted(eval_rows)}\n")
    return "".join(out)


def _checked(rows, value, path: Path) -> list[str]:
    """`rows(value)`, or Stop naming `path` when its content is not what evaluate or baselines write."""
    try:
        return rows(value)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as e:
        raise Stop(f"error: {path}: not as movierec writes it ({type(e).__name__}: {e}); delete it and rerun "
                   "without --table-only to redo this variant") from None


def _variant_rows(r: dict) -> list[str]:
    m = r["metrics"]
    if not isinstance(m["n"], int) or isinstance(m["n"], bool):  # eval examples, compared across the variants
        raise TypeError(f"n is {m['n']!r}, not a count")
    seconds = r["train_seconds"]
    minutes = f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "—"
    rows = [_row(f"LLM, {r['variant']}", m["metrics"].get("overall") or {}, m.get("ranking"), m.get("paired"), None,
                 r["steps"] if r["steps"] is not None else "—", minutes)]
    b = m.get("blend")
    if b is not None:
        rows.append(_row(f"llm+mf (w={b['weight']:g}), {r['variant']}", b["metrics"].get("overall") or {}, None,
                         b.get("paired"), b.get("vs_parts")))
    return rows


def _baseline_rows(base: dict) -> list[str]:
    return [_row(f"baseline: {name}", block.get("overall") or {}, block.get("ranking"), None)
            for name, block in base["baselines"].items()]


_RUNNING: list[subprocess.Popen] = []


class Terminated(Exception):
    """SIGTERM (a job scheduler's stop, `kill`): the running step got it too and cleans up as it does alone."""


def _terminated(signum, frame):
    for proc in _RUNNING:
        proc.send_signal(signal.SIGTERM)
    raise Terminated


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return ablation()
    except Stop as e:
        if e.message:
            print(e.message, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("ablation: interrupted; finished variants are kept, rerun to go on", file=sys.stderr)
        return 130
    except Terminated:
        print("ablation: terminated; finished variants are kept, rerun to go on", file=sys.stderr)
        return 143


def ablation() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--raw", type=Path, help="the MovieLens input (zip or folder) every variant prepares")
    p.add_argument("--out", type=Path, default=ROOT / "output" / "ablation",
                   help="where data, runs and the table go (default: %(default)s)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "data" / "movielens_100k.yaml",
                   help="the reference data config; each variant adds its options as overrides "
                        "(default: %(default)s)")
    p.add_argument("--train-config", type=Path, default=ROOT / "configs" / "tiny_ml100k.yaml",
                   help="training config (default: %(default)s)")
    p.add_argument("--model", help="base model folder (default: the training config's model_name_or_path)")
    p.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every training run, e.g. max_steps=300 for a quick look")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="rows to run ('all' is the four options together; default: all five rows, or with "
                        "--table-only the finished ones)")
    p.add_argument("--table-only", action="store_true",
                   help="only rebuild the table from finished variants (those of --variants, if given)")
    args = p.parse_args()
    for key in ("raw", "out", "config", "train_config"):  # the commands below run from the repository root
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).expanduser().resolve())
    if args.model and Path(args.model).expanduser().exists():
        args.model = str(Path(args.model).expanduser().resolve())
    for key in ("config", "train_config"):
        if not getattr(args, key).is_file():
            raise Stop(f"error: --{key.replace('_', '-')} {getattr(args, key)}: not found")
    if not args.table_only and args.raw is None:
        raise Stop("error: --raw is required: the MovieLens zip or folder every variant prepares (e.g. "
                   "data/raw/ml-100k.zip, which `movierec prepare --config configs/data/movielens_100k.yaml` "
                   "downloads)")
    if not args.table_only and not args.raw.exists():
        raise Stop(f"error: --raw {args.raw}: not found (`movierec prepare --config "
                   "configs/data/movielens_100k.yaml` downloads data/raw/ml-100k.zip)")
    if not args.table_only:
        fingerprint(args, [])  # an input that is not MovieLens stops here, before any work
        tiny_model(args)
        # the training config and every --train-override, checked in seconds before any preparing or training
        probe = args.out / "runs" / "check"
        execute([sys.executable, *train_command(args, probe / "data", probe / "run"), "--dry-run"],
                "checking --train-config and --train-override", quiet=True, says_why=True)
    if args.variants is None:
        args.variants = finished(args.out) if args.table_only else list(VARIANTS)
        if not args.variants:
            raise Stop(f"error: no finished variant in {args.out} (none has runs/NAME/metrics.json and "
                       "variants/NAME.json); run without --table-only")
    requested = list(dict.fromkeys(args.variants))
    results = [run_variant(name, VARIANTS[name], args) for name in requested]
    if not args.table_only:  # the table keeps the variants finished earlier on the same input, configs and overrides
        others = [n for n in finished(args.out) if n not in requested and current(n, args)]
        results += [load_variant(n, VARIANTS[n], args) for n in others]
        results.sort(key=lambda r: list(VARIANTS).index(r["variant"]))
    steps = sorted({r["steps"] for r in results if r["steps"] is not None})
    if len(steps) > 1:
        print(f"warning: the variants trained for different numbers of steps ({', '.join(map(str, steps))}): their "
              "rows are not comparable; rerun them with the same --train-override", file=sys.stderr)
    text = table(results)  # checked before either file is written
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
