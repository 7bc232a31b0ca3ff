"""The train-metric log interval of a run: the loss and MoE router sums kept on the device
(one host sync per interval), and the time and tokens trained in it (evaluation and checkpoint
time excluded), closed into rates every ~1% of the run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch


class Interval(Protocol):
    """The run's progress counters the interval closes into (train._Progress)."""

    loss_sum: float
    loss_n: int
    train_s: float
    tokens_trained: int


class Meter:
    """Train metrics of one log interval: the loss and MoE router sums kept on the device (one
    host sync per interval), and the time and tokens trained in it (evaluation and checkpoints
    excluded)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.moe_counts: torch.Tensor | None = None  # (L_moe, E) tokens per expert
        self.moe_aux = torch.zeros((), device=device)
        self.restart(time.perf_counter())

    def restart(self, now: float) -> None:
        self.start, self.tokens, self.excluded = now, 0, 0.0

    def add(self, loss: torch.Tensor, aux: dict[str, Any] | None, tokens: int) -> None:
        self.loss_sum += loss.detach()
        if aux:
            counts = aux["counts"]
            self.moe_counts = counts if self.moe_counts is None else self.moe_counts + counts
            self.moe_aux += aux["aux"].detach()
        self.tokens += tokens

    def close(self, p: Interval, flops_per_token: float, peak: float | None) -> dict[str, float]:
        """The interval's rates (and MoE load) as metrics; a new interval starts."""
        now = time.perf_counter()
        elapsed = now - self.start - self.excluded
        metrics: dict[str, float] = {}
        if elapsed > 0 and self.tokens:
            tps = self.tokens / elapsed
            metrics["tokens_per_s"] = tps
            metrics["flops_per_s"] = tps * flops_per_token
            if peak:
                metrics["mfu"] = tps * flops_per_token / peak
            p.train_s += elapsed
            p.tokens_trained += self.tokens
        if self.moe_counts is not None:
            c = self.moe_counts.float()  # (L_moe, E)
            metrics["expert_load_max_over_mean"] = float((c.max(1).values / c.mean(1)).max())
            metrics["moe_aux_loss"] = float(self.moe_aux) / max(p.loss_n, 1)
            self.moe_counts = None
            self.moe_aux.zero_()
        self.loss_sum.zero_()
        p.loss_sum, p.loss_n = 0.0, 0
        self.restart(now)
        return metrics

    @contextmanager
    def excluded_time(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t
