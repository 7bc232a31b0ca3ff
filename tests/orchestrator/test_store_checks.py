"""Bad stores fail fast: exit 2 within seconds, naming the flag and the fix (issue 9)."""

from __future__ import annotations

import os
import time

import pytest

from orchestrator.cli import main
from orchestrator.store.tracking import READ_HTTP_ENV, bounded_http_retries
from tests.conftest import PG_URL, TINY_STUDY, pg_available


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_STUDY.format(name="stores", schedule="cosine"))
    return path


def run(argv, capsys) -> tuple[int, str, float]:
    t0 = time.monotonic()
    rc = main(argv)
    return rc, capsys.readouterr().err, time.monotonic() - t0


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_rejected(study, tmp_path, capsys, uri):
    rc, err, _ = run(
        ["run", str(study), "--home", str(tmp_path / "h"), "--tracking-uri", uri, "--no-progress"], capsys
    )
    assert rc == 2 and "--tracking-uri" in err and "in-memory" in err
    assert not (tmp_path / "h").exists()


def test_http_ledger_is_rejected(study, tmp_path, capsys):
    rc, err, _ = run(
        [
            "run",
            str(study),
            "--home",
            str(tmp_path / "h"),
            "--ledger-uri",
            "http://127.0.0.1:5000",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2 and "--ledger-uri" in err and "SQL database" in err


def test_unsupported_ledger_database_is_named_without_mentioning_http(study, tmp_path, capsys):
    uri = "mssql+pyodbc://u:secret@127.0.0.1:1433/ledger"
    argv = ["run", str(study), "--home", str(tmp_path / "h"), "--ledger-uri", uri, "--no-progress"]
    rc, err, _ = run(argv, capsys)
    assert rc == 2 and "--ledger-uri" in err and "mssql+pyodbc:// is not supported" in err
    assert "http" not in err and "secret" not in err and "sqlite:///" in err


def test_mysql_without_a_driver_names_the_package(study, tmp_path, capsys):
    pytest.importorskip("sqlalchemy")
    try:
        import MySQLdb  # noqa: F401

        pytest.skip("a MySQL driver is installed here")
    except ImportError:
        pass
    rc, err, took = run(
        [
            "run",
            str(study),
            "--home",
            str(tmp_path / "h"),
            "--ledger-uri",
            "mysql://u:pw@127.0.0.1:1/ledger",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2 and "--ledger-uri" in err and "pymysql" in err and "pw" not in err
    assert took < 30


def test_missing_postgres_database_says_createdb(study, tmp_path, capsys):
    if not pg_available():
        pytest.skip(f"no PostgreSQL server answers at {PG_URL} (set SCALELAB_TEST_PG_URL)")
    uri = PG_URL.rsplit("/", 1)[0] + "/scalelab_no_such_db_hardening"
    rc, err, took = run(
        ["run", str(study), "--home", str(tmp_path / "h"), "--tracking-uri", uri, "--no-progress"], capsys
    )
    assert rc == 2 and "--tracking-uri" in err and "createdb" in err
    assert "scalelab_no_such_db_hardening" in err and took < 30


def test_deleted_experiment_says_how_to_restore(study, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    home = tmp_path / "h"
    home.mkdir()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("stores")
    c.delete_experiment(exp)
    rc, err, _ = run(["run", str(study), "--home", str(home), "--no-progress"], capsys)
    assert rc == 2 and "study" in err and "deleted" in err
    assert f"restore --experiment-id {exp}" in err and "new study name" in err


@pytest.mark.parametrize(
    "argv", [["fit", "--experiment", "x"], ["report", "--experiment", "x", "--out", "OUT"]]
)
def test_fit_and_report_on_an_unreachable_store_fail_fast(tmp_path, capsys, argv):
    argv = [a.replace("OUT", str(tmp_path / "r")) for a in argv]
    rc, err, took = run([*argv, "--tracking-uri", "http://alice:pw123@127.0.0.1:9"], capsys)
    assert rc == 2 and "--tracking-uri" in err and "no MLflow server answers" in err
    assert "pw123" not in err and took < 15


def test_bounded_http_retries_is_scoped(monkeypatch):
    for k in READ_HTTP_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's choice wins
    with bounded_http_retries():
        from mlflow import environment_variables as env

        assert env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2
        assert env.MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
