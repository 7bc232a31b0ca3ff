"""The one training entry point: `train(spec, sink, *, checkpoint_dir, ...) -> RunResult`.

A run is a sequence of optimizer steps over batches that are pure functions of the position in
the data stream, so a run resumed from a checkpoint is the same computation as an uninterrupted
one. Metric step = tokens seen. Every ~1% of the run the trainer logs the mean training loss
(one host sync per log interval, which is also when divergence is checked); at every evaluation
interval and at the end it logs the held-out loss. Before every checkpoint it flushes the sink,
so whatever a checkpoint covers is durable and whatever came after is recomputed on resume.

The rooms around the loop: evaluation.py (held-out losses), meter.py (the train-metric interval),
recovery.py (which checkpoint to resume, corrupt ones set aside), trunk.py (wsd: the stable phase
shared by a trunk's branches).
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .accounting import count_params, flops_per_token
from .data import make_source
from .encdec import build_model
from .evaluation import Evaluator
from .meter import Meter
from .mlflow_contract import DEVICE, RESUMED_FROM_TOKENS
from .model import param_groups
from .objectives import mlm_corrupt, mlm_train_rng
from .recovery import CKPT_NAME, Recovery, checkpoint_info
from .schedule import lr_at
from .sinks import MetricSink, deliver
from .spec import ALREADY_FINISHED, RunResult, RunSpec, RunStatus, SpecError
from .tasks import make_task
from .trunk import Trunk

__all__ = ["train", "checkpoint_info", "peak_flops", "CKPT_NAME"]
LOG_POINTS = 100  # train metrics about every 1% of the run
DEFAULT_EVALS = 10  # eval_interval_tokens = 0: about 10 evaluations per run
LOG_EVALS = 7  # eval_schedule = log: evaluations at D/2^k, k = 0..LOG_EVALS-1
MIN_AUTO_CHECKPOINT_S = 30.0  # checkpoint_interval_tokens = 0: at evals, at most this often

# Dense bf16 peak FLOP/s by device name (first match wins), for MFU.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("4090", 165e12),
    ("3090", 71e12),
    ("V100", 125e12),
)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS if k in name), None)


# --------------------------------------------------------------------------- plan of a run


@dataclass(frozen=True)
class _Plan:
    """Step counts derived from the spec (all in optimizer steps)."""

    tokens_per_step: int
    total_steps: int
    warmup_tokens: int
    cooldown_start_step: int  # wsd: first step of the cooldown; cosine: == total_steps
    log_every: int
    eval_every: int
    eval_at: frozenset[int]  # eval_schedule = log: the evaluation steps (else empty: eval_every)
    ckpt_every: int  # 0: at evaluations (time-limited)
    divergence_loss: float

    @classmethod
    def of(cls, spec: RunSpec) -> _Plan:
        r, tps = spec.recipe, spec.tokens_per_step
        total = spec.tokens // tps
        if r.schedule == "wsd":
            cd_start = spec.cooldown_start_tokens // tps
            warmup = min(spec.warmup_tokens, cd_start * tps)
        else:
            cd_start = total
            warmup = spec.warmup_tokens or int(r.warmup_frac * total * tps) // tps * tps
            warmup = min(warmup, total * tps)

        def steps(tokens: int, default: int) -> int:
            return max(1, round(tokens / tps)) if tokens else default

        # Default: about 10 evaluations, fewer when the validation forward passes would cost
        # more than ~1/4 of training (a forward is ~1/3 of a training step per token).
        n_evals = max(1, min(DEFAULT_EVALS, int(0.75 * total * tps / spec.data.val_tokens)))
        return cls(
            tokens_per_step=tps,
            total_steps=total,
            warmup_tokens=warmup,
            cooldown_start_step=cd_start,
            log_every=max(1, total // LOG_POINTS),
            eval_every=steps(r.eval_interval_tokens, max(1, math.ceil(total / n_evals))),
            eval_at=frozenset(max(1, round(total / 2**k)) for k in range(LOG_EVALS))
            if r.eval_schedule == "log"
            else frozenset(),
            ckpt_every=steps(r.checkpoint_interval_tokens, 0),
            divergence_loss=r.divergence_loss or 2.0 * math.log(spec.model.vocab_size) + 1.0,
        )

    def evaluates_at(self, step: int) -> bool:
        """The steps that evaluate the held-out loss: every eval_every steps (eval_schedule log:
        the steps of eval_at), and the last."""
        periodic = step in self.eval_at if self.eval_at else step % self.eval_every == 0
        return periodic or step == self.total_steps


@dataclass
class _Progress:
    """Mutable state of a run that checkpoints carry (besides model/optimizer/RNG)."""

    step: int = 0
    loss_sum: float = 0.0  # train loss accumulated since the last train log
    loss_n: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    wall_s: float = 0.0  # wall time of earlier attempts
    train_s: float = 0.0  # time in optimizer steps (excludes eval/checkpoint)
    tokens_trained: int = 0  # tokens this process trained (for the mean tokens/s)

    def as_extra(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum,
            "loss_n": self.loss_n,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "wall_s": self.wall_s,
        }


class _Diverged(Exception):
    pass


class _Stopped(Exception):
    pass


# --------------------------------------------------------------------------- the run


class _Run:
    """One training run: the model and optimizer on their device, the step loop, its metrics
    and checkpoints. Held-out evaluation, checkpoint recovery and the wsd trunk are collaborators
    (evaluation.Evaluator, recovery.Recovery, trunk.Trunk)."""

    def __init__(
        self,
        spec: RunSpec,
        checkpoint_dir: Path,
        trunk_dir: Path | None,
        should_stop: Callable[[], bool] | None,
    ):
        self.spec = spec
        self.plan = plan = _Plan.of(spec)
        self.checkpoint_dir = checkpoint_dir
        self.should_stop = should_stop
        self.device = _pick_device(spec.recipe.device)
        self.progress = _Progress()
        self.resumed_from_tokens = 0
        self.started = time.perf_counter()
        self.fpt = flops_per_token(spec.model, "chinchilla")
        self.peak = peak_flops(self.device)
        self._last_ckpt_time = time.monotonic()

        _seed_everything(spec.seed)
        self.model = build_model(spec.model).to(self.device)
        r = spec.recipe
        # fused AdamW: one kernel per step on CUDA, and the fastest path on CPU too
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, r.weight_decay),
            lr=r.peak_lr(self.spec.model.d_model),
            betas=(r.beta1, r.beta2),
            fused=True,
        )
        self.params = list(self.model.parameters())
        self.forward, self.autocast = _accelerate(self.model, self.device, r.compile)
        self.source = make_source(spec.data, spec.seed)
        self.mlm = spec.model.objective == "mlm"
        self.task = make_task(spec, self.source, self.device)  # prefix, span: their own batches
        self.evaluator = Evaluator(spec, self.source, self.device, self.task)
        self.recovery = Recovery(spec, checkpoint_dir)
        self.trunk = Trunk(
            self,
            self.recovery,
            trunk_dir,
            wsd=r.schedule == "wsd",
            cooldown_start_step=plan.cooldown_start_step,
            total_steps=plan.total_steps,
            tokens_per_step=plan.tokens_per_step,
        )
        self.meter = Meter(self.device)

    # ---------------------------------------------------------------- helpers

    @property
    def tokens(self) -> int:
        return self.progress.step * self.plan.tokens_per_step

    def lr(self, step: int) -> float:
        r, p = self.spec.recipe, self.plan
        return lr_at(
            (step + 1) * p.tokens_per_step,
            schedule=r.schedule,
            total=p.total_steps * p.tokens_per_step,
            warmup=p.warmup_tokens,
            peak=r.peak_lr(self.spec.model.d_model),
            min_ratio=r.min_lr_ratio,
            cooldown_start=p.cooldown_start_step * p.tokens_per_step,
        )

    def run_params(self) -> dict[str, Any]:
        """Params the trainer adds (the orchestrator logs the point's identity and counts)."""
        counts = count_params(self.spec.model)
        out: dict[str, Any] = {
            "n_params_embedding": counts.embedding,
            "n_params_active_nonembedding": counts.active_nonembedding,
            "flops_per_token": f"{self.fpt:.6e}",
            "tokens_per_step": self.plan.tokens_per_step,
            "total_steps": self.plan.total_steps,
            "warmup_tokens_used": self.plan.warmup_tokens,
            "val_tokens_used": self.evaluator.val_tokens,
            **self.evaluator.length_params(),
        }
        out.update(self.source.params())
        return out

    # ---------------------------------------------------------------- checkpoints

    def save(self, path: Path, sink: MetricSink, **more: Any) -> None:
        """A checkpoint of the run's state (the own one keeps the one it replaces)."""
        m = self.meter
        self.progress.loss_sum = float(m.loss_sum)
        extra = {
            "run_key": self.spec.key(),
            "trunk_key": self.spec.trunk_key(),
            "run_id": sink.run_id,
            **self.progress.as_extra(),
            "moe_counts": None if m.moe_counts is None else m.moe_counts.cpu().tolist(),
            "moe_aux_sum": float(m.moe_aux),
            "wall_s": self.progress.wall_s + time.perf_counter() - self.started,
            **more,
        }
        ckpt.save(
            path,
            model=self.model,
            optimizer=self.optimizer,
            step=self.progress.step,
            tokens=self.tokens,
            position=self.progress.step * self.spec.recipe.batch_size,
            extra=extra,
            keep_previous=path == self.recovery.own,
        )

    def restore(self, payload: dict[str, Any], *, own: bool) -> None:
        """Continue from a checkpoint: the run's own (with its accumulators), or its trunk's
        (whose accumulators belong to the trunk's log interval: a fresh one starts)."""
        ckpt.restore(payload, model=self.model, optimizer=self.optimizer)
        self.progress.step = payload["step"]
        extra = payload["extra"]
        if own:
            p = self.progress
            p.loss_sum, p.loss_n = extra["loss_sum"], extra["loss_n"]
            p.train_loss, p.val_loss, p.wall_s = extra["train_loss"], extra["val_loss"], extra["wall_s"]
            if extra.get("moe_counts") is not None:
                self.meter.moe_counts = torch.tensor(extra["moe_counts"], device=self.device)
                self.meter.moe_aux = torch.tensor(extra["moe_aux_sum"], device=self.device)
        self.meter.loss_sum = torch.tensor(self.progress.loss_sum, device=self.device)
        self.resumed_from_tokens = self.tokens
        if not own:
            self.progress.loss_n = 0
            self.meter.loss_sum.zero_()

    def checkpointed(self) -> None:
        self._last_ckpt_time = time.monotonic()

    def _checkpoint_due(self, step: int, evaluated: bool) -> bool:
        if self.plan.ckpt_every:
            return step % self.plan.ckpt_every == 0
        return evaluated and time.monotonic() - self._last_ckpt_time >= MIN_AUTO_CHECKPOINT_S

    # ---------------------------------------------------------------- the step loop

    def _train_step(self) -> None:
        p, B = self.progress, self.spec.recipe.batch_size
        lr = self.lr(p.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._batch(p.step, B)  # the forward's arguments: (inputs, targets) for clm, mlm
        with self.autocast:
            _, loss, aux = self.forward(*batch)
            total = loss + aux["reg"] if aux else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.spec.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.recipe.grad_clip, foreach=True)
        self.optimizer.step()
        self.meter.add(loss, aux, self.plan.tokens_per_step)
        p.loss_n += 1
        p.step += 1

    def _batch(self, step: int, B: int) -> tuple[torch.Tensor, ...]:
        """(inputs, targets) of one step: next tokens (clm) or the masked positions (mlm);
        prefix and span: their task's forward arguments."""
        if self.task is not None:
            return self.task.train_batch(step, B)
        batch = self.source.batch(step * B, B)  # (B, T+1)
        if self.mlm:  # bidirectional: predict the corrupted positions of the window
            batch = np.stack(
                mlm_corrupt(batch[:, :-1], self.spec.model.vocab_size, mlm_train_rng(self.spec.seed, step))
            )  # (2, B, T)
            both = torch.from_numpy(batch).to(self.device, non_blocking=True)
            return both[0], both[1]
        both = torch.from_numpy(batch).to(self.device, non_blocking=True)
        return both[:, :-1], both[:, 1:]

    def _train_metrics(self) -> dict[str, float]:
        """Mean train loss of the interval (one host sync), rates; raises _Diverged."""
        p = self.progress
        loss = float(self.meter.loss_sum) / max(p.loss_n, 1)  # the one sync per log interval
        if not math.isfinite(loss) or loss > self.plan.divergence_loss:
            raise _Diverged(
                f"train loss {loss:.4g} at step {p.step} (tokens {self.tokens}) is "
                f"{'not finite' if not math.isfinite(loss) else 'above the bound'} "
                f"{self.plan.divergence_loss:.4g}"
            )
        metrics = {
            "train_loss": loss,
            "lr": self.lr(p.step - 1),
            "tokens": float(self.tokens),
            "epochs": self.source.epochs(p.step * self.spec.recipe.batch_size),
        }
        metrics.update(self.meter.close(p, self.fpt, self.peak))
        p.train_loss = loss
        return metrics

    def _eval_metrics(self, final: bool) -> dict[str, float]:
        """val_loss (and, at the end, the losses at longer lengths); not counted as train time."""
        with self.meter.excluded_time():
            self.progress.val_loss = self.evaluator.loss(self.model, self.autocast)
            metrics = {"val_loss": self.progress.val_loss}
            if self.spec.model.objective == "clm":  # corpus: val_bpb (bits per byte of the held-out text)
                metrics.update(self.source.eval_metrics(self.progress.val_loss))
            if final and self.evaluator.lengths:
                metrics.update(self.evaluator.length_losses(self.model, self.autocast))
        return metrics

    def run_phase(
        self, sink: MetricSink, end_step: int, save: Callable[[], None], guard: tuple[MetricSink, ...] = ()
    ) -> None:
        """Steps up to end_step, logged to `sink` and checkpointed by `save` (never while `sink`
        or a `guard` sink holds undelivered metrics): raises _Diverged/_Stopped."""
        plan = self.plan
        while self.progress.step < end_step:
            self._train_step()
            step = self.progress.step
            final = step == plan.total_steps
            metrics: dict[str, float] = {}
            if step % plan.log_every == 0 or step == end_step:
                metrics.update(self._train_metrics())
            if plan.evaluates_at(step):
                metrics.update(self._eval_metrics(final))
            if metrics:
                sink.log_metrics(metrics, step=self.tokens)
            if final:
                break
            stop = bool(metrics) and self.should_stop is not None and self.should_stop()
            if stop or self._checkpoint_due(step, evaluated="val_loss" in metrics):
                with self.meter.excluded_time():
                    sink.flush()
                    # a checkpoint must never cover metrics the store has not received (a resume
                    # would skip them): while the store is unreachable, keep the older checkpoint
                    if not any(x.pending for x in (sink, *guard)):
                        save()
                        self.checkpointed()
            if stop:
                raise _Stopped(f"stopped on request at step {step} (tokens {self.tokens})")

    # ---------------------------------------------------------------- orchestration

    def execute(self, sink: MetricSink, trunk_sink: MetricSink | None) -> RunResult:
        own = self.recovery.own
        payload = self.recovery.load_own()
        if payload is not None:
            self.restore(payload, own=True)
        fresh_branch = payload is None
        if payload is not None and payload["extra"].get("finished"):
            return self._result("finished", ALREADY_FINISHED)
        if fresh_branch and self.trunk.shared:
            self.trunk.enter(trunk_sink or sink, self.checkpoint_dir)
        if fresh_branch:
            sink.log_params(self.run_params())
        sink.set_tags(
            {
                DEVICE: _device_name(self.device),
                RESUMED_FROM_TOKENS: str(self.resumed_from_tokens),
                **self.recovery.report(not fresh_branch, self.tokens),
            }
        )

        status: RunStatus = "finished"
        message = ""
        trunk = trunk_sink if trunk_sink is not None and trunk_sink is not sink else None
        try:
            if self.trunk.shared and self.progress.step < self.plan.cooldown_start_step:
                self.trunk.stable_phase(trunk or sink)
            guard = (trunk,) if trunk is not None else ()
            self.run_phase(sink, self.plan.total_steps, lambda: self.save(own, sink), guard)
        except _Diverged as e:
            status, message = "diverged", str(e)
        except _Stopped as e:
            return self._result("stopped", str(e))
        for s in (trunk, sink):
            if s is not None:
                deliver(s)
        if status == "finished":
            self.save(own, sink, finished=True)
        return self._result(status, message)

    def _result(self, status: RunStatus, message: str) -> RunResult:
        p = self.progress
        info: dict[str, Any] = {
            "tokens_requested": self.spec.tokens,
            "tokens_per_step": self.plan.tokens_per_step,
        }
        if self.recovery.notes:
            info["checkpoint_recovery"] = "; ".join(self.recovery.notes)
        if p.train_s > 0:
            info["tokens_per_s"] = p.tokens_trained / p.train_s
        return RunResult(
            status=status,
            message=message,
            val_loss=p.val_loss,
            train_loss=p.train_loss,
            tokens=self.tokens,
            flops=self.fpt * self.tokens,
            steps=p.step,
            wall_time_s=p.wall_s + (time.perf_counter() - self.started),
            device=_device_name(self.device),
            epochs=self.source.epochs(p.step * self.spec.recipe.batch_size),
            resumed_from_tokens=self.resumed_from_tokens,
            extra=info,
        )


# --------------------------------------------------------------------------- entry point


def _pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SpecError("train.device", "cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"


def _accelerate(
    model: torch.nn.Module, device: torch.device, compile: bool
) -> tuple[Callable[..., Any], Any]:
    """(forward, autocast) on the device: on CUDA, TF32 matmuls, bf16 autocast and, when the
    recipe asks, torch.compile; on the CPU, the plain model in fp32."""
    if device.type != "cuda":
        return model, nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    forward: Callable[..., Any] = torch.compile(model) if compile else model
    return forward, torch.autocast("cuda", dtype=torch.bfloat16)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train(
    spec: RunSpec,
    sink: MetricSink,
    *,
    checkpoint_dir: str | os.PathLike,
    trunk_dir: str | os.PathLike | None = None,
    trunk_sink: MetricSink | None = None,
    num_threads: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train one run to `spec.tokens` (whole steps), resuming from `checkpoint_dir/ckpt.pt`.

    num_threads: torch CPU threads for this run (its CPU share; oversubscribing is 4-70× slower).
    Never raises for a run's own failure: returns status failed with the traceback and `error`.
    """
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    run: _Run | None = None
    try:
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        run = _Run(spec, Path(checkpoint_dir), Path(trunk_dir) if trunk_dir else None, should_stop)
        return run.execute(sink, trunk_sink)
    except Exception as e:  # noqa: BLE001 - the status carries it
        message = traceback.format_exc()
        if run is not None:
            result = run._result("failed", message)
        else:
            result = RunResult(status="failed", message=message, wall_time_s=time.perf_counter() - started)
        return result.failed_with(e)
    finally:
        torch.set_num_threads(previous_threads)
