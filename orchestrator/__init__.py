"""Run scaling-law studies on Ray with MLflow tracking: the study file, the plan, the ledger.

Public API:
    load_study(path) -> StudyConfig          validate a study YAML (StudyError names the key)
    expand(cfg) -> list[PlannedRun]          every (N, D, MoE, seed) point with its accounting
    Settings.resolve(...)                    where the store, ledger and checkpoints live
    run_study(cfg, settings, ...)            execute on Ray; resume, dedup, retry
"""

from .config import StudyConfig, StudyError, load_study, parse_study
from .grid import PlannedRun, expand
from .scheduler import StudyOutcome, run_study
from .tracking import Settings

__all__ = ["StudyConfig", "StudyError", "load_study", "parse_study", "PlannedRun", "expand",
           "StudyOutcome", "run_study", "Settings"]
