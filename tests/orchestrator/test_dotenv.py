"""Settings and secrets may come from a `.env` file in the working directory; the environment wins."""

from __future__ import annotations

import os

from orchestrator.cli import main
from tests.conftest import TINY_STUDY


def test_dotenv_is_read_and_environment_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="dotenv", schedule="cosine"))
    (tmp_path / ".env").write_text(
        "MLFLOW_TRACKING_URI=postgresql://nobody@127.0.0.1:1/x\nSCALELAB_TEST_SECRET=from-dotenv\n"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored to unset afterwards
    monkeypatch.setenv("SCALELAB_TEST_SECRET", "from-environment")
    assert main(["run", "s.yaml", "--no-progress"]) == 2  # the .env's unreachable store is used
    assert "127.0.0.1:1" in capsys.readouterr().err
    assert os.environ["SCALELAB_TEST_SECRET"] == "from-environment"
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by the .env, not by monkeypatch


def test_dotenv_sets_only_documented_secrets(tmp_path, monkeypatch, capsys):
    """PYTHONPATH (a planted sitecustomize.py) and SCALELAB_CHECKPOINT_DIR in an untrusted .env
    have no effect; one warning names them."""
    from orchestrator.store.tracking import Settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="dotenv", schedule="cosine"))
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "sitecustomize.py").write_text("raise SystemExit('planted')\n")
    (tmp_path / ".env").write_text(
        f"PYTHONPATH={tmp_path / 'evil'}\n"
        f"SCALELAB_CHECKPOINT_DIR={tmp_path / 'outside'}\n"
        "RAY_AUTH_TOKEN=from-dotenv\n"
    )
    for k in ("PYTHONPATH", "SCALELAB_CHECKPOINT_DIR", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x")  # so monkeypatch restores it afterwards
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    assert main(["plan", "s.yaml", "--home", str(tmp_path / "store")]) == 0
    err = capsys.readouterr().err
    assert "PYTHONPATH" not in os.environ and "SCALELAB_CHECKPOINT_DIR" not in os.environ
    assert "ignored PYTHONPATH, SCALELAB_CHECKPOINT_DIR" in err and err.count("warning") == 1
    assert os.environ["RAY_AUTH_TOKEN"] == "from-dotenv"
    assert Settings.resolve(home=str(tmp_path / "store")).checkpoint_root == str(
        tmp_path / "store" / "checkpoints"
    )
