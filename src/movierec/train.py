"""`movierec train`: render LLaMA-Factory arguments, guard the output folder, launch, resume.

LLaMA-Factory stays behind this module: it receives one dict of arguments (also saved as
`llamafactory_train.yaml`, runnable by `llamafactory-cli train`), either in this process or in
each rank started by torchrun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from movierec.dryrun import estimate_steps
from movierec.errors import UserError
from movierec.params import count_for_config
from movierec.runinfo import complete_checkpoints, dataset_examples, list_checkpoints, missing_files, run_metadata

DEEPSPEED_PRESETS = {"z2": "configs/deepspeed/ds_z2_config.json", "z3": "configs/deepspeed/ds_z3_config.json"}
LF_YAML = "llamafactory_train.yaml"
RESOLVED_YAML = "resolved_config.yaml"


# ---------------------------------------------------------------- resume / output folder


def resolve_resume(output_dir: Path, resume: str | None, warn=print) -> Path | None:
    """Pick the checkpoint to resume from: `auto` (latest complete), `checkpoint-N`, or a path.

    Incomplete checkpoints (a crash while saving) are skipped with a warning under `auto` and
    refused when named.
    """
    if resume is None:
        return None
    if resume == "auto":
        for ckpt in list_checkpoints(output_dir)[::-1]:
            missing = missing_files(ckpt)
            if not missing:
                return ckpt
            warn(f"warning: skipping incomplete {ckpt.name} (missing {', '.join(missing)})")
        raise UserError(f"--resume: no complete checkpoint in {output_dir}")
    path = Path(resume)
    if not path.exists() and (output_dir / resume).exists():
        path = output_dir / resume
    if not path.is_dir():
        raise UserError(f"--resume: checkpoint not found: {resume}")
    missing = missing_files(path)
    if missing:
        raise UserError(f"--resume: {path} is incomplete (missing {', '.join(missing)})")
    return path


def prepare_output_dir(output_dir: Path, resume: Path | None, overwrite: bool) -> None:
    """Refuse to mix a fresh run with an old one; `--overwrite` clears the folder first."""
    if resume is not None:
        return
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            found = ", ".join(sorted(p.name for p in output_dir.iterdir())[:4])
            raise UserError(
                f"output_dir {output_dir} is not empty ({found}, ...): "
                "use --resume to continue that run or --overwrite to delete it"
            )
        _check_deletable(output_dir)
        shutil.rmtree(output_dir)  # LLaMA-Factory's own overwrite keeps old checkpoints
    output_dir.mkdir(parents=True, exist_ok=True)


RUN_MARKERS = ("resolved_config.yaml", "llamafactory_train.yaml", "trainer_log.jsonl", "trainer_state.json")


def _check_deletable(output_dir: Path) -> None:
    """`--overwrite` deletes a previous run's folder, never the working tree or an unrelated folder."""
    target, cwd = output_dir.resolve(), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"--overwrite: output_dir {output_dir} holds the current directory; refusing to delete it")
    if not (any((output_dir / m).exists() for m in RUN_MARKERS) or list_checkpoints(output_dir)):
        raise UserError(f"--overwrite: {output_dir} does not look like a training run (no {RUN_MARKERS[0]}, "
                        "trainer_log.jsonl or checkpoint-*); delete it yourself or pick another output_dir")


# ---------------------------------------------------------------- device and arguments


def resolve_device(choice: str) -> str:
    """Return "cpu" or "cuda". `cpu` hides CUDA from this process and its children."""
    if choice == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_device(lf: dict[str, Any], device: str) -> list[str]:
    """Adjust precision for the device; return notes describing what changed."""
    notes = []
    if device == "cpu":
        for key in ("bf16", "fp16", "pure_bf16"):
            if lf.get(key):
                lf[key] = False
                notes.append(f"{key} off")
        lf["use_cpu"] = True
        notes.append("fp32 compute")
    return notes


def render_llamafactory_args(
    lf: dict[str, Any], run_name: str, resume: Path | None, deepspeed: str | None
) -> dict[str, Any]:
    """The exact argument dict handed to LLaMA-Factory's run_exp (and saved as YAML)."""
    args = dict(lf)
    args.setdefault("do_train", True)
    args.setdefault("report_to", "tensorboard")
    args.setdefault("stage", "sft")
    args["run_name"] = run_name
    args["logging_dir"] = str(Path(args["output_dir"]) / "runs" / run_name)
    # movierec guards the folder itself; LLaMA-Factory's overwrite would also delete trainer_log.jsonl
    args["overwrite_output_dir"] = False
    if resume is not None:
        args["resume_from_checkpoint"] = str(resume)
    else:
        args.pop("resume_from_checkpoint", None)
    if deepspeed:
        path = Path(DEEPSPEED_PRESETS.get(deepspeed, deepspeed))
        if not path.is_file() and deepspeed in DEEPSPEED_PRESETS:  # started outside the checkout's root
            path = Path(__file__).resolve().parents[2] / DEEPSPEED_PRESETS[deepspeed]
        if not path.is_file():
            raise UserError(f"--deepspeed: {deepspeed} is neither z2, z3 nor an existing file")
        args["deepspeed"] = str(path)
    return args


# ---------------------------------------------------------------- launch


def launch(launch_dir: Path, args, device: str) -> int:
    """Run the worker in this process, or under torchrun for several processes / nodes."""
    lf_yaml = launch_dir / LF_YAML
    world = args.nproc_per_node * args.nnodes
    if world == 1 and not os.environ.get("FORCE_TORCHRUN"):
        from movierec.worker import run

        run(lf_yaml, launch_dir / RESOLVED_YAML)
        return 0
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank),
        "--nproc_per_node", str(args.nproc_per_node),
        "--master_addr", args.master_addr, "--master_port", str(args.master_port),
        "-m", "movierec.worker", str(lf_yaml), str(launch_dir / RESOLVED_YAML),
    ]
    print("launching:", " ".join(cmd), flush=True)
    env = dict(os.environ)
    if device == "cuda":  # LLaMA-Factory's launcher sets the same for DDP
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        env.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    return subprocess.run(cmd, env=env).returncode


def main(args) -> int:
    from movierec.config import load_config, validate

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if args.nproc_per_node < 1 or args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise UserError("--nproc-per-node and --nnodes must be >= 1 and 0 <= --node-rank < --nnodes")
    cfg = load_config(args.config, args.override)
    device = resolve_device(args.device) if not args.dry_run else _dry_run_device(args.device)
    lf, mr = validate(cfg)
    if "output_dir" not in lf:
        raise UserError("output_dir: missing (where checkpoints and logs go)")
    output_dir = Path(lf["output_dir"])
    run_name = args.run_name or output_dir.name
    notes = apply_device(lf, device)
    resume = resolve_resume(output_dir, args.resume)
    world = args.nproc_per_node * args.nnodes
    lf_args = render_llamafactory_args(lf, run_name, resume, args.deepspeed)
    meta = run_metadata(args, cfg, lf_args, mr, device, world)
    meta["parameters"] = count_for_config(lf_args)
    n_train = dataset_examples(lf_args, "dataset")
    meta["steps"] = estimate_steps(lf_args, n_train, world) if n_train else None
    print(f"device: {device}" + (f" ({', '.join(notes)})" if notes else ""), flush=True)

    if args.dry_run:
        from movierec.dryrun import print_dry_run

        print_dry_run(meta, lf_args, world, args.rate, n_train)
        return 0

    from movierec.io import atomic_write_text

    if args.node_rank == 0:
        prepare_output_dir(output_dir, resume, args.overwrite)
        launch_dir = output_dir
        previous = output_dir / RESOLVED_YAML
        if resume is not None and previous.is_file():  # keep what produced the earlier segment
            previous.replace(output_dir / f"resolved_config.before-{resume.name}.yaml")
    else:  # rank 0's node owns output_dir (possibly a shared filesystem); this node only launches
        import tempfile

        launch_dir = Path(tempfile.mkdtemp(prefix="movierec-node"))
    atomic_write_text(launch_dir / RESOLVED_YAML, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    atomic_write_text(launch_dir / LF_YAML, yaml.safe_dump(lf_args, sort_keys=False, allow_unicode=True))
    if resume is not None:
        print(f"resuming from {resume}", flush=True)
    rc = launch(launch_dir, args, device)
    if rc != 0:
        raise UserError(f"training failed (exit code {rc}); see the log above")
    complete = complete_checkpoints(output_dir)
    print(f"done: {output_dir} ({len(complete)} checkpoint(s); TensorBoard: tensorboard --logdir {output_dir / 'runs'})")
    return 0


def _dry_run_device(choice: str) -> str:
    """A dry run describes the run as it would be on the requested device, without needing it."""
    if choice == "auto":
        return resolve_device("auto")
    return choice
