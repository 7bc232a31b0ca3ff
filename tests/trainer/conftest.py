"""Tiny specs so the whole trainer suite runs in well under a minute on 2 cores."""

from __future__ import annotations

import pytest
import torch

from trainer.sinks import InMemorySink
from trainer.spec import DataSpec, ModelSpec, RecipeSpec, RunSpec


def tiny_spec(
    tokens: int = 8192,
    *,
    vocab: int = 16,
    seq_len: int = 16,
    batch: int = 8,
    n_layer: int = 1,
    d_model: int = 16,
    n_head: int = 2,
    order: int = 1,
    val_tokens: int = 1024,
    seed: int = 0,
    warmup_tokens: int = 0,
    model: dict | None = None,
    data: dict | None = None,
    **recipe,
) -> RunSpec:
    m = ModelSpec(
        n_layer=n_layer, d_model=d_model, n_head=n_head, vocab_size=vocab, seq_len=seq_len, **(model or {})
    )
    d = DataSpec(
        **{
            "source": "markov",
            "vocab_size": vocab,
            "seq_len": seq_len,
            "order": order,
            "val_tokens": val_tokens,
            **(data or {}),
        }
    )
    r = RecipeSpec(**{"batch_size": batch, "lr": 1e-2, **recipe})
    return RunSpec(model=m, data=d, recipe=r, tokens=tokens, seed=seed, warmup_tokens=warmup_tokens)


class SimulatedKill(BaseException):
    """Not an Exception: like SIGKILL, train() cannot catch it and report a status."""


class BufferedSink(InMemorySink):
    """Like an MLflow sink: metrics become durable only at flush(). `crash_at_step` raises from
    log_metrics (a simulated kill): whatever was not flushed is lost, as in a real crash."""

    def __init__(self, store: InMemorySink | None = None, crash_at_step: int | None = None):
        super().__init__()
        self.store = store if store is not None else InMemorySink()
        self.crash_at_step = crash_at_step
        self.buffer: list[tuple[str, float, int]] = []

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def log_params(self, params):
        self.store.log_params(params)

    def set_tags(self, tags):
        self.store.set_tags(tags)

    def log_metrics(self, metrics, step):
        if self.crash_at_step is not None and step >= self.crash_at_step:
            raise SimulatedKill(f"killed at step {step}")
        self.buffer.extend((k, float(v), int(step)) for k, v in metrics.items())

    def flush(self):
        self.store.metrics.extend(self.buffer)
        self.buffer = []
        self.store.flushes += 1


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
