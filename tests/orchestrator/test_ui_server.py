"""`scalelab ui`: MLflow's server in-process, quiet after the URLs, Ctrl-C stops it in one line,
and its index page gives the browser the "Model training" defaults (no GenAI mode, no
Assistant panel opening by itself)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from orchestrator.store.mlflow_view import ensure_view
from orchestrator.ui_server import UI_DEFAULTS, TrainingModeDefaults, defaults_script
from tests.reliability.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
PAGE = b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>"


def _call(app, path: str, method: str = "GET"):
    """Run one HTTP request through an ASGI app; (start message, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": path, "headers": []}, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0], body


async def _mlflow_like(scope, receive, send):
    """Answers as MLflow's Flask app does: the index page in two chunks, JSON elsewhere."""
    html = scope["path"] == "/"
    body = PAGE if html else b'{"runs": []}'
    kind = b"text/html; charset=utf-8" if html else b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body[:20], "more_body": True})
    await send({"type": "http.response.body", "body": body[20:], "more_body": False})


def test_the_index_page_carries_the_training_mode_defaults_and_nothing_else_changes():
    app = TrainingModeDefaults(_mlflow_like)
    start, body = _call(app, "/")
    assert body.startswith(b"<!doctype html><html><head>" + defaults_script()) and body.endswith(b"</html>")
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    script = defaults_script().decode()
    assert '"mlflow.workflowType_v1": "\\"machine_learning\\""' in script
    assert "getItem(k)===null" in script  # only where the browser has no value yet: a choice stays
    assert set(UI_DEFAULTS) == {"mlflow.workflowType_v1", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"}
    start, body = _call(app, "/ajax-api/2.0/mlflow/runs/search")
    assert body == b'{"runs": []}' and dict(start["headers"])[b"content-length"] == b"12"


def _store(home: Path) -> str:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = c.create_experiment("ui-study", artifact_location=(home / "artifacts").as_uri())
    ensure_view(c, exp)
    return exp


def test_ui_is_quiet_after_its_urls_and_ctrl_c_stops_it_cleanly(tmp_path):
    exp = _store(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--home", str(tmp_path), "--port", str(port)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith(f"MLflow UI on http://127.0.0.1:{port} for sqlite:///")
        assert f"ui-study: http://127.0.0.1:{port}/#/experiments/{exp}/runs?viewStateShareKey=" in lines[1]
        assert "fit results" in lines[2] and "viewStateShareKey=scalelab-fit-results" in lines[2]
        assert lines[3].startswith("ready after ")  # the server answers from here on
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert defaults_script() in r.read()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "MLflow UI stopped\n"
    assert time.monotonic() - t0 < 10
    assert err == "", err  # no MLflow/uvicorn log lines, no traceback
