"""`movierec train`: validate, own the run folder, then drive a TrainingSession (check, plan, record, launch);
resume. Every check runs before anything is written; a run that fails before its first step leaves nothing
behind, so the same command can be rerun.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir
from movierec.train.config import RunConfig
from movierec.train.plan import TrainPlan, counted
from movierec.train.session import Distributed, TrainingSession


def keep_checkpoint_schedule(cfg: RunConfig, resume: Path) -> RunConfig:
    """A resume runs on the checkpoint's logging / evaluation / save intervals: transformers restores them
    from its trainer_state.json whatever the config says. Plan, record and header follow them too."""
    state = RunDir.trainer_state(resume)
    changed, kept = [], {}
    for key in ("logging_steps", "eval_steps", "save_steps"):
        theirs, ours = state.get(key), cfg.llamafactory.get(key)
        if isinstance(theirs, (int, float)) and theirs >= 1 and isinstance(ours, (int, float)) and ours >= 1 \
                and int(theirs) != int(ours):
            changed.append(f"{key} {int(theirs)} (config: {int(ours)})")
            kept[key] = int(theirs)
    if changed:
        print(f"warning: resuming from {resume.name} keeps its schedule, as transformers restores it: "
              f"{', '.join(changed)}; to change it, start a new run", file=sys.stderr)
    return cfg.replace(**kept)


def _completed_step(resume: Path | None) -> int | None:
    """The resume checkpoint's optimizer step (None without a resume)."""
    if resume is None:
        return None
    step = RunDir.trainer_state(resume).get("global_step")
    return step if isinstance(step, int) else None


def main(args) -> int:
    from movierec.train.record import run_metadata

    if args.rate is not None and not args.rate > 0:
        raise UserError(f"--rate: training examples per second must be > 0, got {args.rate:g}")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    dist = Distributed(args.nproc_per_node, args.nnodes, args.node_rank, args.master_addr, args.master_port)
    dist.check()
    session, raw, notes = open_session(args, dist)
    session.check(planning=args.dry_run)
    plan = session.make_plan()
    record = {**run_metadata(args, raw, session.lf_args, session.config.movierec, session.device,
                             dist.world_size, session.data), **session.record()}
    done = _completed_step(session.resume)
    if session.resume is not None and done is None:
        raise UserError(f"--resume: {session.resume}/{RunDir.TRAINER_STATE} records no global_step")
    total = plan.total_optimizer_steps if plan else None
    if done is not None and total and done >= total:
        print(f"{session.run.path}: already complete ({session.resume.name} is step {done:,} of {total:,}); nothing "
              "to resume. To train longer, raise max_steps or num_train_epochs.")
        return 0
    if session.counts["prepared"]:
        session.data.check_splits(session.lf_args.get("dataset"), session.lf_args.get("eval_dataset"))
    if session.resume is not None and session.counts["prepared"]:  # the rest of a run is trained on its own data
        changed = session.run.data_changed(session.data, "so resuming would go on with other examples (and its "
                                           "evaluation could include ones it trained on)")
        if changed:
            raise UserError(f"--resume: {changed}; start a new run (--overwrite, or another output_dir), or "
                            "prepare the data as it was")
    for line in session.warnings():
        print(f"warning: {line}", file=sys.stderr)
    if args.dry_run:
        from movierec.train.dryrun import print_dry_run

        print(f"device: {session.device}" + (f" ({', '.join(notes)})" if notes else ""))
        print_dry_run(record, session.lf_args, plan, session.config.movierec, args.rate)
        return 0
    session.data.require().verify()  # the files training reads are the ones `prepare` wrote
    if dist.node_rank != 0:  # node 0 owns output_dir (possibly a shared filesystem); this node only launches
        launch_dir = Path(tempfile.mkdtemp(prefix="movierec-node"))
        session.write(record, launch_dir)
        return _finish(session.run, session.launch(launch_dir, args.verbose), started=None)
    return _train(session, record, done, notes, args)


def open_session(args, dist: Distributed) -> tuple[TrainingSession, dict[str, Any], list[str]]:
    """The validated config bound to its run folder, data folder, device and resume point."""
    from movierec.device import apply_device, planned_device, resolve_device
    from movierec.train.config import check_run_name, validate
    from movierec.train.schema import load_config

    raw = load_config(args.config, args.override)
    device = planned_device(args.device) if args.dry_run else resolve_device(args.device)
    config = validate(raw, data_required=not args.dry_run, launching=not args.dry_run)
    if "output_dir" not in config.llamafactory:
        raise UserError("output_dir: missing (where checkpoints and logs go)")
    run, data = RunDir(config.get("output_dir")), DatasetDir(config.get("dataset_dir") or "data")
    _check_run_folder(run)
    run_name = check_run_name(args.run_name or run.path.name)
    config, notes = apply_device(config, device)
    resume = run.resume_point(args.resume)
    if resume is not None:
        config = keep_checkpoint_schedule(config, resume)
    return TrainingSession(config, device, run, data, run_name, dist, resume, args.deepspeed), raw, notes


def _check_run_folder(run: RunDir) -> None:
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"output_dir: {run.path} is a file, not a folder")
    blocker = next((p for p in run.path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"output_dir: {run.path} cannot be a folder, {blocker} is a file")
    if run.path == Path.cwd().resolve() or run.path in Path.cwd().resolve().parents:
        raise UserError(f"output_dir: {run.path} holds the current directory; pick a folder of its own")


def _train(session: TrainingSession, record: dict[str, Any], done: int | None, notes: list[str], args) -> int:
    """Hold the run folder, clear or cut it back to the resume point, launch; undo a run that never stepped."""
    run, resume = session.run, session.resume
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
        session.write(record)
        _header(run, record, session.plan, session.device, notes, resume)
        interrupted: KeyboardInterrupt | None = None
        try:
            rc = session.launch(verbose=args.verbose)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, e.g. while the model loads: same clean-up, so the
            rc, interrupted = 130, e    # command can rerun
        started = _started(run, done)
        if rc != 0 and not started:
            _undo(run, resume, before, logs, show_log=not interrupted)
    if rc != 0 and not started and resume is None and not existed:
        run.path.rmdir()  # empty again: the lock went with the `with` block
    if interrupted:
        raise interrupted
    return _finish(run, rc, started)


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


def _header(run: RunDir, record: dict[str, Any], plan: TrainPlan | None, device: str, notes: list[str],
            resume: Path | None) -> None:
    counts = record.get("data_counts") or {}
    print(f"run: {run.path}" + (f" (resuming from {resume.name})" if resume is not None else ""))
    print(f"model: {record['config'].get('model_name_or_path')}; device: {device}"
          + (f" ({', '.join(notes)})" if notes else ""))
    if plan:
        lf = record["config"]
        print(f"data: {counted(counts.get('train'), lf)} train / {counted(counts.get('eval') or 0, lf)} eval examples; "
              f"{plan.total_optimizer_steps:,} steps of {plan.examples_per_step:,.4g} examples, "
              f"warmup {plan.warmup_steps:,}, {plan.evaluations} evaluations")
    print(f"logs: {run.file(RunDir.TRAIN_LOG)}; TensorBoard: tensorboard --logdir {run.file(RunDir.RUNS)}", flush=True)


def _finish(run: RunDir, rc: int, started: bool | None) -> int:
    if rc != 0:
        where = run.file(RunDir.TRAIN_LOG)
        if started is False:
            raise UserError(f"training failed before its first step (exit code {rc}); nothing was kept: fix the "
                            "cause above and rerun the same command")
        from movierec.folders.checkpoint import checkpoint_problems

        resumable = any(not checkpoint_problems(c) for c in run.checkpoints())
        raise UserError(f"training failed (exit code {rc}); see {where}" + ("" if started is None else
                        "; continue with --resume" if resumable else
                        "; no complete checkpoint was saved to resume from: rerun with --overwrite"))
    if started is None:
        return 0
    from movierec.train.summary import summarize

    print(summarize(run))
    return 0
