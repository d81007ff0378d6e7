"""Reliability defects found by probing `main` (issue 17, item 11): one test per kind, mostly in-process tests
of the folder owners; the few that need a trained run copy the session's demo_run."""

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_rundir import _record, make_ckpt

from movierec.cli import main
from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ run folders


@pytest.mark.parametrize("foreign", ["checkpoint-keep/notes.txt", "plots/my_figure.svg", "checkpoint-3/notes.txt",
                                     "runs/t/my.csv", "resolved_config.yaml.bak"])
def test_overwrite_deletes_nothing_a_run_did_not_write(tmp_path, foreign):
    """Names that merely look like a run's (checkpoint-*, plots/*, files inside checkpoint-N) are the user's."""
    run = tmp_path / "run"
    make_ckpt(run, 3)
    _record(run)
    (run / "plots").mkdir()
    (run / "plots" / "eval_auc.png").write_bytes(b"png")
    (run / foreign).parent.mkdir(parents=True, exist_ok=True)
    (run / foreign).write_text("precious")
    before = _tree(run)
    with pytest.raises(UserError, match="not a movierec run folder.*nothing was deleted") as e:
        RunDir(run).clear()
    assert foreign.split("/")[0] in str(e.value) and _tree(run) == before
    (run / foreign).unlink()
    if foreign.startswith("checkpoint-keep"):
        (run / "checkpoint-keep").rmdir()
    RunDir(run).clear()
    assert list(run.iterdir()) == []


def _take_stale_lock(folder: str, barrier, wins) -> None:
    barrier.wait()
    try:
        # a slow warning widens the window between finding the stale lock and replacing it
        with RunDir(folder).lock("race", warn=lambda *a, **k: time.sleep(0.05)):
            wins.put(os.getpid())
            barrier.wait()  # hold it until every contender has tried
            return
    except UserError:
        pass
    barrier.wait()


def test_taking_over_a_stale_lock_has_one_winner(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    context = multiprocessing.get_context("fork")
    for trial in range(4):
        folder = tmp_path / f"run{trial}"
        folder.mkdir()
        (folder / RunDir.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
        barrier, wins = context.Barrier(6), context.Queue()
        procs = [context.Process(target=_take_stale_lock, args=(str(folder), barrier, wins)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        winners = [wins.get(timeout=5) for _ in range(wins.qsize())] if not wins.empty() else []
        assert len(winners) == 1, f"trial {trial}: {len(winners)} processes hold the folder"


def test_a_crafted_safetensors_header_is_a_problem_not_a_traceback(tmp_path):
    from movierec.folders.rundir import checkpoint_problems

    for i, header in enumerate((b"[1, 2]", b'{"w": {"dtype": "F32"}}', b'{"w": 3}', b'{"w": {"data_offsets": "x"}}')):
        ckpt = make_ckpt(tmp_path / str(i), 1)
        (ckpt / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
        assert checkpoint_problems(ckpt, resumable=False) == ["adapter_model.safetensors has no readable header"]


def test_check_adapter_refuses_any_changed_adapter_setting(tmp_path):
    from movierec.train.session import check_adapter

    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 64, "lora_dropout": 0.05,
                                                          "use_rslora": False, "use_dora": False}))
    same = {"lora_rank": 16, "lora_alpha": 64, "lora_dropout": 0.05}
    check_adapter(ckpt, same)
    for key, value, said in (("lora_alpha", 32, "lora_alpha 32 (the checkpoint's: 64)"),
                             ("lora_alpha", None, "lora_alpha 32 (the checkpoint's: 64)"),  # default: 2 x rank
                             ("lora_dropout", 0.1, "lora_dropout 0.1 (the checkpoint's: 0.05)"),
                             ("use_rslora", True, "use_rslora True (the checkpoint's: False)")):
        with pytest.raises(UserError, match=rf"other settings: {said.replace('(', '[(]').replace(')', '[)]')}"):
            check_adapter(ckpt, {**same, key: value})


# ------------------------------------------------------------------ prepared-data folders


def _prepare(prepared_data: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "--config", str(ROOT / "configs/data/demo.yaml"), "--input", str(prepared_data.parent / "raw"),
                 "--out", str(out), "--override", "n_train=40", "--override", "n_eval=20",
                 "--override", "ranking_users=0", *extra])


def test_prepare_never_overwrites_a_folder_it_did_not_write(prepared_data, tmp_path, capsys):
    registry = tmp_path / "registry"  # a LLaMA-Factory data folder with a manifest of its own
    registry.mkdir()
    (registry / "dataset_info.json").write_text('{"alpaca_en": {"file_name": "alpaca_en.json"}}')
    (registry / "manifest.json").write_text('{"source": "my crawl"}')
    (registry / "baselines.json").write_text('{"mine": 1}')
    before = _tree(registry)
    assert _prepare(prepared_data, registry) == 2
    err = capsys.readouterr().err
    assert "baselines.json, dataset_info.json, manifest.json that `movierec prepare` did not write" in err
    assert _tree(registry) == before

    ours = tmp_path / "ours"
    assert _prepare(prepared_data, ours) == 0
    (ours / "baselines.json").write_text("{}")
    (ours / "notes.txt").write_text("kept")
    assert _prepare(prepared_data, ours, "--override", "n_train=30") == 0  # its own folder: rebuilt
    assert not (ours / "baselines.json").exists() and (ours / "notes.txt").read_text() == "kept"
    (ours / "manifest.json").unlink()  # as a kill -9 between prepare's first write and its manifest leaves it
    (ours / DatasetDir.WRITING).touch()
    assert _prepare(prepared_data, ours) == 0 and DatasetDir(ours).require()


def test_train_never_skips_the_integrity_check(prepared_data, tiny_model, tmp_path, capsys):
    """A folder without manifest.json (or an unreadable one) is not known to be what prepare wrote."""
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    argv = ["train", "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu",
            "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={data}",
            "--override", f"output_dir={tmp_path / 'run'}", "--override", "max_steps=1"]
    (data / "manifest.json").write_text("{trunc")
    assert main(argv) == 2 and "manifest.json: not valid JSON" in capsys.readouterr().err
    (data / "manifest.json").unlink()
    assert main(argv) == 2 and "has no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _copy_run(demo_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of demo_run and of its data, the copy's record naming the copies."""
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(demo_run, run)
    record = yaml.safe_load((run / RunDir.RESOLVED).read_text())
    shutil.copytree(record["paths"]["dataset_dir"], data)
    record["paths"].update(output_dir=str(run), dataset_dir=str(data))
    (run / RunDir.RESOLVED).write_text(yaml.safe_dump(record, sort_keys=False))
    return run, data


def test_data_prepared_again_after_training_is_noticed(demo_run, prepared_data, tmp_path, capsys):
    run, data = _copy_run(demo_run, tmp_path)
    assert _prepare(prepared_data, data, "--override", "seed=7", "--override", "cutoff_quantile=0.8") == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "prepared again after this run trained" in err and "--data" in err and err.count("\n") == 1
    assert main(["report", "--run", str(run)]) == 0
    assert "prepared again after this run trained" in capsys.readouterr().err
    assert "prepared again after this run trained" in (run / RunDir.REPORT).read_text()
    # nor does a resume go on with the new examples (it would also hide the change from evaluate: the record
    # it writes names the new data)
    before = _tree(run)
    assert main(_resume(demo_run, run, data, "checkpoint-4")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: ") and "prepared again after this run trained" in err
    assert err.count("\n") == 1 and _tree(run) == before


def test_an_eval_split_naming_the_train_file_is_refused(demo_run, tmp_path, capsys):
    run, data = _copy_run(demo_run, tmp_path)
    info = json.loads((data / "dataset_info.json").read_text())
    info[DatasetDir.EVAL_NAME]["file_name"] = info[DatasetDir.TRAIN_NAME]["file_name"]
    (data / "dataset_info.json").write_text(json.dumps(info))
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 2
    assert "names the file of training dataset" in capsys.readouterr().err
    assert not (run / RunDir.METRICS).exists()


# ------------------------------------------------------------------ resuming


def _resume(demo_run: Path, run: Path, data: Path, which: str) -> list[str]:
    record = yaml.safe_load((run / RunDir.RESOLVED).read_text())
    return ["train", "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu",
            "--override", f"model_name_or_path={record['paths']['model']}", "--override", f"dataset_dir={data}",
            "--override", f"output_dir={run}", "--override", "max_steps=8", "--override", "save_steps=4",
            "--override", "eval_steps=4", "--resume", which]


def test_a_failed_resume_keeps_the_logs_and_the_record(demo_run, tmp_path, monkeypatch, capsys):
    """A resume that fails before its first step (here: the launch) leaves the folder as it was."""
    from movierec.train.session import TrainingSession

    run, data = _copy_run(demo_run, tmp_path)
    copy = tmp_path / "my copy of checkpoint-4"  # a renamed copy: its step comes from trainer_state.json
    shutil.copytree(run / "checkpoint-4", copy)
    before = _tree(run)
    monkeypatch.setattr(TrainingSession, "launch", lambda *a, **k: 1)
    for which in ("checkpoint-4", str(copy)):
        assert main(_resume(demo_run, run, data, which)) == 2
        assert "nothing was kept" in capsys.readouterr().err
        assert _tree(run) == before, which


# ------------------------------------------------------------------ MovieLens input files


def test_movie_files_with_a_bom_in_utf16_or_empty(tmp_path):
    from movierec.data import layouts

    flags = "|".join(["0"] * 3 + ["1"] + ["0"] * 15)
    files = {"movies.dat": "1::Toy Story (1995)::Animation|Children's\n",
             "u.item": f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n"}
    for name, text in files.items():
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Notepad saves UTF-8
        table, _ = {"movies.dat": layouts._dat_movies, "u.item": layouts._u_item}[name](tmp_path, name)
        assert table.column("movieId").to_pylist() == [1] and table.column("title").to_pylist() == ["Toy Story (1995)"]
        (tmp_path / name).write_text(text, encoding="utf-16")
        with pytest.raises(UserError, match="saved as UTF-16") as e:
            layouts._dat_movies(tmp_path, name) if name == "movies.dat" else layouts._u_item(tmp_path, name)
        assert "\x00" not in str(e.value)
        (tmp_path / name).write_text("\n")
        with pytest.raises(UserError, match=f"{name}: no movies"):
            layouts._dat_movies(tmp_path, name) if name == "movies.dat" else layouts._u_item(tmp_path, name)
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n", encoding="utf-16")
    (csv / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation\n")
    with pytest.raises(UserError, match="saved as UTF-16") as e:
        layouts.load(csv)
    assert "\x00" not in str(e.value)


def test_a_download_cut_short_is_not_kept_without_an_md5(tmp_path):
    """A server announcing more bytes than it sends (a dropped connection), and no md5 to check."""
    import http.server
    import threading

    from movierec.data.download import download

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 400)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError, match=r"cut short|could not download"):
            download(f"http://127.0.0.1:{httpd.server_address[1]}/ml-25m.zip", tmp_path / "raw" / "ml.zip", None)
    finally:
        httpd.shutdown()
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------ train's command line and its failures


def _train_argv(tiny_model: Path, prepared_data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(ROOT / "configs/demo_tiny.yaml"), "--device", "cpu",
            "--override", f"model_name_or_path={tiny_model}", "--override", f"dataset_dir={prepared_data}",
            "--override", f"output_dir={out}", "--override", "max_steps=2", *extra]


def test_ctrl_c_while_the_model_loads_leaves_nothing(tiny_model, prepared_data, tmp_path, monkeypatch, capsys):
    from movierec.train.session import TrainingSession

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(TrainingSession, "launch", interrupted)
    assert main(_train_argv(tiny_model, prepared_data, out)) == 130
    assert not out.exists()  # so the same command runs again, without --overwrite

    def saved_nothing(session, *args, **kwargs):  # a step was taken, then a save failed (a file-size limit, say)
        session.run.write_text(RunDir.STEP_TIMES, json.dumps({"step": 1, "seconds": 0.1}) + "\n")
        return 1

    monkeypatch.setattr(TrainingSession, "launch", saved_nothing)
    capsys.readouterr()
    assert main(_train_argv(tiny_model, prepared_data, out)) == 2
    err = capsys.readouterr().err
    assert "no complete checkpoint was saved" in err and "--overwrite" in err and "--resume" not in err


def test_sigterm_gets_the_clean_up_of_ctrl_c(tiny_model, prepared_data, tmp_path, monkeypatch, capsys):
    """`kill PID` (a scheduler, a container stopping) during a command: the same clean-up as Ctrl-C, exit 143,
    and SIGTERM's own handler back once the command returns."""
    import os
    import signal

    from movierec.train.session import TrainingSession

    def killed(*args, **kwargs):  # the signal arrives while the model loads
        os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(TrainingSession, "launch", killed)
    assert main(_train_argv(tiny_model, prepared_data, out)) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "terminated"
    assert not out.exists() and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("extra, said", [(("--dry-run", "--rate", "-5"), ("--rate: training examples per second "
                                                                          "must be > 0, got -5")),
                                         (("--override", "output_dir=/proc/movierec-run"), "/proc/movierec-run: cannot")])
def test_bad_outputs_and_rates_are_one_line(tiny_model, prepared_data, tmp_path, capsys, extra, said):
    assert main([*_train_argv(tiny_model, prepared_data, tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1 and "Traceback" not in err


def test_synth_sizes_and_outputs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv, said in ((["--users", "0"], "must be >= 1, got users=0"),
                       (["--ratings", "0", "--users", "5"], "must be >= 1, got ratings=0"),
                       (["--users", "10", "--movies", "3"], "3 movies (ratings from scale 0.01): at least 20 needed"),
                       (["--scale", "0.00001"], ("250 ratings by 2 users of 197 movies (users, movies, ratings "
                                                 "from scale 1e-05)")),
                       (["--out", str(tmp_path / "file" / "x")], "is a file; synth writes a folder")):
        out = ["--out", str(tmp_path / "s")] if "--out" not in argv else []
        assert main(["synth", *out, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err


def test_bench_outputs_checked_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for argv, said in ((["--json-out", str(tmp_path)], "--json-out"), (["--model-cache", str(tmp_path / "file")],
                                                                       "--model-cache")):
        assert main(["bench", "--config", str(ROOT / "configs/demo_tiny.yaml"), *argv]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ evaluate, export, recommend, baselines


def test_a_broken_latest_or_best_checkpoint_is_named(tmp_path, capsys):
    run = RunDir(tmp_path)
    make_ckpt(tmp_path, 3)
    make_ckpt(tmp_path, 6, broken="adapter_model.safetensors")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text(
        json.dumps({"global_step": 6, "best_model_checkpoint": str(tmp_path / "checkpoint-6")}))
    assert run.select("latest") == [tmp_path / "checkpoint-3"]
    assert "checkpoint-6 is incomplete (adapter_model.safetensors is truncated" in capsys.readouterr().err
    with pytest.raises(UserError, match="the best checkpoint, checkpoint-6, cannot be used .*truncated"):
        run.select("best")


def test_a_checkpoint_deleted_while_read_is_one_line(demo_run, tmp_path, monkeypatch, capsys):
    import movierec.evaluation.evaluate

    run, _ = _copy_run(demo_run, tmp_path)

    def rotated(lf_args, adapter, *args):  # training's save_total_limit deletes it as it loads
        shutil.rmtree(adapter)
        raise FileNotFoundError(2, "No such file or directory", str(adapter / "adapter_config.json"))

    monkeypatch.setattr(movierec.evaluation.evaluate, "score", rotated)
    assert main(["evaluate", "--run", str(run), "--checkpoint", "checkpoint-4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint-4 was deleted while it was read" in err and err.count("\n") == 1


def test_a_subsample_never_replaces_results_on_more_examples(demo_run, tmp_path, capsys):
    run, _ = _copy_run(demo_run, tmp_path)
    (run / RunDir.METRICS).write_text(json.dumps({"n": 80, "checkpoint": "checkpoint-8", "metrics": {}}))
    before = _tree(run)
    assert main(["evaluate", "--run", str(run), "--device", "cpu", "--max-examples", "8", "--no-ranking",
                 "--bootstrap", "0"]) == 0
    assert "not saved" in capsys.readouterr().out and _tree(run) == before


def test_a_manifest_without_files_or_config_is_one_line(demo_run, tmp_path, capsys):
    run, data = _copy_run(demo_run, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    for key in ("config", "files"):
        (data / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != key}))
        assert main(["recommend", "--run", str(run), "--user", "1", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"manifest.json: records no {key}" in err and err.count("\n") == 1


def test_baselines_never_overwrite_unrelated_files(prepared_data, tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / DatasetDir.BASELINE_PREDICTIONS).write_text("my,own,csv\n")
    before = _tree(tmp_path)
    for out in (tmp_path / "notes.json", tmp_path / "other" / "b.json"):
        assert main(["baselines", "--data", str(prepared_data), "--out", str(out)]) == 2
        assert "was not written by `movierec baselines`" in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_an_unwritable_output_is_one_line(prepared_data, capsys):
    """Written after the work (here: fitting the baselines), and refused by the file system: no traceback."""
    assert main(["baselines", "--data", str(prepared_data), "--out", "/proc/movierec/b.json", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: /proc/movierec") and not any("Traceback" in line for line in err)


def test_recommend_names_a_broken_best_checkpoint_instead_of_using_the_latest(demo_run, tmp_path, capsys):
    run, _ = _copy_run(demo_run, tmp_path)
    best = RunDir(run).recorded_best()
    assert best is not None  # the demo run ranks checkpoints by eval_auc
    (best / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    assert main(["recommend", "--run", str(run), "--user", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"the best checkpoint, {best.name}, cannot be used" in err and err.count("\n") == 1


def test_best_without_a_recorded_best_uses_the_latest_in_every_command(demo_run, tmp_path, capsys):
    """A short run (max_steps below eval/save steps) records no best: `best` means its latest, said once."""
    run, _ = _copy_run(demo_run, tmp_path)
    for state in run.glob("checkpoint-*/trainer_state.json"):
        state.write_text(json.dumps({**json.loads(state.read_text()), "best_model_checkpoint": None}))
    latest = RunDir(run).checkpoints()[-1]
    assert RunDir(run).select("best") == [latest]
    err = capsys.readouterr().err
    assert "no best checkpoint recorded (trainer_state.json has no best_model_checkpoint" in err
    assert err.endswith(f"using the latest, {latest.name}\n")
    assert main(["recommend", "--run", str(run), "--user", "1", "--device", "cpu", "--checkpoint", "best"]) == 0
    assert "no best checkpoint recorded" in capsys.readouterr().err
