"""Batches of the objectives that feed a network more than (inputs, next tokens): the prefix
LM (`objectives.prefix_split`) and the encoder-decoder's span corruption (`spans`).

A task turns the data source's token windows into the arguments of the model's forward
(`model(*args)` returns (logits, loss, aux)): training batches are pure functions of (run
seed, step), held-out batches are corrupted once, at construction, so every evaluation scores
the same inputs and targets. Losses are nats per predicted target token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .objectives import prefix_split, prefix_train_rng, prefix_val_rng
from .spans import span_corrupt, span_train_rng, span_val_rng
from .spec import RunSpec


class Task:
    """Training and held-out batches of one objective, as tensors on `device`."""

    def __init__(self, spec: RunSpec, source: Any, device: torch.device):
        self.spec, self.source, self.device = spec, source, device
        self.val = tuple(self._tensor(a) for a in self.corrupt(source.val, self.val_rng()))

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    def corrupt(self, windows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """The forward's arguments (targets included) of (B, T+1) token windows."""
        raise NotImplementedError

    def val_rng(self) -> np.random.Generator:
        raise NotImplementedError

    def train_rng(self, step: int) -> np.random.Generator:
        raise NotImplementedError

    def train_batch(self, step: int, B: int) -> tuple[torch.Tensor, ...]:
        """The forward's arguments for optimizer step `step` (B windows of the stream)."""
        windows = self.source.batch(step * B, B)  # (B, T+1)
        return tuple(self._tensor(a) for a in self.corrupt(windows, self.train_rng(step)))

    def val_batch(self, start: int, size: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(forward arguments, predicted tokens as a float64 weight) of held-out rows."""
        args = tuple(t[start : start + size] for t in self.val)
        return args, (self.targets(args) != -100).sum().double()

    def targets(self, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError


class PrefixTask(Task):
    """forward(inputs, targets, prefix) of a decoder with a bidirectional prefix."""

    def corrupt(self, windows, rng):
        return prefix_split(windows, rng)

    def val_rng(self):
        return prefix_val_rng(self.spec.data)

    def train_rng(self, step):
        return prefix_train_rng(self.spec.seed, step)

    def targets(self, args):
        return args[1]


class SpanTask(Task):
    """forward(encoder input, decoder input, targets) of an encoder-decoder: the decoder reads
    the target from its first sentinel and predicts each next target token."""

    def corrupt(self, windows, rng):
        m = self.spec.model
        noise, spans = m.span_layout
        src, target = span_corrupt(windows[:, :-1], m.vocab_size, noise, spans, rng)
        return src, target[:, :-1], target[:, 1:]

    def val_rng(self):
        return span_val_rng(self.spec.data)

    def train_rng(self, step):
        return span_train_rng(self.spec.seed, step)

    def targets(self, args):
        return args[2]


def make_task(spec: RunSpec, source: Any, device: torch.device) -> Task | None:
    """The task of objectives prefix and span; None for clm and mlm (the trainer's own)."""
    kinds: dict[str, type[Task]] = {"prefix": PrefixTask, "span": SpanTask}
    cls = kinds.get(spec.model.objective)
    return cls(spec, source, device) if cls is not None else None
