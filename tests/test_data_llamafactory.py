"""The prepared files load through LLaMA-Factory's own dataset loader, as training will load them."""

from __future__ import annotations

from data_helpers import prepare, read_jsonl, synth_input, write_config

from movierec.folders.datadir import DatasetDir

TRAIN_NAME, EVAL_NAME = DatasetDir.TRAIN_NAME, DatasetDir.EVAL_NAME


def test_llamafactory_loads_both_splits(tmp_path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    from movierec.models.tiny import build_tokenizer

    out = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", input=str(synth_input(tmp_path / "raw")), out_dir=str(out),
                          n_train=40, n_eval=20)
    assert prepare(config) == 0
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    # the reference training config's data keys
    data_args = DataArguments(template="qwen", dataset=TRAIN_NAME, eval_dataset=EVAL_NAME, dataset_dir=str(out),
                              cutoff_len=2048, overwrite_cache=True)
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "tok"), cache_dir=str(tmp_path / "cache"))
    training_args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "run"), do_train=True, report_to="none")
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", tokenizer=tokenizer)

    for split, name in (("train_dataset", TRAIN_NAME), ("eval_dataset", EVAL_NAME)):
        dataset, records = module[split], read_jsonl(out / f"{name}.jsonl")
        assert len(dataset) == len(records)
        for row, rec in zip(dataset, records):
            answer = [t for t in row["labels"] if t != -100]
            assert tokenizer.decode(answer, skip_special_tokens=True).strip() == rec["output"]
            prompt = tokenizer.decode(row["input_ids"][: len(row["input_ids"]) - len(answer)])
            assert rec["instruction"] + "\n" + rec["input"] in prompt  # the alpaca user turn, untruncated
