"""Trainer callbacks movierec adds to LLaMA-Factory's: step timing, Yes/No scores at evaluations, a quiet console."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from movierec.data.fields import LABEL, USER_ID
from movierec.device import keep_fp32_on_cpu
from movierec.folders.rundir import RunDir
from movierec.train import answer_logits, static_shapes
from movierec.train.checks import CUDA_GRAPH_MODES
from movierec.train.config import MovierecArguments, arg
from movierec.train.plan import TrainPlan


class StepTimerCallback(TrainerCallback):
    """Append `{"step", "seconds", "examples"}` per optimizer step to step_times.jsonl.

    The report derives first-step, stabilised and peak speed from it; trainer_log.jsonl only
    has cumulative time at logging steps. With packing a batch holds packed sequences, whose
    example count varies: the line says `"sequences"` instead of `"examples"`. On a GPU the clock
    synchronises at logging steps only (see on_step_end).
    """

    def __init__(self, output_dir: str, per_step: int, unit: str = "examples"):
        self.run = RunDir(output_dir)
        self.per_step, self.unit = per_step, unit
        self._t0: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None or not state.is_world_process_zero:
            return
        import torch

        # Synchronise only where the Trainer syncs anyway (a logging step reads the loss) and at the end: a
        # sync every step would stop the host from queuing the next step while the GPU runs this one. Between
        # syncs a step's time is the host's; their sum up to a synchronised step is exact.
        synced = state.global_step >= state.max_steps or state.global_step % max(int(state.logging_steps or 1), 1) == 0
        if synced and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        line = {"step": state.global_step, "seconds": round(time.perf_counter() - self._t0, 5),
                self.unit: self.per_step}
        self.run.append_jsonl(RunDir.STEP_TIMES, line)


class CpuFp32Callback(TrainerCallback):
    """Applies keep_fp32_on_cpu before the first step (see there)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            keep_fp32_on_cpu(model)


class ModelHookCallback(TrainerCallback):
    """Installs a forward hook on the model before the first step, once per model: `install(model)` returns
    its handle (answer_logits_only's in train/answer_logits.py, shape_buckets' in train/static_shapes.py)."""

    def __init__(self, name: str, install):
        self.name, self.install = name, install

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        hooks = getattr(model, "_movierec_hooks", None) or {}
        if model is not None and self.name not in hooks:
            hooks[self.name] = self.install(model)
            model._movierec_hooks = hooks


class CudaGraphStepCallback(TrainerCallback):
    """Under CUDA graphs (torch_compile_mode reduce-overhead or max-autotune) marks each step's start, so a
    graph's outputs from the previous step (the loss the Trainer accumulates) are not taken for live ones."""

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        torch.compiler.cudagraph_mark_step_begin()


class ScoreCallback(TrainerCallback):
    """Yes/No ranking metrics at every evaluation: `eval_auc`, `eval_uauc`, `eval_log_loss`.

    They join the evaluation's own metrics before the Trainer logs them (see install_score_logging),
    so every `report_to` integration (TensorBoard `eval/auc`, W&B, MLflow, ...) receives them with
    the evaluation's step, `metric_for_best_model: eval_auc` and early stopping can use them, and
    trainer_log.jsonl gets a line per evaluation. Every rank scores the same subsample, so all
    ranks agree on the best checkpoint. `prompts` (token ids) and `labels` replace the eval file
    (the benchmark's generated prompts).
    """

    def __init__(self, lf_args: dict[str, Any], mr_args: MovierecArguments, prompts: list[list[int]] | None = None,
                 labels: list[int] | None = None):
        from movierec.evaluation.scoring import eval_records, subsample
        from movierec.folders.datadir import DatasetDir

        self.records: list[dict[str, Any]] = []
        self.users = None
        if prompts is None:
            self.records = subsample(eval_records(lf_args, DatasetDir(lf_args["dataset_dir"])),
                                     mr_args.eval_auc_samples, seed=int(arg(lf_args, "seed")))
            labels = [int(r[LABEL]) for r in self.records]
            self.users = np.array([r[USER_ID] for r in self.records])
        self.labels = np.array(labels)
        self.cutoff_len = int(arg(lf_args, "cutoff_len"))
        self.template_name = arg(lf_args, "template")
        self.batch_size = mr_args.eval_auc_batch_size
        self._prompts = prompts
        self._scorer = None
        self._logged_step = None

    def scores(self, model, tokenizer) -> dict[str, float]:
        """The metrics of `model` on the eval prompts (with how many and how long it took)."""
        from sklearn.metrics import log_loss

        from movierec.evaluation.metrics import auc, uauc

        if self._scorer is None:
            from movierec.evaluation.scoring import YesNoScorer, build_template

            template = build_template(tokenizer, self.template_name, self.cutoff_len)
            self._scorer = YesNoScorer(model, tokenizer, template, self.cutoff_len, self.batch_size)
            if self._prompts is None:
                self._prompts = self._scorer.encode_many(self.records)
        self._scorer.model = model
        start = time.perf_counter()
        probs = self._scorer.score_ids(self._prompts)
        out = {"eval_auc": _nan_if_none(auc(self.labels, probs))}
        if self.users is not None:
            out["eval_uauc"] = _nan_if_none(uauc(self.labels, probs, self.users))
        out["eval_log_loss"] = float(log_loss(self.labels, probs, labels=[0, 1]))
        out.update(eval_auc_examples=len(self._prompts), eval_auc_seconds=round(time.perf_counter() - start, 3))
        return out

    def on_log(self, args, state, control, logs=None, **kwargs):
        """trainer_log.jsonl: LLaMA-Factory's lines keep only its own keys; add the scores' line."""
        if not logs or "eval_auc" not in logs or not state.is_world_process_zero:
            return
        if state.global_step == self._logged_step:  # the final evaluation at the last evaluated step: same model
            return
        self._logged_step = state.global_step
        line = {"current_steps": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch,
                **{k: v for k, v in logs.items() if k.startswith(("eval_auc", "eval_uauc", "eval_log_loss"))}}
        RunDir(args.output_dir).append_jsonl(RunDir.TRAINER_LOG, line)


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


@contextlib.contextmanager
def install_score_logging():
    """Make the Trainer's own `log` add ScoreCallback's metrics to an evaluation's metrics.

    transformers logs an evaluation (`Trainer.log`, which every integration's `on_log` hears) before
    it calls the callbacks' `on_evaluate`, so a callback can only reach the trackers through `log`.
    The evaluation's metrics dict is the one `log` receives, so the best-checkpoint choice and early
    stopping see the scores too. Restored on exit.
    """
    from transformers import Trainer

    original = Trainer.log

    def log(self, logs, *args, **kwargs):
        if "eval_loss" in logs and "eval_auc" not in logs:
            for cb in self.callback_handler.callbacks:
                if isinstance(cb, ScoreCallback):
                    logs.update(cb.scores(self.model, self.processing_class))
        return original(self, logs, *args, **kwargs)

    Trainer.log = log
    try:
        yield
    finally:
        Trainer.log = original


class QuietProgressCallback(ProgressCallback):
    """One progress bar (the latest loss beside it) and one line per evaluation; no per-step dicts."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # no second bar during evaluation

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
        if "eval_loss" in logs:
            shown = [("loss", "eval_loss"), ("AUC", "eval_auc"), ("UAUC", "eval_uauc")]
            parts = [f"{label} {logs[key]:.4f}" for label, key in shown if isinstance(logs.get(key), float)]
            self.training_bar.write(f"eval at step {state.global_step:,}: {', '.join(parts)}", file=sys.stderr)


@contextlib.contextmanager
def install_quiet_progress(enabled: bool = True):
    """The Trainer creates its progress callback from transformers.trainer.DEFAULT_PROGRESS_CALLBACK."""
    import transformers.trainer as trainer_module

    original = trainer_module.DEFAULT_PROGRESS_CALLBACK
    if enabled:
        trainer_module.DEFAULT_PROGRESS_CALLBACK = QuietProgressCallback
    try:
        yield
    finally:
        trainer_module.DEFAULT_PROGRESS_CALLBACK = original


def build_callbacks(lf_args: dict[str, Any], mr_args: MovierecArguments, plan: TrainPlan) -> list[TrainerCallback]:
    """movierec's callbacks for a run of the recorded `plan`."""
    unit = "sequences" if plan.packing else "examples"
    callbacks: list[TrainerCallback] = [CpuFp32Callback(),
                                        StepTimerCallback(lf_args["output_dir"], plan.rows_per_step, unit)]
    if lf_args.get("torch_compile_mode") in CUDA_GRAPH_MODES:
        callbacks.append(CudaGraphStepCallback())
    if mr_args.shape_buckets:  # before answer_logits_only's hook, which reads the padded labels
        callbacks.append(ModelHookCallback("shape_buckets",
                                           lambda model: static_shapes.install(model, mr_args.shape_buckets)))
    if mr_args.answer_logits_only:
        callbacks.append(ModelHookCallback("answer_logits_only", answer_logits.install))
    evaluates = str(arg(lf_args, "eval_strategy")) != "no"
    if mr_args.eval_auc and lf_args.get("eval_dataset") and evaluates:
        callbacks.append(ScoreCallback(lf_args, mr_args))
    patience = mr_args.early_stopping_patience
    if patience is not None and evaluates and lf_args.get("metric_for_best_model"):  # bench turns evaluations off
        callbacks.append(early_stopping(patience, mr_args.early_stopping_threshold))
    return callbacks


def early_stopping(patience: int, threshold: float) -> TrainerCallback:
    """transformers' EarlyStoppingCallback on metric_for_best_model (eval_auc included: the scores join the
    evaluation's metrics before `on_evaluate`, see install_score_logging). validate() checked its needs.

    It counts evaluations in a row whose metric does not beat the best so far by more than `threshold`
    and stops training at the `patience`-th. Every rank sees the same metrics, so all ranks stop together.
    A resumed run counts from 0 again (the count is restored only with restore_callback_states_from_checkpoint).

    movierec leaves load_best_model_at_end as configured (off unless set), although the callback warns
    without it (in train.log): the best checkpoint is kept anyway (transformers tracks it for
    metric_for_best_model and never rotates it away under save_total_limit), and movierec's later stages
    choose it by name (`evaluate --checkpoint best`, whose metrics.json reports it first; `recommend`'s
    default). Turning it on would silently change what LLaMA-Factory's end-of-run files mean when early
    stopping is on: the adapter in output_dir and the final evaluation (eval_results.json, the summary's
    "last evaluation") would be the best checkpoint's instead of the last step's, and it would add
    transformers' rule that save_steps be a multiple of eval_steps.
    """
    from transformers import EarlyStoppingCallback

    return EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
