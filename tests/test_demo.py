"""`movierec demo` end to end, twice in a row (the second replaces the first run), at tiny sizes."""

from conftest import ROOT, unowned_files

from movierec.cli import main

# A quick demo, as a user can ask for one: few examples, 2 training steps, short ranking lists
QUICK = ["--data-override", "n_train=48", "--data-override", "n_eval=24", "--data-override", "ranking_users=3",
         "--override", "max_steps=2", "--override", "save_steps=2", "--override", "eval_steps=2",
         "--override", "per_device_train_batch_size=4"]


def test_demo_runs_twice_in_a_row(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the demo's output/ and data/ go here
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for attempt in (1, 2):
        assert main(["demo", "--model", str(tiny_model), *QUICK]) == 0, attempt
        out = capsys.readouterr().out
        assert "demo done" in out and "LLM zero-shot (base model)" in out
        run = tmp_path / "output" / "demo"
        assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
        # every file of a demo run (train, evaluate with base, report, recommend) is one a run writes
        assert unowned_files(run) == []
    assert not (tmp_path / "output" / "tiny-qwen3").exists()  # --model: nothing built
