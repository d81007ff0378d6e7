"""TrainingSession: one training run's life, check -> plan -> record -> launch, driven by `train` and `bench`.

LLaMA-Factory stays behind this module: it receives one dict of arguments (also saved as
`llamafactory_train.yaml`, runnable by `llamafactory-cli train`), either in this process or in each rank
started by torchrun.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movierec.errors import UserError
from movierec.folders.datadir import DatasetDir
from movierec.folders.rundir import RunDir
from movierec.train.config import RunConfig, arg, lora_alpha
from movierec.train.plan import TrainPlan

# LoRA settings saved in a checkpoint's adapter_config.json (LLaMA-Factory key: peft key). Resuming with other
# shapes fails on a size mismatch; with another scale (lora_alpha, use_rslora) or dropout the restored weights
# silently compute something else (measured: eval loss 0.31 -> 6.76 after changing lora_alpha).
ADAPTER_KEYS = {"lora_rank": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
                "use_rslora": "use_rslora", "use_dora": "use_dora", "lora_target": "target_modules"}


@dataclass(frozen=True)
class Distributed:
    """torchrun's placement of this run (one process on one node: launched in this process)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise UserError("--nproc-per-node and --nnodes must be >= 1 and 0 <= --node-rank < --nnodes")


@dataclass
class TrainingSession:
    """A validated config bound to its run folder, data folder and device.

    `check` runs every check LLaMA-Factory and the device would fail on later; `plan` computes the
    TrainPlan once; `record` is what resolved_config.yaml saves; `launch` runs the worker.
    """

    config: RunConfig  # validated, with the device's precision applied
    device: str
    run: RunDir
    data: DatasetDir
    run_name: str
    dist: Distributed = field(default_factory=Distributed)
    resume: Path | None = None
    deepspeed: str | None = None

    def __post_init__(self) -> None:
        from movierec.train.config import render_llamafactory_args

        self.lf_args = render_llamafactory_args(self.config.llamafactory, self.run, self.data, self.run_name,
                                                self.resume, self.deepspeed)
        self.counts: dict[str, Any] = {}
        self.plan: TrainPlan | None = None

    def check(self, planning: bool = False) -> None:
        """The device's lever checks, then LLaMA-Factory's own argument processing; a resume's adapter settings.
        `planning` (a dry run of a GPU run on a machine without one) leaves out the precision checks."""
        from movierec.device import apply_device, resolve_device
        from movierec.train.checks import check_device_levers
        from movierec.train.config import check_with_llamafactory

        checked = self.lf_args
        if planning and self.device == "cuda" and resolve_device("auto") != "cuda":
            checked = dict(apply_device(RunConfig(self.lf_args), "cpu")[0].llamafactory)
        problems = check_device_levers(self.lf_args, self.device) or check_with_llamafactory(checked)
        if problems:
            raise UserError("\n".join(problems))
        if self.resume is not None:
            check_adapter(self.resume, self.lf_args)

    def make_plan(self, n_examples: int | None = None) -> TrainPlan | None:
        """The step plan for the prepared data (or `n_examples` generated ones: bench); None before `prepare`."""
        from movierec.train.plan import data_counts, train_plan

        self.counts = data_counts(self.lf_args, self.data) if n_examples is None else {"train": n_examples}
        n = self.counts.get("train")
        self.plan = train_plan(self.lf_args, n, self.dist.world_size, self.data) if n else None
        return self.plan

    def warnings(self) -> list[str]:
        """What the run is likely to regret (said by the dry run and at launch): prompts cut by cutoff_len."""
        from movierec.bench.lengths import cut_examples

        cut = cut_examples(self.lf_args, self.data.path) if self.counts.get("prepared") else None
        return [cut] if cut else []

    def record(self) -> dict[str, Any]:
        """What the worker reads back (movierec's keys, the device, the plan) and what the report shows."""
        from movierec.models.params import count_for_config

        return {"device": self.device, "movierec": self.config.movierec.to_dict(),
                "parameters": count_for_config(self.lf_args), "data_counts": self.counts,
                "plan": self.plan.to_dict() if self.plan else None}

    def write(self, record: dict[str, Any], folder: Path | None = None) -> None:
        """The record and the exact LLaMA-Factory arguments, into the run folder (or a node's launch folder)."""
        RunDir(folder or self.run.path).write_record(record, self.lf_args)

    def launch(self, folder: Path | None = None, verbose: bool = False, extra_callbacks: list | None = None,
               catch: bool = True) -> int:
        """Run the worker on the files `write` put in `folder`: in this process, or under torchrun. In this
        process a failure's traceback goes to train.log and the exit code is 1 (catch=False: it propagates)."""
        folder = folder or self.run.path
        lf_yaml, resolved = folder / RunDir.LF_ARGS, folder / RunDir.RESOLVED
        if self.dist.world_size == 1 and not os.environ.get("FORCE_TORCHRUN"):
            from movierec.train.worker import log_exception, run

            try:
                run(lf_yaml, resolved, extra_callbacks, verbose=verbose)
            except Exception as e:  # noqa: BLE001 - any failure of the run: its traceback goes to train.log
                if not catch:
                    raise
                log_exception(self.run, e)
                return 1
            return 0
        d = self.dist
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(d.nnodes), "--node_rank",
               str(d.node_rank), "--nproc_per_node", str(d.nproc_per_node), "--master_addr", d.master_addr,
               "--master_port", str(d.master_port), "-m", "movierec.train.worker", str(lf_yaml), str(resolved),
               *(["--verbose"] if verbose else [])]
        print("launching:", shlex.join(cmd), flush=True)
        env = dict(os.environ)
        if self.device == "cuda":  # LLaMA-Factory's launcher sets the same for DDP
            env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
            env.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
        return subprocess.run(cmd, env=env).returncode


def check_adapter(resume: Path, lf_args: dict[str, Any]) -> None:
    """Resuming needs the checkpoint's adapter settings: refuse a config that changed them, naming the keys."""
    saved = RunDir.adapter_config(resume)
    rank = int(arg(lf_args, "lora_rank"))
    wanted = {"lora_rank": rank, "lora_alpha": float(lora_alpha(lf_args)),
              "lora_dropout": float(arg(lf_args, "lora_dropout")), "use_rslora": bool(arg(lf_args, "use_rslora")),
              "use_dora": bool(arg(lf_args, "use_dora"))}
    target = arg(lf_args, "lora_target")
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
