"""Resume selection, unit-tested without a model."""

from pathlib import Path

import pytest

from movierec.errors import UserError
from movierec.runinfo import CHECKPOINT_REQUIRED, list_checkpoints
from movierec.train import prepare_output_dir, resolve_resume


def make_ckpt(out: Path, step: int, complete: bool = True) -> Path:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name in CHECKPOINT_REQUIRED:
        if complete or name != "adapter_model.safetensors":
            (ckpt / name).write_text("x")
    return ckpt


def test_checkpoints_sort_numerically(tmp_path):
    for step in (800, 1000, 200):
        make_ckpt(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-200", "checkpoint-800", "checkpoint-1000"]


def test_auto_skips_incomplete_latest_with_warning(tmp_path):
    make_ckpt(tmp_path, 200)
    good = make_ckpt(tmp_path, 400)
    make_ckpt(tmp_path, 600, complete=False)
    warnings = []
    assert resolve_resume(tmp_path, "auto", warn=warnings.append) == good
    assert len(warnings) == 1 and "checkpoint-600" in warnings[0] and "adapter_model" in warnings[0]


def test_named_and_path(tmp_path):
    c2 = make_ckpt(tmp_path, 200)
    make_ckpt(tmp_path, 400)
    assert resolve_resume(tmp_path, "checkpoint-200") == c2
    assert resolve_resume(tmp_path, str(c2)) == c2
    assert resolve_resume(tmp_path, None) is None


@pytest.mark.parametrize("resume", ["checkpoint-999", "auto"])
def test_missing_checkpoint_is_a_user_error(tmp_path, resume):
    with pytest.raises(UserError):
        resolve_resume(tmp_path, resume)


def test_named_incomplete_checkpoint_is_refused(tmp_path):
    make_ckpt(tmp_path, 200, complete=False)
    with pytest.raises(UserError, match="incomplete"):
        resolve_resume(tmp_path, "checkpoint-200")


def test_output_dir_guard(tmp_path):
    out = tmp_path / "run"
    prepare_output_dir(out, None, overwrite=False)  # new folder: fine
    (out / "trainer_log.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="not empty"):
        prepare_output_dir(out, None, overwrite=False)
    assert (out / "trainer_log.jsonl").exists()
    prepare_output_dir(out, None, overwrite=True)
    assert out.is_dir() and not any(out.iterdir())


def test_overwrite_deletes_only_a_previous_run(tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="does not look like a training run"):
        prepare_output_dir(notes, None, overwrite=True)
    assert (notes / "thesis.tex").read_text() == "precious"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resolved_config.yaml").write_text("x")
    with pytest.raises(UserError, match="current directory"):
        prepare_output_dir(Path("."), None, overwrite=True)
    assert (tmp_path / "resolved_config.yaml").exists()
