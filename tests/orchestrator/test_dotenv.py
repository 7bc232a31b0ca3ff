"""Settings and secrets may come from a `.env` file in the working directory; the environment wins."""

from __future__ import annotations

import os

from orchestrator.cli import main
from tests.conftest import TINY_STUDY


def test_dotenv_is_read_and_environment_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="dotenv", schedule="cosine"))
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_URI=postgresql://nobody@127.0.0.1:1/x\n"
                                   "SCALELAB_TEST_SECRET=from-dotenv\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # restored to unset afterwards
    monkeypatch.setenv("SCALELAB_TEST_SECRET", "from-environment")
    assert main(["run", "s.yaml", "--no-progress"]) == 2     # the .env's unreachable store is used
    assert "127.0.0.1:1" in capsys.readouterr().err
    assert os.environ["SCALELAB_TEST_SECRET"] == "from-environment"
    os.environ.pop("MLFLOW_TRACKING_URI", None)                # set by the .env, not by monkeypatch
