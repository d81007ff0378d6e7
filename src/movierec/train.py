"""`movierec train`: validate, render LLaMA-Factory arguments, own the run folder, launch, resume.

LLaMA-Factory stays behind this module: it receives one dict of arguments (also saved as
`llamafactory_train.yaml`, runnable by `llamafactory-cli train`), either in this process or in
each rank started by torchrun. Every check runs before anything is written; a run that fails
before its first step leaves nothing behind, so the same command can be rerun.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from movierec.datadir import DatasetDir
from movierec.errors import UserError
from movierec.rundir import RunDir

# LoRA settings saved in a checkpoint's adapter_config.json (LLaMA-Factory key: peft key). Resuming with other
# shapes fails on a size mismatch; with another scale (lora_alpha, use_rslora) or dropout the restored weights
# silently compute something else (measured: eval loss 0.31 -> 6.76 after changing lora_alpha).
ADAPTER_KEYS = {"lora_rank": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
                "use_rslora": "use_rslora", "use_dora": "use_dora", "lora_target": "target_modules"}


def keep_checkpoint_schedule(lf: dict[str, Any], resume: Path) -> None:
    """A resume runs on the checkpoint's logging / evaluation / save intervals: transformers restores them
    from its trainer_state.json whatever the config says. Plan, record and header follow them too."""
    state = RunDir.trainer_state(resume)
    changed = []
    for key in ("logging_steps", "eval_steps", "save_steps"):
        theirs, ours = state.get(key), lf.get(key)
        if isinstance(theirs, (int, float)) and theirs >= 1 and isinstance(ours, (int, float)) and ours >= 1 \
                and int(theirs) != int(ours):
            changed.append(f"{key} {int(theirs)} (config: {int(ours)})")
            lf[key] = int(theirs)
    if changed:
        print(f"warning: resuming from {resume.name} keeps its schedule, as transformers restores it: "
              f"{', '.join(changed)}; to change it, start a new run", file=sys.stderr)


def _completed_step(resume: Path | None) -> int | None:
    """The resume checkpoint's optimizer step (None without a resume)."""
    if resume is None:
        return None
    step = RunDir.trainer_state(resume).get("global_step")
    return step if isinstance(step, int) else None


def check_adapter(resume: Path, lf_args: dict[str, Any]) -> None:
    """Resuming needs the checkpoint's adapter settings: refuse a config that changed them, naming the keys."""
    import json

    saved = json.loads((resume / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(lf_args.get("lora_rank", 8))
    wanted = {"lora_rank": rank, "lora_alpha": float(lf_args.get("lora_alpha") or 2 * rank),  # LLaMA-Factory's default
              "lora_dropout": float(lf_args.get("lora_dropout") or 0.0),
              "use_rslora": bool(lf_args.get("use_rslora", False)), "use_dora": bool(lf_args.get("use_dora", False))}
    target = lf_args.get("lora_target", "all")
    if target != "all":  # "all" is resolved against the model's layers; the checkpoint stores the list
        wanted["lora_target"] = sorted(t.strip() for t in str(target).split(","))
    differ = []
    for key, value in wanted.items():
        have = saved.get(ADAPTER_KEYS[key])
        have = sorted(have) if isinstance(have, list) else have
        if have is not None and (abs(have - value) > 1e-9 if isinstance(value, float) else have != value):
            differ.append(f"{key} {_plain(value)} (the checkpoint's: {_plain(have)})")
    if differ:
        raise UserError(f"--resume: {resume.name}'s adapter was trained with other settings: {', '.join(differ)}; "
                        "resume with the checkpoint's settings or start a fresh run")


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def launch(run: RunDir, args, device: str, launch_dir: Path, verbose: bool) -> int:
    """Run the worker in this process, or under torchrun for several processes / nodes."""
    lf_yaml, resolved = launch_dir / RunDir.LF_ARGS, launch_dir / RunDir.RESOLVED
    world = args.nproc_per_node * args.nnodes
    if world == 1 and not os.environ.get("FORCE_TORCHRUN"):
        from movierec.worker import run as run_worker

        try:
            run_worker(lf_yaml, resolved, verbose=verbose)
        except (Exception, KeyboardInterrupt) as e:  # the traceback is in train.log (or above with --verbose)
            if isinstance(e, KeyboardInterrupt):
                raise
            from movierec.worker import log_exception

            log_exception(run, e)
            return 1
        return 0
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(args.nnodes), "--node_rank", str(args.node_rank),
        "--nproc_per_node", str(args.nproc_per_node),
        "--master_addr", args.master_addr, "--master_port", str(args.master_port),
        "-m", "movierec.worker", str(lf_yaml), str(resolved), *(["--verbose"] if verbose else []),
    ]
    print("launching:", shlex.join(cmd), flush=True)
    env = dict(os.environ)
    if device == "cuda":  # LLaMA-Factory's launcher sets the same for DDP
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        env.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    return subprocess.run(cmd, env=env).returncode


def main(args) -> int:
    from movierec.config import (check_run_name, check_with_llamafactory, load_config, render_llamafactory_args,
                                 validate)
    from movierec.device import apply_device, planned_device, resolve_device
    from movierec.params import count_for_config
    from movierec.plan import data_counts, train_plan
    from movierec.runinfo import run_metadata

    if args.rate is not None and not args.rate > 0:
        raise UserError(f"--rate: training examples per second must be > 0, got {args.rate:g}")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if args.nproc_per_node < 1 or args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise UserError("--nproc-per-node and --nnodes must be >= 1 and 0 <= --node-rank < --nnodes")
    cfg = load_config(args.config, args.override)
    device = planned_device(args.device) if args.dry_run else resolve_device(args.device)
    lf, mr = validate(cfg, data_required=not args.dry_run)
    if "output_dir" not in lf:
        raise UserError("output_dir: missing (where checkpoints and logs go)")
    run, data = RunDir(lf["output_dir"]), DatasetDir(lf.get("dataset_dir") or "data")
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"output_dir: {run.path} is a file, not a folder")
    blocker = next((p for p in run.path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"output_dir: {run.path} cannot be a folder, {blocker} is a file")
    if run.path == Path.cwd().resolve() or run.path in Path.cwd().resolve().parents:
        raise UserError(f"output_dir: {run.path} holds the current directory; pick a folder of its own")
    run_name = check_run_name(args.run_name or run.path.name)
    notes = apply_device(lf, device)
    resume = run.resume_point(args.resume)
    if resume is not None:
        keep_checkpoint_schedule(lf, resume)
    world = args.nproc_per_node * args.nnodes
    lf_args = render_llamafactory_args(lf, run, data, run_name, resume, args.deepspeed)
    checked = lf_args
    if args.dry_run and device == "cuda" and resolve_device("auto") != "cuda":  # planning a GPU run on a CPU:
        checked = dict(lf_args)  # LLaMA-Factory's checks minus the precision this machine cannot have
        apply_device(checked, "cpu")
    problems = check_with_llamafactory(checked)
    if problems:
        raise UserError("\n".join(problems))
    if resume is not None:
        check_adapter(resume, lf_args)
    record = run_metadata(args, cfg, lf_args, mr, device, world, data)
    record["parameters"] = count_for_config(lf_args)
    counts = data_counts(lf_args, data)
    record["data_counts"] = counts
    record["plan"] = train_plan(lf_args, counts["train"], world, data) if counts["train"] else None

    done = _completed_step(resume)
    if resume is not None and done is None:
        raise UserError(f"--resume: {resume}/{RunDir.TRAINER_STATE} records no global_step")
    total = (record["plan"] or {}).get("total_optimizer_steps")
    if done is not None and total and done >= total:
        print(f"{run.path}: already complete ({resume.name} is step {done:,} of {total:,}); nothing to resume. "
              "To train longer, raise max_steps or num_train_epochs.")
        return 0
    if counts["prepared"]:
        data.check_splits(lf_args.get("dataset"), lf_args.get("eval_dataset"))
    if args.dry_run:
        from movierec.dryrun import print_dry_run

        print(f"device: {device}" + (f" ({', '.join(notes)})" if notes else ""))
        print_dry_run(record, lf_args, args.rate)
        return 0
    data.require().verify()  # the files training reads are the ones `prepare` wrote (no manifest: not prepared)
    if args.node_rank != 0:  # node 0 owns output_dir (possibly a shared filesystem); this node only launches
        launch_dir = Path(tempfile.mkdtemp(prefix="movierec-node"))
        _write(launch_dir, record, lf_args)
        return _finish(run, launch(run, args, device, launch_dir, args.verbose), started=None)

    return _train(run, args, record, lf_args, device, notes, resume, done)


def _train(run: RunDir, args, record: dict[str, Any], lf_args: dict[str, Any], device: str, notes: list[str],
           resume: Path | None, done: int | None) -> int:
    """Hold the run folder, write the record, launch; a run that fails (or is interrupted) before its first
    step leaves the folder as it found it."""
    existed = run.path.exists()
    with run.lock(shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])):
        entries = sorted(p.name for p in run.path.iterdir() if p.name != RunDir.LOCK)
        if resume is None and entries:
            if not args.overwrite:
                raise UserError(f"output_dir {run.path} is not empty ({', '.join(entries[:4])}, ...): use --resume "
                                "to continue that run or --overwrite to delete it")
            run.clear()
        before, logs = None, {}
        if resume is not None:
            before = run.keep_previous_record(resume)
            logs = run.truncate_logs(done)  # and the earlier segment's LLaMA-Factory arguments, to put back on failure
            if run.file(RunDir.LF_ARGS).is_file():
                logs[RunDir.LF_ARGS] = run.file(RunDir.LF_ARGS).read_text(encoding="utf-8")
        _write(run.path, record, lf_args)
        _header(run, record, device, notes, resume)
        interrupted = False
        try:
            rc = launch(run, args, device, run.path, args.verbose)
        except KeyboardInterrupt:  # Ctrl-C, e.g. while the model loads: same clean-up, so the command can rerun
            rc, interrupted = 130, True
        started = _started(run, done)
        if rc != 0 and not started:
            _undo(run, resume, before, logs, show_log=not interrupted)
    if rc != 0 and not started and resume is None and not existed:
        run.path.rmdir()  # empty again: the lock went with the `with` block
    if interrupted:
        raise KeyboardInterrupt
    return _finish(run, rc, started)


def _write(folder: Path, record: dict[str, Any], lf_args: dict[str, Any]) -> None:
    RunDir(folder).write_record(record, lf_args)


def _started(run: RunDir, done: int | None) -> bool:
    """Did training take a step (beyond the checkpoint's step `done` it resumed from)?"""
    return any(int(line.get("step", 0)) > (done or 0) for line in run.read_jsonl(RunDir.STEP_TIMES))


def _undo(run: RunDir, resume: Path | None, before: Path | None, logs: dict[str, str], show_log: bool = True) -> None:
    """A run that failed before its first step: remove what it wrote (a resume: restore the record and the
    logs it cut back), so the same command can be rerun."""
    import shutil

    if resume is not None:
        for name in (RunDir.RESOLVED, RunDir.LF_ARGS):
            run.file(name).unlink(missing_ok=True)
        if before is not None:
            before.replace(run.file(RunDir.RESOLVED))
        for name, text in logs.items():
            run.write_text(name, text)
        return
    if show_log:
        _print_log_tail(run)
    for entry in run.path.iterdir():
        if entry.name != RunDir.LOCK:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _print_log_tail(run: RunDir, lines: int = 15) -> None:
    log = run.file(RunDir.TRAIN_LOG)
    if log.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        print("\n".join(f"  {line}" for line in tail), file=sys.stderr)


def _header(run: RunDir, record: dict[str, Any], device: str, notes: list[str], resume: Path | None) -> None:
    plan, counts = record.get("plan") or {}, record.get("data_counts") or {}
    print(f"run: {run.path}" + (f" (resuming from {resume.name})" if resume is not None else ""))
    print(f"model: {record['config'].get('model_name_or_path')}; device: {device}"
          + (f" ({', '.join(notes)})" if notes else ""))
    if plan:
        print(f"data: {counts.get('train'):,} train / {counts.get('eval') or 0:,} eval examples; "
              f"{plan['total_optimizer_steps']:,} steps of {plan['examples_per_step']:,.4g} examples, "
              f"warmup {plan['warmup_steps']:,}, {plan['evaluations']} evaluations")
    print(f"logs: {run.file(RunDir.TRAIN_LOG)}; TensorBoard: tensorboard --logdir {run.file(RunDir.RUNS)}", flush=True)


def _finish(run: RunDir, rc: int, started: bool | None) -> int:
    if rc != 0:
        where = run.file(RunDir.TRAIN_LOG)
        if started is False:
            raise UserError(f"training failed before its first step (exit code {rc}); nothing was kept: fix the "
                            "cause above and rerun the same command")
        from movierec.rundir import checkpoint_problems

        resumable = any(not checkpoint_problems(c) for c in run.checkpoints())
        raise UserError(f"training failed (exit code {rc}); see {where}" + ("" if started is None else
                        "; continue with --resume" if resumable else
                        "; no complete checkpoint was saved to resume from: rerun with --overwrite"))
    if started is None:
        return 0
    from movierec.summary import summarize

    print(summarize(run))
    return 0
