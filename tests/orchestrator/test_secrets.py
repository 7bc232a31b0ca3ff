"""Database and server passwords never reach the terminal, the ledger or MLflow (issue 9)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from orchestrator.cli import main
from orchestrator.store.ledger import Ledger
from orchestrator.store.tracking import check_tracking_uri
from orchestrator.study.config import StudyError
from tests.conftest import TINY_STUDY
from trainer.redact import redact_text
from trainer.sinks import MlflowSink, MlflowSinkError

PW = "S3CRETPW"


@pytest.mark.parametrize(
    "text",
    [
        f"could not connect to postgresql://postgres:{PW}@10.0.0.1:5432/mlflow: refused",
        f"'mysql+pymysql://u:{PW}@h/db'",
        f"http://alice:{PW}@mlflow:5000/api",
        f"(psycopg.OperationalError) postgresql+psycopg://scalelab:{PW}@postgres:5432/scalelab\n",
    ],
)
def test_redact_text_masks_every_uri_password(text):
    out = redact_text(text)
    assert PW not in out and ":***@" in out


def test_redact_text_leaves_other_text_alone():
    for text in ("sqlite:////tmp/x.db", "http://127.0.0.1:5000", "a: b@c", "time 12:30@home"):
        assert redact_text(text) == text


def test_sink_error_during_an_outage_masks_the_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    sink = MlflowSink(f"http://postgres:{PW}@127.0.0.1:9/", "0" * 32)
    sink.log_metrics({"val_loss": 1.0}, step=1)
    with pytest.raises(MlflowSinkError) as e:
        sink.close(timeout_s=1)
    assert PW not in str(e.value) and "127.0.0.1:9" in str(e.value)


def test_ledger_error_and_status_json_mask_the_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="secrets", schedule="cosine"))
    assert main(["plan", "s.yaml", "--json", "--home", str(tmp_path / "store")]) == 0
    key = json.loads(capsys.readouterr().out)[0]["run_key"]
    (tmp_path / "store").mkdir()
    ledger = Ledger(f"sqlite:///{tmp_path / 'store' / 'ledger.db'}")
    ledger.ensure(
        "secrets", [{"run_key": key, "study": "secrets", "kind": "point", "tokens": 1, "flops": 1.0}]
    )
    ledger.update(
        "secrets", key, state="failed", error=f"MlflowException: postgresql://postgres:{PW}@db/x down"
    )
    assert PW not in ledger.get("secrets", key).error
    ledger.dispose()
    assert main(["status", "s.yaml", "--json", "--home", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert PW not in out and "postgres:***@db" in out


class _Health(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.seen.append(self.headers.get("Authorization"))
        ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(f"alice:{PW}".encode()).decode()
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"denied")

    def log_message(self, *args):
        pass


def test_http_precheck_accepts_user_and_password_and_never_prints_it():
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        check_tracking_uri(f"http://alice:{PW}@127.0.0.1:{port}")  # basic auth, as MLflow
        assert _Health.seen[-1] is not None
        with pytest.raises(StudyError) as e:
            check_tracking_uri(f"http://alice:wrong{PW}@127.0.0.1:{port}")
        assert PW not in str(e.value) and "401" in str(e.value)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(StudyError) as e:
        check_tracking_uri(f"http://alice:{PW}@127.0.0.1:9")
    assert PW not in str(e.value) and "alice:***@127.0.0.1:9" in str(e.value)


def test_status_on_an_unreadable_ledger_is_an_error(tmp_path, monkeypatch, capsys):
    """Not every run shown pending: exit 1 with the reason."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(TINY_STUDY.format(name="unreadable", schedule="cosine"))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "ledger.db").write_bytes(b"this is not a database\n" * 100)
    assert main(["status", "s.yaml", "--home", str(tmp_path / "store")]) == 1
    captured = capsys.readouterr()
    assert "pending" not in captured.out
    assert "cannot read the ledger" in captured.err and "not a database" in captured.err
    # a store that simply has no ledger yet still shows the plan
    assert main(["status", "s.yaml", "--home", str(tmp_path / "fresh")]) == 0
    assert "pending=8" in capsys.readouterr().out
