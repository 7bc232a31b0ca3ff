"""Settings and secrets may come from a `.env` file in the working directory; the environment wins.
A `.env` that selects a store needs --trust-env; its values are never interpolated."""

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
    assert main(["run", "s.yaml", "--no-progress", "--trust-env"]) == 2  # the .env's unreachable store
    err = capsys.readouterr().err
    assert ".env: MLFLOW_TRACKING_URI=postgresql://nobody@127.0.0.1:1/x (trusted: --trust-env)" in err
    assert "no database answers at 127.0.0.1:1" in err
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


def _untrusted_checkout(tmp_path, monkeypatch, dotenv: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="dotenv", schedule="cosine"))
    (tmp_path / ".env").write_text(dotenv)
    for k in ("MLFLOW_TRACKING_URI", "SCALELAB_LEDGER_URI", "SCALELAB_HOME"):
        monkeypatch.setenv(k, "x")  # so monkeypatch restores (unsets) them afterwards
        monkeypatch.delenv(k)


def test_a_dotenv_that_selects_a_store_needs_trust_env(tmp_path, monkeypatch, capsys):
    """Results never go to a store an untrusted .env names: exit 2 before anything is written,
    printing the store (password masked) and the flag."""
    _untrusted_checkout(
        tmp_path, monkeypatch, "MLFLOW_TRACKING_URI=postgresql://u:S3CRETPW@10.9.9.9:5432/x\nPGPASSWORD=pw\n"
    )
    assert main(["run", "s.yaml", "--home", str(tmp_path / "store"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--trust-env" in err and "MLFLOW_TRACKING_URI=postgresql://u:***@10.9.9.9:5432/x" in err
    assert "S3CRETPW" not in err
    assert "MLFLOW_TRACKING_URI" not in os.environ and "PGPASSWORD" not in os.environ
    assert not (tmp_path / "store").exists()
    # a flag that names the store makes the .env's store irrelevant: no trust needed, not used
    assert main(["plan", "s.yaml", "--tracking-uri", f"sqlite:///{tmp_path / 'own.db'}"]) == 0
    assert "MLFLOW_TRACKING_URI" not in os.environ
    os.environ.pop("PGPASSWORD", None)


def test_dotenv_values_are_never_interpolated(tmp_path, monkeypatch, capsys):
    """`${VAR}` stays literal: an exported secret never reaches a URL scalelab contacts or prints."""
    _untrusted_checkout(
        tmp_path,
        monkeypatch,
        "SCALELAB_LEDGER_URI=sqlite:///${SCALELAB_TEST_SECRET}/ledger.db\nRAY_AUTH_TOKEN=a${SCALELAB_TEST_SECRET}\n",
    )
    monkeypatch.setenv("SCALELAB_TEST_SECRET", "hunter2-exported")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    rc = main(["plan", "s.yaml", "--home", str(tmp_path / "store"), "--trust-env"])
    err = capsys.readouterr().err
    assert rc == 0 and "hunter2-exported" not in err
    assert os.environ["SCALELAB_LEDGER_URI"] == "sqlite:///${SCALELAB_TEST_SECRET}/ledger.db"
    assert os.environ["RAY_AUTH_TOKEN"] == "a${SCALELAB_TEST_SECRET}"
    assert "RAY_AUTH_TOKEN, SCALELAB_LEDGER_URI contain '${': .env values are taken literally" in err
    os.environ.pop("SCALELAB_LEDGER_URI", None)
