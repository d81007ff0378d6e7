"""`movierec demo`: every stage end to end on CPU, offline, in a few minutes.

tiny Qwen3 -> synthetic MovieLens + prepare -> 4-bit QLoRA training -> baselines -> evaluate
(with the paired comparison and the llm+mf blend) -> report -> recommend. Each step is the same command a user would type.
"""

from __future__ import annotations

from pathlib import Path

from movierec.data.fields import USER_ID
from movierec.errors import UserError
from movierec.folders.rundir import RunDir

MODEL_DIR = "output/tiny-qwen3"


def _step(title: str, argv: list[str]) -> None:
    from movierec.cli import main

    print(f"\n=== {title}: movierec {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise UserError(f"demo stopped at: movierec {' '.join(argv)}")


def _overrides(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--override", value)]


def main(args) -> int:
    run, data, model = Path(args.out), Path(args.data), args.model or MODEL_DIR
    if args.model is None and not (Path(MODEL_DIR) / "config.json").is_file():
        _step("tiny model", ["make-tiny-model", MODEL_DIR])
    # the demo data config generates data/demo/raw with `synth` when it is absent
    _step("prepare", ["prepare", "--config", "configs/data/demo.yaml", "--out", str(data),
                      *_overrides(args.data_override)])
    _step("train", ["train", "--config", "configs/demo_tiny.yaml", "--run-name", "demo", "--device", "cpu",
                    "--override", f"output_dir={run}", "--override", f"dataset_dir={data}",
                    "--override", f"model_name_or_path={model}", *_overrides(args.override), "--overwrite"])
    # baselines first: evaluate compares the LLM with them and blends it with mf
    _step("baselines", ["baselines", "--data", str(data)])
    _step("evaluate", ["evaluate", "--run", str(run), "--checkpoint", "all,base", "--device", "cpu"])
    _step("report", ["report", "--run", str(run)])
    from movierec.folders.datadir import DatasetDir

    user = DatasetDir(data).read_eval()[0][USER_ID]
    _step("recommend", ["recommend", "--run", str(run), "--user", str(user), "--top-k", "5", "--device", "cpu"])
    print("\n" + summary(run, data))
    folder = RunDir(run)
    print(f"\ndemo done: report at {folder.file(RunDir.REPORT)}; TensorBoard: tensorboard --logdir "
          f"{folder.file(RunDir.RUNS)}")
    return 0


def summary(run: Path, data: Path) -> str:
    """Did the model learn? Training loss first -> last, then every model on the same eval examples and
    ranking lists: AUC with its 95% interval, UAUC, HR@10, NDCG@10; then the LLM's and the llm+mf blend's
    paired AUC difference from the best baseline."""
    from movierec.folders.datadir import DatasetDir
    from movierec.folders.rundir import RunDir

    log = RunDir(run).read_jsonl(RunDir.TRAINER_LOG)
    losses = [line["loss"] for line in log if "loss" in line]
    metrics = RunDir(run).read_json(RunDir.METRICS)
    baselines = DatasetDir(data).read_json(DatasetDir.BASELINES)
    rows = [(f"LLM fine-tuned ({metrics['checkpoint']})", metrics["metrics"], metrics.get("ranking"))]
    if metrics.get("zero_shot"):
        rows.append(("LLM zero-shot (base model)", metrics["zero_shot"]["metrics"], metrics["zero_shot"].get("ranking")))
    blend = metrics.get("blend")
    if blend:
        rows.append((f"LLM+mf blend (w = {blend['weight']:.2f})", blend["metrics"], None))
    rows += [(f"baseline: {name}", blocks, blocks.get("ranking")) for name, blocks in baselines["baselines"].items()]
    if baselines.get("oracle"):
        rows.append(("oracle (true probabilities)", baselines["oracle"]["metrics"], None))
    lines = [f"training loss: {losses[0]:.3f} at the first log -> {losses[-1]:.3f} at the last" if losses else
             "training loss: not logged",
             f"{'on ' + str(metrics['n']) + ' eval examples':<32} {'AUC [95% interval]':>21} {'UAUC':>6} "
             f"{'HR@10':>6} {'NDCG@10':>7}"]
    for name, blocks, ranking in rows:
        o, r = blocks["overall"], ranking or {}
        ci = o.get("auc_ci95")
        auc = f"{_num(o.get('auc'))}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " " * 15)
        lines.append(f"{name:<32} {auc:>21} {_num(o.get('uauc'))} {_num(r.get('hr@10'))} {_num(r.get('ndcg@10'), 7)}")
    for name, pair in (("LLM fine-tuned", metrics.get("paired")), ("LLM+mf blend", (blend or {}).get("paired"))):
        if pair:
            d = pair["comparison"]["auc"]
            ci = d.get("diff_ci95")
            lines.append(f"{name} minus the best baseline ({pair['baseline']}): AUC {d['diff']:+.3f}"
                         + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}] (paired bootstrap)" if ci else ""))
    return "\n".join(lines)


def _num(x, width: int = 6) -> str:
    return f"{x:{width}.3f}" if x is not None else " " * (width - 1) + "—"
