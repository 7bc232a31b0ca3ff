"""One logging set-up in the CLI: --log-level / SCALELAB_LOG_LEVEL, scalelab's loggers at INFO
by default, libraries at WARNING; a bad level is bad input (exit 2) naming the flag or variable."""

from __future__ import annotations

import logging

import pytest

from orchestrator.cli import configure_logging, main


@pytest.fixture
def levels():
    names = ("", "orchestrator", "trainer", "analysis", "mlflow", "alembic", "ray", "urllib3", "matplotlib")
    saved = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def test_default_and_explicit_levels(monkeypatch, levels):
    monkeypatch.delenv("SCALELAB_LOG_LEVEL", raising=False)
    configure_logging(None)
    assert logging.getLogger("orchestrator.run.scheduler").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("mlflow.store").getEffectiveLevel() == logging.WARNING
    monkeypatch.setenv("SCALELAB_LOG_LEVEL", "debug")
    configure_logging(None)
    assert logging.getLogger("trainer.sinks").getEffectiveLevel() == logging.DEBUG
    configure_logging("ERROR")  # the flag wins over the variable
    assert logging.getLogger("analysis.data").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("ray").getEffectiveLevel() == logging.ERROR


def test_bad_level_is_bad_input(tiny_study, monkeypatch, capsys, levels):
    path = tiny_study("logs")
    assert main(["plan", str(path), "--log-level", "loud"]) == 2
    assert "--log-level" in capsys.readouterr().err
    monkeypatch.setenv("SCALELAB_LOG_LEVEL", "loud")
    assert main(["plan", str(path)]) == 2
    assert "SCALELAB_LOG_LEVEL" in capsys.readouterr().err
    monkeypatch.delenv("SCALELAB_LOG_LEVEL")
    assert main(["--log-level", "warning", "plan", str(path), "--json"]) == 0
