"""Issue 16 on CPU: real example lengths from `prepare`, the levers' validation, the benchmark's loss check,
per-user prefix scoring and bulk `recommend` (equal to per-example and single-user scores to 1e-5)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from data_helpers import read_jsonl

from movierec.cli import main

FAST = "configs/qwen3_movielens_qlora_fast.yaml"
BF16_FAST = "configs/qwen3_movielens_lora_bf16_fast.yaml"


# ---------------------------------------------------------------- real lengths


@pytest.fixture(scope="module")
def tokenized_data(prepared_data, tiny_model, tmp_path_factory):
    """prepared_data's input prepared again with `tokenizer:` set (the tiny model's)."""
    from data_helpers import prepare

    out = tmp_path_factory.mktemp("tok") / "prepared"
    raw = json.loads((prepared_data / "manifest.json").read_text())["config"]["input"]
    assert prepare(ROOT / "configs/data/demo.yaml", "--input", raw, "--out", str(out), "--override", "n_train=160",
                   "--override", "n_eval=80", "--override", f"tokenizer={tiny_model}") == 0
    return out


def test_prepare_records_token_lengths_as_llamafactory_tokenizes(tokenized_data, prepared_data, tiny_model, tmp_path):
    """With `tokenizer:` the manifest holds the whole examples' token lengths, as LLaMA-Factory's training
    data has them; the jsonl files are the same bytes as without it (which records characters and the rule)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    for name in ("movielens_qwen3_train.jsonl", "movielens_qwen3_eval.jsonl"):
        assert (tokenized_data / name).read_bytes() == (prepared_data / name).read_bytes()
    lengths = []
    for name in ("movielens_qwen3_train", "movielens_qwen3_eval"):
        model_args, data_args, training_args, _, _ = get_train_args({
            "model_name_or_path": str(tiny_model), "template": "qwen", "cutoff_len": 4096, "stage": "sft",
            "do_train": True, "finetuning_type": "lora", "dataset": name, "dataset_dir": str(tokenized_data),
            "output_dir": str(tmp_path / "o"), "report_to": "none", "overwrite_cache": True,
            "preprocessing_num_workers": 1})
        module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
        dataset = get_dataset(template, model_args, data_args, training_args, "sft", **module)["train_dataset"]
        lengths += [len(x) for x in dataset["input_ids"]]
    got = json.loads((tokenized_data / "manifest.json").read_text())["example_lengths"]
    assert got["unit"] == "tokens" and got["tokenizer"] == str(tiny_model)
    assert (got["min"], got["max"]) == (min(lengths), max(lengths)) and got["mean"] == pytest.approx(np.mean(lengths))
    np.testing.assert_allclose(got["quantiles"], np.percentile(lengths, np.linspace(0, 100, 101)), atol=0.01)

    chars = json.loads((prepared_data / "manifest.json").read_text())["example_lengths"]
    assert chars["unit"] == "characters" and "2.67" in chars["rule"] and len(chars["quantiles"]) == 101


def test_bench_draws_lengths_from_the_manifest_or_the_shipped_real_distribution(tokenized_data, tmp_path):
    from movierec.bench.lengths import example_lengths, example_token_stats

    stats, source = example_token_stats(tokenized_data)
    drawn = example_lengths(20_000, stats, np.random.default_rng(0))
    assert "tokens of" in source and drawn.mean() == pytest.approx(stats["mean"], rel=0.01)
    assert stats["min"] <= drawn.min() and drawn.max() <= stats["max"]
    stats, source = example_token_stats(tmp_path)  # no manifest: real ML-100K prompts, ~262 tokens
    assert "MovieLens-100K" in source and 250 < stats["mean"] < 275 and 10 < stats["std"] < 25
    (tmp_path / "manifest.json").write_text(json.dumps({"prompt_chars": {"mean": 700, "std": 0, "min": 700, "max": 700}}))
    stats, source = example_token_stats(tmp_path)  # a manifest from before example_lengths
    assert set(example_lengths(5, stats, np.random.default_rng(0))) == {round(700 / 2.67 + 28 + 3)}
    for damaged in ({"unit": "tokens"}, {"unit": "tokens", "mean": 1, "std": 0, "min": 1, "max": 9, "quantiles": "x"},
                    {"unit": "characters", "mean": None}, [],
                    {"unit": "tokens", "mean": 1, "std": 0, "min": 5, "max": 10**400, "quantiles": [5, 9]},
                    {"unit": "tokens", "mean": 1, "std": 0, "min": 5, "max": 9, "quantiles": [9, 5]}):
        # hand-edited or damaged: the shipped distribution, never a crash (a 400-digit count overflows floats)
        (tmp_path / "manifest.json").write_text(json.dumps({"example_lengths": damaged}))
        stats, source = example_token_stats(tmp_path)
        assert "has no lengths" in source and 250 < stats["mean"] < 275


# ---------------------------------------------------------------- levers: validated before any model loads


def _train(override: str, device: str, tmp_path, prepared_data, config: str = FAST) -> int:
    out = tmp_path / "out"
    rc = main(["train", "--config", config, "--device", device, "--override", override,
               "--override", "answer_logits_only=false",  # the fast profile's; Liger and unsloth replace it
               "--override", f"output_dir={out}", "--override", f"dataset_dir={prepared_data}",
               "--override", f"model_name_or_path={_not_a_model(tmp_path)}"])
    assert not out.exists()  # stopped at validation: no run folder, no model load
    return rc


def test_unsloth_missing_stops_with_the_install_command(monkeypatch, tmp_path, capsys, prepared_data):
    import movierec.train.checks

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(movierec.train.checks, "installed", lambda module: module != "unsloth")
    assert _train("use_unsloth=true", "cpu", tmp_path, prepared_data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: use_unsloth: true needs the unsloth package")
    assert "pip install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9" in err[0]


@pytest.mark.parametrize("override, reason", [
    ("use_unsloth=true", "error: use_unsloth: true cannot run on cpu: unsloth's kernels are Triton kernels"),
    ("enable_liger_kernel=true", "error: enable_liger_kernel: true cannot run on cpu: Liger's kernels are Triton"),
    ("optim=adamw_torch_fused", "error: optim: adamw_torch_fused needs torch's fused AdamW kernels, which torch"),
])
def test_levers_the_device_cannot_run_stop_with_the_reason(override, reason, monkeypatch, tmp_path, capsys,
                                                           prepared_data):
    import torch.utils._foreach_utils as foreach

    import movierec.train.checks

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(movierec.train.checks, "installed", lambda module: True)
    if override.startswith("optim"):
        monkeypatch.setattr(foreach, "_get_fused_kernels_supported_devices", lambda: ["cuda"])  # as on an old torch
    assert _train(override, "cpu", tmp_path, prepared_data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(reason), err


@pytest.mark.parametrize("config", [FAST, BF16_FAST])
def test_fast_gpu_profiles_take_the_host_sync_levers_and_validate(config, monkeypatch, capsys):
    from movierec.train.schema import load_yaml

    monkeypatch.chdir(ROOT)
    cfg = load_yaml(ROOT / config)
    assert cfg["optim"] == "adamw_torch_fused" and cfg["logging_nan_inf_filter"] is False
    assert main(["train", "--config", config, "--dry-run", "--device", "cuda"]) == 0  # fused AdamW on CUDA: valid
    assert main(["train", "--config", config, "--dry-run", "--device", "cpu"]) == 0  # and on this torch's CPU
    assert "total optimizer steps 7,338" in capsys.readouterr().out  # batch and steps unchanged


def test_reference_config_is_the_reference_run():
    from movierec.train.schema import load_yaml

    cfg = load_yaml(ROOT / "configs/qwen3_movielens_qlora.yaml")
    assert cfg["optim"] == "adamw_torch" and "logging_nan_inf_filter" not in cfg


# ---------------------------------------------------------------- the benchmark's measures


def _bench_out(tmp_path, losses, window_s=2.0):
    (tmp_path / "step_times.jsonl").write_text("".join(
        json.dumps({"step": i, "seconds": 0.5, "examples": 4}) + "\n" for i in range(1, 6)))
    (tmp_path / "trainer_log.jsonl").write_text("".join(
        json.dumps({"current_steps": i, "loss": x}) + "\n" for i, x in enumerate(losses, 1)))
    (tmp_path / "bench_window.json").write_text(json.dumps({"start_step": 1, "end_step": 5, "seconds": window_s,
                                                            "gpu_busy_fraction": None, "gpu_busy_note": "cpu"}))


def test_bench_rates_come_from_the_window_and_losses_must_be_finite(tmp_path):
    from movierec.bench.measure import busy_fraction, measure
    from movierec.errors import UserError
    from movierec.folders.rundir import RunDir

    _bench_out(tmp_path, [2.0, 1.5, 1.2])
    result = measure(RunDir(tmp_path), 5, rows_per_step=4, per_row=(1.0, 250.0))
    assert result["examples_per_s"] == pytest.approx(16 / 2.0) and result["tokens_per_s"] == pytest.approx(4000 / 2.0)
    assert (result["first_loss"], result["last_loss"], result["step_seconds_p90"]) == (2.0, 1.2, 0.5)
    assert result["examples_per_s_at_median_step"] == pytest.approx(4 / 0.5)  # 4 rows per 0.5 s step
    _bench_out(tmp_path, [2.0, float("nan")])
    with pytest.raises(UserError, match="loss not finite"):
        measure(RunDir(tmp_path), 5, rows_per_step=4, per_row=(1.0, 250.0))
    # two streams overlapping count once: busy 0-30 and 40-50 of 100
    assert busy_fraction([(0, 20), (10, 30), (40, 50)], 100.0) == pytest.approx(0.4)


# ---------------------------------------------------------------- per-user prefixes and bulk recommend


@pytest.mark.parametrize("attention, row_tokens, tokens_per_prompt", [
    ("sdpa", 1024, 256),  # the defaults
    ("sdpa", 300, 40),  # a list split over several rows, several rows per forward
    ("eager", 300, 1),  # the additive mask through eager attention; one row per forward
])
def test_ranking_lists_scored_in_packed_rows_equal_per_example_scores(tiny_model, prepared_data, monkeypatch,
                                                                       attention, row_tokens, tokens_per_prompt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from movierec.evaluation import scoring

    monkeypatch.setattr(scoring, "PACK_ROW_TOKENS", row_tokens)
    monkeypatch.setattr(scoring, "PACK_TOKENS_PER_PROMPT", tokens_per_prompt)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention)
    scorer = scoring.YesNoScorer(model, tokenizer, scoring.build_template(tokenizer, "qwen", 1024), batch_size=16,
                                 packing=True)
    lists = read_jsonl(prepared_data / "ranking.jsonl")
    first = sorted({c["list_id"] for c in lists})[:3]
    records = [c for c in lists if c["list_id"] in first]
    prompts = scorer.encode_many(records)
    forwards = []
    model.register_forward_hook(lambda module, args, kwargs, out: forwards.append(kwargs["input_ids"].shape),
                                with_kwargs=True)
    assert scoring._packable(model)
    grouped = scorer.score_ids(prompts, groups=[c["list_id"] for c in records])
    rows = [shape[0] for shape in forwards]
    assert sum(rows) < len(prompts) / 3  # packed: several candidates per row, no row per prompt
    assert all(shape[1] <= row_tokens for shape in forwards)
    assert max(rows) == 1 if tokens_per_prompt == 1 else max(rows) > 1, forwards
    assert model.get_output_embeddings().out_features == model.config.vocab_size  # the full head is back
    alone = np.array([scorer.score_ids([p])[0] for p in prompts])  # one prompt: no prefix, no packing
    np.testing.assert_allclose(grouped, alone, atol=1e-5)
    np.testing.assert_allclose(scorer.score(records, group_by="list_id"), grouped, atol=1e-6)


def test_groups_scored_with_per_group_caches_equal_packed_rows(tiny_model, prepared_data):
    """On a CPU (and with attention that takes no 4D mask) groups use per-group KV caches: same scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from movierec.evaluation import scoring

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    template = scoring.build_template(tokenizer, "qwen", 1024)
    records = read_jsonl(prepared_data / "ranking.jsonl")[:40]
    auto = scoring.YesNoScorer(model, tokenizer, template, batch_size=16)
    assert not auto._packs()  # a CPU model: the caches
    packed = scoring.YesNoScorer(model, tokenizer, template, batch_size=16, packing=True)
    assert packed._packs()
    np.testing.assert_allclose(auto.score(records, group_by="list_id"), packed.score(records, group_by="list_id"),
                               atol=1e-5)
    model.config._attn_implementation = "flash_attention_2"  # takes no 4D mask: never packed
    assert not scoring._packable(model) and not packed._packs()


def test_recommend_all_users_equals_single_user_recommend(demo_run, prepared_data, tmp_path, monkeypatch, capsys):
    import movierec.evaluation.scoring

    movies = pd.read_parquet(prepared_data / "movies.parquet")["movieId"].head(20).tolist()
    candidates = ",".join(map(str, movies))
    out = tmp_path / "top.parquet"
    assert main(["recommend", "--run", str(demo_run), "--users", "all", "--top-k", "5", "--out", str(out),
                 "--candidates", candidates, "--device", "cpu"]) == 0
    top = pd.read_parquet(out)
    assert list(top.columns) == ["user_id", "rank", "movie_id", "title", "p_yes"]
    users = sorted({r["user_id"] for r in read_jsonl(prepared_data / "movielens_qwen3_eval.jsonl")})
    assert sorted(top["user_id"].unique()) == users and (top.groupby("user_id").size() == 5).all()
    assert (top.groupby("user_id")["p_yes"].diff().dropna() <= 0).all()

    seen = {}
    score = movierec.evaluation.scoring.YesNoScorer.score

    def recording(self, records, *args, **kwargs):
        seen["probs"] = score(self, records, *args, **kwargs)
        return seen["probs"]

    monkeypatch.setattr(movierec.evaluation.scoring.YesNoScorer, "score", recording)
    for user in users[:2]:
        assert main(["recommend", "--run", str(demo_run), "--user", str(user), "--candidates", candidates,
                     "--device", "cpu"]) == 0
        single = dict(zip(movies, seen["probs"]))
        mine = top[top["user_id"] == user]
        np.testing.assert_allclose(mine["p_yes"], [single[m] for m in mine["movie_id"]], atol=1e-5)
        assert list(mine["movie_id"]) == sorted(single, key=lambda m: -single[m])[:5]
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--users", "all"], "--users: only `all`"),
    (["--users", "5", "--out", "x.parquet"], "--users: only `all`"),
    (["--user", "1", "--users", "all", "--out", "x.parquet"], "give --user ID"),
    (["--user", "1", "--out", "x.parquet"], "--out: only with --users all"),
    (["--users", "all", "--out", "x.csv"], "--out: expected a .parquet file"),
    # a folder no file can be made in (/proc refuses even root): refused before the model loads and scores
    (["--users", "all", "--out", "/proc/top.parquet"], "--out: cannot write to /proc/top.parquet"),
])
def test_recommend_all_bad_input(demo_run, args, message, tmp_path, capsys, monkeypatch):
    import movierec.evaluation.scoring

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(movierec.evaluation.scoring, "load_model_for_scoring", no_load)
    assert main(["recommend", "--run", str(demo_run), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def _not_a_model(tmp_path):
    """A folder that holds no model: validation must stop before anything tries to load it."""
    folder = tmp_path / "not-a-model"
    folder.mkdir(exist_ok=True)
    return folder


def test_recommend_all_refuses_a_folder_as_out(demo_run, tmp_path, capsys):
    folder = tmp_path / "top.parquet"
    folder.mkdir()
    assert main(["recommend", "--run", str(demo_run), "--device", "cpu", "--users", "all", "--out", str(folder)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out: {folder} is a folder; name the .parquet file to write"
