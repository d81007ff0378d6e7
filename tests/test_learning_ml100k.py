"""The learning canary on real data: the tiny model, trained on real MovieLens-100K (from the recbole wheel),
ranks real eval examples above chance. (Its own file so that `make test`'s two workers can run it and the
true/flipped canary of test_learning.py, the two longest tests, at the same time.)"""

import json

from conftest import CANARY, ROOT, run_cli

from movierec.cli import main


def test_real_movielens_100k_trains_and_scores(tiny_model, ml100k_prepared, tmp_path, capsys):
    """Real ML-100K through a short training and evaluate. The tiny model sees 4,000 examples once, so
    the bar is modest: it must rank above chance on 1,000 real eval examples."""
    out = tmp_path / "run"
    proc = run_cli(str(ROOT / "scripts/train_llamafactory.py"), "--config", "configs/demo_tiny.yaml",
                   "--device", "cpu", "--override", f"model_name_or_path={tiny_model}",
                   "--override", f"dataset_dir={ml100k_prepared}", "--override", f"output_dir={out}",
                   "--override", "max_samples=4000", *CANARY, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["evaluate", "--run", str(out), "--checkpoint", "latest", "--device", "cpu",
                 "--max-examples", "1000", "--no-ranking"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 1000 and metrics["oracle"] is None  # real data has no known ceiling
    print(f"real ML-100K, tiny model after 4,000 examples: AUC {metrics['metrics']['overall']['auc']:.4f}")
    assert metrics["metrics"]["overall"]["auc"] > 0.55
