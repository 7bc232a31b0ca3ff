"""scalelab trainer: one training run (a dense or MoE GPT, BERT-style or prefix LM decoder, or a
T5-style encoder-decoder) with exact compute accounting.

Importing the package (or `trainer.spec`, `trainer.accounting`) does not import torch: `train`
and the model are loaded on first use, so the orchestrator's planning stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .accounting import (
    ParamCounts,
    count_params,
    flops_per_example,
    flops_per_token,
    shape_for_params,
    training_flops,
)
from .sinks import InMemorySink, MetricSink, MlflowSink, MlflowSinkError
from .spec import DataSpec, ModelSpec, RecipeSpec, RunError, RunResult, RunSpec, RunStatus, SpecError

if TYPE_CHECKING:  # for type checkers only: at run time these load lazily (torch)
    from .data import true_entropy
    from .encdec import build_model
    from .model import GPT
    from .recovery import checkpoint_info
    from .train import train

__all__ = [
    "ModelSpec",
    "DataSpec",
    "RecipeSpec",
    "RunSpec",
    "RunResult",
    "RunError",
    "RunStatus",
    "SpecError",
    "train",
    "MetricSink",
    "InMemorySink",
    "MlflowSink",
    "MlflowSinkError",
    "count_params",
    "ParamCounts",
    "flops_per_token",
    "flops_per_example",
    "training_flops",
    "shape_for_params",
    "true_entropy",
    "checkpoint_info",
    "GPT",
    "build_model",
]

_LAZY = {
    "train": ("train", "train"),
    "checkpoint_info": ("recovery", "checkpoint_info"),
    "true_entropy": ("data", "true_entropy"),
    "GPT": ("model", "GPT"),
    "build_model": ("encdec", "build_model"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
