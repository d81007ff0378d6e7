"""One training process: load the saved LLaMA-Factory arguments and call its run_exp.

Runs in-process for a single device, or once per rank under torchrun:
    python -m torch.distributed.run --nproc_per_node 2 -m movierec.train.worker LF_YAML RESOLVED_YAML [--verbose]

The console stays quiet: LLaMA-Factory's, transformers' and the other libraries' log records and
warnings go to output_dir/train.log (one file per extra rank: train.rank<N>.log); the console
shows one progress bar and a line per evaluation. `--verbose` keeps the libraries' console output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path

import yaml

LIBRARIES = ("llamafactory", "transformers", "datasets", "peft", "accelerate", "torch", "bitsandbytes", "py.warnings")


def _load_cpu_rank_state_on_cpu() -> None:
    """Resuming DDP on CPU: transformers loads optimizer state with map_location=args.device,
    which is "cpu:0" on CPU ranks, and torch cannot restore storages to "cpu:0". Map it to "cpu"."""
    import functools

    import torch

    load = torch.load

    @functools.wraps(load)
    def patched(*args, map_location=None, **kwargs):
        if str(map_location).startswith("cpu:"):
            map_location = "cpu"
        return load(*args, map_location=map_location, **kwargs)

    torch.load = patched


def _log_file(output_dir: Path) -> Path:
    from movierec.folders.rundir import RunDir

    return RunDir(output_dir).log_file(int(os.environ.get("RANK", "0")))


def quiet_logging(output_dir: Path) -> logging.Handler:
    """Send every library's records (warnings included) to train.log; their console handlers keep errors."""
    import datasets
    import transformers
    from llamafactory.extras import logging as lf_logging

    lf_logging.get_logger("llamafactory")  # creates LLaMA-Factory's console handler, to quiet it below
    handler = logging.FileHandler(_log_file(output_dir), encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(levelname)s|%(asctime)s] %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    logging.captureWarnings(True)
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for h in logger.handlers:
            h.setLevel(logging.ERROR)
        logger.addHandler(handler)
        # torch stays at WARNING: its own (glog-style) console handlers, added later by torch._logging,
        # would print dynamo's INFO statistics at exit
        level = logging.WARNING if name == "torch" else logging.INFO
        logger.setLevel(min(logger.level or level, level))
    transformers.utils.logging.get_logger()  # its default (console) handler exists from here on
    for h in transformers.utils.logging._get_library_root_logger().handlers:  # noqa: SLF001
        if h is not handler:
            h.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    return handler


def log_exception(run, error: BaseException) -> None:
    """A failed in-process run: the traceback goes to train.log, one line to the console."""
    with open(_log_file(run.path), "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(error)))
    print(f"error in training: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
          file=sys.stderr)


def run(lf_yaml: str | Path, resolved_yaml: str | Path, extra_callbacks: list | None = None,
        verbose: bool = True) -> None:
    from llamafactory.train.tuner import run_exp

    from movierec.train.callbacks import (
        build_callbacks,
        install_quiet_progress,
        install_score_logging,
    )

    lf_args = yaml.safe_load(Path(lf_yaml).read_text(encoding="utf-8"))
    resolved = yaml.safe_load(Path(resolved_yaml).read_text(encoding="utf-8"))
    handler = None
    if not verbose:
        handler = quiet_logging(Path(lf_args["output_dir"]))
    if resolved.get("device") == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _load_cpu_rank_state_on_cpu()
    from movierec.train.checks import compiles
    from movierec.train.config import MovierecArguments
    from movierec.train.plan import TrainPlan
    from movierec.train.static_shapes import compile_env_restored, configure_compile

    plan = TrainPlan.from_dict(resolved.get("plan"))
    if plan is None:
        raise ValueError(f"{resolved_yaml}: no step plan (train records one before launching)")
    mr_args = MovierecArguments.from_record(resolved.get("movierec"))
    callbacks = build_callbacks(lf_args, mr_args, plan)
    callbacks += list(extra_callbacks or [])
    # LLaMA-Factory print()s a tokenised example and more to stdout: in quiet mode that goes to train.log
    stdout = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(handler.stream)
    with compile_env_restored(), install_score_logging(), install_quiet_progress(enabled=not verbose), stdout:
        if mr_args.shape_buckets and compiles(lf_args):
            configure_compile()
        try:
            run_exp(args=lf_args, callbacks=callbacks)
        finally:
            if handler is not None:
                for name in LIBRARIES:
                    logging.getLogger(name).removeHandler(handler)
                handler.close()


if __name__ == "__main__":
    argv = sys.argv[1:]
    verbose = "--verbose" in argv
    paths = [a for a in argv if a != "--verbose"]
    run(paths[0], paths[1], verbose=verbose)
