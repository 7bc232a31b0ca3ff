"""The one training entry point: `train(spec, sink, *, checkpoint_dir, ...) -> RunResult`.

A run is a sequence of optimizer steps over batches that are pure functions of the position in
the data stream, so a run resumed from a checkpoint is the same computation as an uninterrupted
one. Metric step = tokens seen. Every ~1% of the run the trainer logs the mean training loss
(one host sync per log interval, which is also when divergence is checked); at every evaluation
interval and at the end it logs the held-out loss. Before every checkpoint it flushes the sink,
so whatever a checkpoint covers is durable and whatever came after is recomputed on resume.

wsd: the stable phase (up to the branch's cooldown start S) is shared by all branches of one
trunk. Its checkpoints live in `trunk_dir`: `stable_<tokens>.pt` (periodic, only the newest
kept) and `branch_<tokens>.pt` (the state at each cooldown start, kept). A branch continues
from the newest trunk checkpoint at or before its S, logs the stable steps to `trunk_sink`,
saves `branch_<S>.pt`, then cools down to its budget in `checkpoint_dir`, logging to `sink`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
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
from .model import GPT, param_groups
from .objectives import eval_span, long_segments, mlm_corrupt, mlm_train_rng, mlm_val_rng, windows_at
from .schedule import lr_at
from .sinks import MetricSink
from .spec import ALREADY_FINISHED, RunResult, RunSpec, SpecError

_log = logging.getLogger("scalelab.trainer")
CKPT_NAME = "ckpt.pt"
LOG_POINTS = 100  # train metrics about every 1% of the run
DEFAULT_EVALS = 10  # eval_interval_tokens = 0: about 10 evaluations per run
LOG_EVALS = 7  # eval_schedule = log: evaluations at D/2^k, k = 0..LOG_EVALS-1
MIN_AUTO_CHECKPOINT_S = 30.0  # checkpoint_interval_tokens = 0: at evals, at most this often
EVAL_BATCH_TOKENS = 1 << 15  # tokens per evaluation forward pass

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


def checkpoint_info(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """(step, tokens, run_id, run_key, finished) of the run checkpoint in a directory, or None:
    lets a caller find the MLflow run id to resume before it builds the sink."""
    path = Path(checkpoint_dir) / CKPT_NAME
    if not path.exists():
        return None
    p = ckpt.load(path)
    extra = p["extra"]
    return {
        "step": p["step"],
        "tokens": p["tokens"],
        "run_id": extra.get("run_id"),
        "run_key": extra.get("run_key"),
        "finished": bool(extra.get("finished")),
        "val_loss": extra.get("val_loss"),
        "train_loss": extra.get("train_loss"),
    }


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


@dataclass
class _Phase:
    """A stretch of steps logged to one sink and checkpointed by one function."""

    sink: MetricSink
    end_step: int
    save: Callable[[], None]
    guard: tuple[MetricSink, ...] = ()  # other sinks whose undelivered metrics also block a checkpoint


# --------------------------------------------------------------------------- the run


class _Run:
    def __init__(
        self,
        spec: RunSpec,
        checkpoint_dir: Path,
        trunk_dir: Path | None,
        should_stop: Callable[[], bool] | None,
    ):
        self.spec = spec
        self.plan = _Plan.of(spec)
        self.checkpoint_dir = checkpoint_dir
        self.trunk_dir = trunk_dir
        self.should_stop = should_stop
        self.device = _pick_device(spec.recipe.device)
        self.progress = _Progress()
        self.resumed_from_tokens = 0
        self.recovery: list[str] = []  # corrupt checkpoints set aside, for the log and tags
        self.started = time.perf_counter()
        self.fpt = flops_per_token(spec.model, "chinchilla")
        self.peak = peak_flops(self.device)
        self._last_ckpt_time = time.monotonic()

        _seed_everything(spec.seed)
        self.model = GPT(spec.model).to(self.device)
        r = spec.recipe
        # fused AdamW: one kernel per step on CUDA, and the fastest path on CPU too
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, r.weight_decay),
            lr=r.peak_lr(self.spec.model.d_model),
            betas=(r.beta1, r.beta2),
            fused=True,
        )
        self.params = list(self.model.parameters())
        self.forward: Callable[..., Any] = self.model
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            if r.compile:
                self.forward = torch.compile(self.model)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        )
        self.source = make_source(spec.data, spec.seed)
        self.val = torch.from_numpy(self.source.val).to(self.device)
        self.mlm = spec.model.objective == "mlm"
        if self.mlm:  # one fixed mask per held-out sequence, the same at every evaluation
            inputs, targets = mlm_corrupt(
                self.source.val[:, :-1], spec.model.vocab_size, mlm_val_rng(spec.data)
            )
            self.val_mlm = (
                torch.from_numpy(inputs).to(self.device),
                torch.from_numpy(targets).to(self.device),
            )
        self.lengths = self._eval_lengths()
        self.segments = (
            long_segments(self.source, spec.data, eval_span(tuple(self.lengths))) if self.lengths else None
        )
        self._loss_acc = torch.zeros((), device=self.device)
        self._count_acc: torch.Tensor | None = None
        self._aux_acc = torch.zeros((), device=self.device)
        self._interval_start = time.perf_counter()
        self._interval_tokens = 0
        self._interval_excluded = 0.0

    # ---------------------------------------------------------------- helpers

    def _eval_lengths(self) -> list[int]:
        """The train.eval_lengths this run can measure: causal runs only, and learned positions
        only at k = 1 (they cannot address positions past seq_len). Empty: none beyond val_loss."""
        ks = self.spec.recipe.eval_lengths
        if self.mlm or ks == (1,):
            return []
        if self.spec.model.pos == "learned":
            return [1]
        return sorted(ks)

    def length_params(self) -> dict[str, str]:
        """`eval_len<k>x`: measured, or n/a (with why in `eval_len_na_reason`)."""
        out = {
            f"eval_len{k}x": ("measured" if k in self.lengths else "n/a")
            for k in self.spec.recipe.eval_lengths
            if k > 1
        }
        if any(v == "n/a" for v in out.values()):
            out["eval_len_na_reason"] = (
                "objective mlm: length extrapolation is measured for causal runs"
                if self.mlm
                else "pos learned: no embedding for positions past seq_len"
            )
        return out

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
            "val_tokens_used": int(self.val.shape[0] * (self.val.shape[1] - 1)),
            **self.length_params(),
        }
        out.update(self.source.params())
        return out

    # ---------------------------------------------------------------- checkpoints

    def _extra(self, sink: MetricSink, **more: Any) -> dict[str, Any]:
        run_id = sink.run_id
        self.progress.loss_sum = float(self._loss_acc)
        counts = None if self._count_acc is None else self._count_acc.cpu().tolist()
        return {
            "run_key": self.spec.key(),
            "trunk_key": self.spec.trunk_key(),
            "run_id": run_id,
            **self.progress.as_extra(),
            "moe_counts": counts,
            "moe_aux_sum": float(self._aux_acc),
            "wall_s": self.progress.wall_s + time.perf_counter() - self.started,
            **more,
        }

    def _save(self, path: Path, sink: MetricSink, **more: Any) -> None:
        ckpt.save(
            path,
            model=self.model,
            optimizer=self.optimizer,
            step=self.progress.step,
            tokens=self.tokens,
            position=self.progress.step * self.spec.recipe.batch_size,
            extra=self._extra(sink, **more),
            keep_previous=path == self._own_ckpt(),
        )

    def _set_aside(self, e: ckpt.CorruptCheckpoint) -> None:
        moved = ckpt.set_aside(e.path)
        self.recovery.append(f"checkpoint {e.path} is corrupt ({e.reason}); set aside as {moved}")

    def _resume_own(self) -> dict[str, Any] | None:
        """Restore the run's newest loadable checkpoint (ckpt.pt, else the previous one kept
        beside it); a corrupt one is set aside, never fatal. None: nothing to resume."""
        for path in (self._own_ckpt(), ckpt.previous_path(self._own_ckpt())):
            if path.exists():
                try:
                    return self._restore(path, own=True)
                except ckpt.CorruptCheckpoint as e:
                    self._set_aside(e)
        return None

    def _report_recovery(self, resumed: bool) -> dict[str, str]:
        """Say what happened to corrupt checkpoints: a log line and an MLflow tag."""
        if not self.recovery:
            return {}
        how = (
            f"resumed from an earlier checkpoint at {self.tokens} tokens"
            if resumed
            else f"restarted the branch from its trunk at {self.tokens} tokens"
            if self.tokens
            else "restarted the run from scratch"
        )
        note = "; ".join(self.recovery) + f"; {how}"
        _log.warning("%s", note)
        return {"scalelab.checkpoint_recovery": note[-4000:]}

    def _restore(self, path: Path, *, own: bool) -> dict[str, Any]:
        payload = ckpt.load(path)  # on CPU: RNG states must stay CPU tensors
        extra = payload["extra"]
        key = "run_key" if own else "trunk_key"
        expected = self.spec.key() if own else self.spec.trunk_key()
        legacy = self.spec.legacy_key() if own else self.spec.legacy_trunk_key()
        if extra.get(key) not in (expected, legacy):  # legacy: keys of older stores
            raise RuntimeError(
                f"{path} belongs to {key} {extra.get(key)}, not {expected}; "
                "use a fresh checkpoint_dir for a changed spec"
            )
        ckpt.restore(payload, model=self.model, optimizer=self.optimizer)
        self.progress.step = payload["step"]
        if own:
            self.progress.loss_sum = extra["loss_sum"]
            self.progress.loss_n = extra["loss_n"]
            self.progress.train_loss = extra["train_loss"]
            self.progress.val_loss = extra["val_loss"]
            self.progress.wall_s = extra["wall_s"]
            if extra.get("moe_counts") is not None:
                self._count_acc = torch.tensor(extra["moe_counts"], device=self.device)
                self._aux_acc = torch.tensor(extra["moe_aux_sum"], device=self.device)
        self._loss_acc = torch.tensor(self.progress.loss_sum, device=self.device)
        self.resumed_from_tokens = self.tokens
        return extra

    def _own_ckpt(self) -> Path:
        return self.checkpoint_dir / CKPT_NAME

    def _trunk_ckpts(self) -> list[tuple[int, Path]]:
        if self.trunk_dir is None or not self.trunk_dir.exists():
            return []
        out = []
        for f in self.trunk_dir.iterdir():
            m = re.fullmatch(r"(stable|branch)_(\d+)\.pt", f.name)
            if m:
                out.append((int(m.group(2)), f))
        return sorted(out)

    def _save_trunk(self, sink: MetricSink, kind: str) -> None:
        assert self.trunk_dir is not None
        path = self.trunk_dir / f"{kind}_{self.tokens:015d}.pt"
        self._save(path, sink)
        if kind == "stable":  # keep only the newest periodic trunk checkpoint
            for _, f in self._trunk_ckpts():
                if f.name.startswith("stable_") and f != path:
                    f.unlink(missing_ok=True)

    # ---------------------------------------------------------------- the step loop

    def _train_step(self) -> None:
        p, B = self.progress, self.spec.recipe.batch_size
        lr = self.lr(p.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self._batch(p.step, B)  # (B, T) each
        with self.autocast:
            _, loss, aux = self.forward(x, y)
            total = loss + aux["reg"] if aux else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.spec.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.recipe.grad_clip, foreach=True)
        self.optimizer.step()
        self._loss_acc += loss.detach()
        p.loss_n += 1
        if aux:
            counts = aux["counts"]
            self._count_acc = counts if self._count_acc is None else self._count_acc + counts
            self._aux_acc += aux["aux"].detach()
        p.step += 1
        self._interval_tokens += self.plan.tokens_per_step

    def _batch(self, step: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of one step: next tokens (clm) or the masked positions (mlm)."""
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
        loss_sum = float(self._loss_acc)  # the one sync per log interval
        loss = loss_sum / max(p.loss_n, 1)
        if not math.isfinite(loss) or loss > self.plan.divergence_loss:
            raise _Diverged(
                f"train loss {loss:.4g} at step {p.step} (tokens {self.tokens}) is "
                f"{'not finite' if not math.isfinite(loss) else 'above the bound'} "
                f"{self.plan.divergence_loss:.4g}"
            )
        now = time.perf_counter()
        elapsed = now - self._interval_start - self._interval_excluded
        metrics = {
            "train_loss": loss,
            "lr": self.lr(p.step - 1),
            "tokens": float(self.tokens),
            "epochs": self.source.epochs(p.step * self.spec.recipe.batch_size),
        }
        if elapsed > 0 and self._interval_tokens:
            tps = self._interval_tokens / elapsed
            metrics["tokens_per_s"] = tps
            metrics["flops_per_s"] = tps * self.fpt
            if self.peak:
                metrics["mfu"] = tps * self.fpt / self.peak
            p.train_s += elapsed
            p.tokens_trained += self._interval_tokens
        if self._count_acc is not None:
            c = self._count_acc.float()  # (L_moe, E)
            metrics["expert_load_max_over_mean"] = float((c.max(1).values / c.mean(1)).max())
            metrics["moe_aux_loss"] = float(self._aux_acc) / max(p.loss_n, 1)
            self._count_acc = None
            self._aux_acc.zero_()
        p.train_loss = loss
        self._loss_acc.zero_()
        p.loss_sum, p.loss_n = 0.0, 0
        self._interval_start, self._interval_tokens, self._interval_excluded = now, 0, 0.0
        return metrics

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean held-out loss in nats/token over the fixed validation windows."""
        self.model.eval()
        n = self.val.shape[0]
        # bound the logits of one pass (tokens·vocab) for large vocabularies
        tokens = max(self.spec.data.seq_len, min(EVAL_BATCH_TOKENS, (1 << 26) // self.spec.model.vocab_size))
        per = max(1, tokens // self.spec.data.seq_len)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(0, n, per):
            if self.mlm:  # nats per predicted (selected) token
                x, y = self.val_mlm[0][i : i + per], self.val_mlm[1][i : i + per]
                weight = (y != -100).sum().double()
            else:
                w = self.val[i : i + per]
                x, y = w[:, :-1], w[:, 1:]
                weight = torch.tensor(float(w.shape[0]), device=self.device, dtype=torch.float64)
            with self.autocast:
                _, loss, _ = self.model(x, y)
            total += loss.double() * weight
            count += weight
        self.model.train()
        return float(total / count)

    @torch.no_grad()
    def evaluate_lengths(self) -> dict[str, float]:
        """Held-out loss at each measurable length on the same tokens: `val_loss_len<k>x` (mean
        over all positions of non-overlapping windows of k·seq_len) and `..._tail` (the last
        quarter of positions of each window, where extrapolation shows)."""
        self.model.eval()
        T, out = self.spec.data.seq_len, {}
        budget = max(T, min(EVAL_BATCH_TOKENS, (1 << 26) // self.spec.model.vocab_size))
        assert self.segments is not None, "eval_lengths set without long segments"
        for k in self.lengths:
            windows = torch.from_numpy(windows_at(self.segments, k, T)).to(self.device)
            L = k * T
            tail = L - max(1, L // 4)
            total = torch.zeros((), device=self.device, dtype=torch.float64)
            tail_total = torch.zeros_like(total)
            for i in range(0, windows.shape[0], max(1, budget // L)):
                w = windows[i : i + max(1, budget // L)]
                with self.autocast:
                    logits, _, _ = self.model(w[:, :-1])
                nll = torch.nn.functional.cross_entropy(
                    logits.float().transpose(1, 2), w[:, 1:], reduction="none"
                ).double()  # (B, L)
                total += nll.sum()
                tail_total += nll[:, tail:].sum()
            out[f"val_loss_len{k}x"] = float(total / windows[:, 1:].numel())
            out[f"val_loss_len{k}x_tail"] = float(tail_total / (windows.shape[0] * (L - tail)))
        self.model.train()
        return out

    def run_phase(self, phase: _Phase) -> None:
        """Steps up to phase.end_step: log, evaluate, checkpoint; raises _Diverged/_Stopped."""
        plan = self.plan
        while self.progress.step < phase.end_step:
            self._train_step()
            step = self.progress.step
            final = step == plan.total_steps
            metrics: dict[str, float] = {}
            if step % plan.log_every == 0 or step == phase.end_step:
                metrics.update(self._train_metrics())
            if (step in plan.eval_at if plan.eval_at else step % plan.eval_every == 0) or final:
                t = time.perf_counter()
                self.progress.val_loss = self.evaluate()
                metrics["val_loss"] = self.progress.val_loss
                if final and self.lengths:
                    metrics.update(self.evaluate_lengths())
                self._interval_excluded += time.perf_counter() - t
            if metrics:
                phase.sink.log_metrics(metrics, step=self.tokens)
            if final:
                break
            stop = bool(metrics) and self.should_stop is not None and self.should_stop()
            if stop or self._checkpoint_due(step, evaluated="val_loss" in metrics):
                t = time.perf_counter()
                phase.sink.flush()
                # a checkpoint must never cover metrics the store has not received (a resume
                # would skip them): while the store is unreachable, keep the older checkpoint
                if not any(x.pending for x in (phase.sink, *phase.guard)):
                    phase.save()
                    self._last_ckpt_time = time.monotonic()
                self._interval_excluded += time.perf_counter() - t
            if stop:
                raise _Stopped(f"stopped on request at step {step} (tokens {self.tokens})")

    def _checkpoint_due(self, step: int, evaluated: bool) -> bool:
        if self.plan.ckpt_every:
            return step % self.plan.ckpt_every == 0
        return evaluated and time.monotonic() - self._last_ckpt_time >= MIN_AUTO_CHECKPOINT_S

    # ---------------------------------------------------------------- orchestration

    def execute(self, sink: MetricSink, trunk_sink: MetricSink | None) -> RunResult:
        own = self._own_ckpt()
        extra = self._resume_own()
        fresh_branch = extra is None
        if extra is not None and extra.get("finished"):
            return self._result("finished", ALREADY_FINISHED, extra)
        if fresh_branch and self._shares_trunk:
            self._enter_trunk(trunk_sink or sink)
        if fresh_branch:
            sink.log_params(self.run_params())
        sink.set_tags(
            {
                "scalelab.device": self._device_name(),
                "scalelab.resumed_from_tokens": str(self.resumed_from_tokens),
                **self._report_recovery(not fresh_branch),
            }
        )

        status, message = "finished", ""
        trunk = trunk_sink if trunk_sink is not None and trunk_sink is not sink else None
        try:
            if self._shares_trunk and self.progress.step < self.plan.cooldown_start_step:
                self._stable_phase(trunk or sink)
            guard = (trunk,) if trunk is not None else ()
            self.run_phase(_Phase(sink, self.plan.total_steps, lambda: self._save(own, sink), guard))
        except _Diverged as e:
            status, message = "diverged", str(e)
        except _Stopped as e:
            return self._result("stopped", str(e))
        for s in (trunk, sink):
            if s is not None:
                _deliver(s)
        if status == "finished":
            self._save(own, sink, finished=True)
        return self._result(status, message)

    def _stable_phase(self, tsink: MetricSink) -> None:
        """wsd: train the shared trunk up to this branch's cooldown start, deliver its metrics
        (closing the trunk's sink: bounded wait, raises while the store is down), then save
        the branch checkpoint, never over metrics the store has not received."""
        self.run_phase(
            _Phase(tsink, self.plan.cooldown_start_step, lambda: self._save_trunk(tsink, "stable"))
        )
        _deliver(tsink)
        if not tsink.pending:
            self._save_trunk(tsink, "branch")
            self._last_ckpt_time = time.monotonic()

    @property
    def _shares_trunk(self) -> bool:
        """wsd with a cooldown of at least one step (a tiny run may round it away)."""
        return self.spec.recipe.schedule == "wsd" and self.plan.cooldown_start_step < self.plan.total_steps

    def _enter_trunk(self, trunk_sink: MetricSink) -> None:
        """wsd without a branch checkpoint: continue the newest trunk state at or before S."""
        if self.trunk_dir is None:
            self.trunk_dir = self.checkpoint_dir / "trunk"
        start = self.plan.cooldown_start_step * self.plan.tokens_per_step
        for _, f in reversed([(t, f) for t, f in self._trunk_ckpts() if t <= start]):
            try:
                self._restore(f, own=False)
            except ckpt.CorruptCheckpoint as e:
                self._set_aside(e)
                continue
            # trunk accumulators belong to the trunk's log interval: start a fresh one
            self.progress.loss_n = 0
            self._loss_acc.zero_()
            return
        trunk_sink.log_params(self.run_params())

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{torch.get_num_threads()}threads"

    def _result(self, status: str, message: str, extra: dict | None = None) -> RunResult:
        p = self.progress
        wall = p.wall_s + (time.perf_counter() - self.started)
        info: dict[str, Any] = {
            "tokens_requested": self.spec.tokens,
            "tokens_per_step": self.plan.tokens_per_step,
        }
        if self.recovery:
            info["checkpoint_recovery"] = "; ".join(self.recovery)
        if p.train_s > 0:
            info["tokens_per_s"] = p.tokens_trained / p.train_s
        done = self.tokens
        return RunResult(
            status=status,
            message=message,
            val_loss=p.val_loss,
            train_loss=p.train_loss,
            tokens=done,
            flops=self.fpt * done,
            steps=p.step,
            wall_time_s=wall,
            device=self._device_name(),
            epochs=self.source.epochs(p.step * self.spec.recipe.batch_size),
            resumed_from_tokens=self.resumed_from_tokens,
            extra=info,
        )


def _deliver(sink: MetricSink) -> None:
    """Flush, then close when something is still buffered: close waits (bounded) for the store
    and raises, so a run is never marked finished over undelivered metrics."""
    sink.flush()
    if sink.pending:
        sink.close()


# --------------------------------------------------------------------------- entry point


def _pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SpecError("train.device", "cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


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
    Never raises for a run's own failure: returns status failed with the traceback.
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
        result.extra["error_type"] = type(e).__name__
        result.extra["exception"] = e  # the caller classifies by type; not serialised
        if isinstance(e, OSError) and e.errno is not None:
            result.extra["error_errno"] = e.errno
        return result
    finally:
        torch.set_num_threads(previous_threads)
