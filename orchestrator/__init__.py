"""Run scaling-law studies on Ray with MLflow tracking: the study file, the plan, the ledger.

Public API:
    load_study(path) -> StudyConfig          validate a study YAML (StudyError names the key)
    expand(cfg) -> list[PlannedRun]          every (N, D, MoE, seed) point with its accounting
    Settings.resolve(...)                    where the store, ledger and checkpoints live
    run_study(cfg, settings, ...)            execute on Ray; resume, dedup, retry

The grid, the scheduler (SQLAlchemy, rich, Ray) load on first use, so `scalelab --help` and
`scalelab plan` start fast.
"""

from typing import Any

from .store.tracking import Settings
from .study.config import StudyConfig, StudyError, load_study, parse_study

_LAZY = {
    "PlannedRun": "study.grid",
    "expand": "study.grid",
    "StudyOutcome": "run.scheduler",
    "run_study": "run.scheduler",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "StudyConfig",
    "StudyError",
    "load_study",
    "parse_study",
    "PlannedRun",
    "expand",
    "StudyOutcome",
    "run_study",
    "Settings",
]
