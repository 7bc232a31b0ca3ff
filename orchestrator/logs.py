"""The one logging set-up of the `scalelab` command: diagnostics on stderr, Ray's and MLflow's
INFO chatter kept off the terminal (user-facing output is printed, not logged)."""

from __future__ import annotations

import logging
import os
import sys

from .study.config import StudyError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
OWN_LOGGERS = ("orchestrator", "trainer", "analysis")
LIBRARY_LOGGERS = ("mlflow", "alembic", "ray", "urllib3", "matplotlib")


def configure_logging(level: str | None) -> None:
    """The one logging set-up: diagnostics go to stderr as `LEVEL logger: message`; scalelab's
    own loggers at `level` (--log-level, else $SCALELAB_LOG_LEVEL, else INFO), libraries at
    WARNING (or `level` when that is stricter). User-facing output (tables, fit text, progress)
    is printed, not logged."""
    flag = "--log-level" if level else "SCALELAB_LOG_LEVEL"
    name = (level or os.environ.get("SCALELAB_LOG_LEVEL") or "INFO").upper()
    if name not in LOG_LEVELS:
        raise StudyError(flag, f"{name!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    value = getattr(logging, name)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for library in ("", *LIBRARY_LOGGERS):  # the root, and those that set their own level
        logging.getLogger(library).setLevel(max(value, logging.WARNING))
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(value)


def quiet_logs() -> None:
    """The terminal shows scalelab's lines, not Ray's or MLflow's INFO logs (warnings stay).
    MLflow sets its own logger's level from MLFLOW_LOGGING_LEVEL when it is imported (later,
    possibly in a worker): the environment is the only way in; setdefault keeps a user's choice."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
