"""Time to the MLflow UI's first page: `scalelab ui` against the `mlflow server` it used to exec.

Both serve the same SQLite store (one small experiment, created first) on a free loopback port
with scalelab's server settings (one worker, no job runner). The figure is seconds from the
command's start until GET / answers 200 (the page a browser opens first), and until the runs API
answers (the first table); the reference, `python -m mlflow server --workers 1`, runs in the
same process tree on the same store, alternating, `--repeat` times each; medians are printed,
and the ratio new / reference. After each `scalelab ui` run, SIGINT and the seconds until it
exits (Ctrl-C, its documented stop) are measured too.

    .venv/bin/python benchmarks/ui_first_page.py              # 3 x each
    .venv/bin/python benchmarks/ui_first_page.py --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_store(home: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from mlflow.tracking import MlflowClient

    from orchestrator.store.mlflow_view import ensure_view

    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("bench", artifact_location=(home / "artifacts").as_uri())
    ensure_view(c, exp)
    for i in range(8):
        run = c.create_run(exp, run_name=f"r{i}", tags={"scalelab.role": "point"})
        c.log_metric(run.info.run_id, "val_loss", 2.0 - i / 10)
    return uri


def answers(url: str, data: bytes | None = None) -> bool:
    try:
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def timed(cmd: list[str], port: int, env: dict) -> tuple[float, float, float | None]:
    """(s to GET /, s to the runs API, s from SIGINT to exit) for one server command."""
    base = f"http://127.0.0.1:{port}"
    search = json.dumps({"experiment_ids": ["1"], "max_results": 10}).encode()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not answers(base + "/"):
            if proc.poll() is not None or time.monotonic() - t0 > 300:
                raise RuntimeError(f"{cmd[:4]} did not serve a page")
            time.sleep(0.1)
        page = time.monotonic() - t0
        while not answers(base + "/ajax-api/2.0/mlflow/runs/search", search):
            time.sleep(0.1)
        api = time.monotonic() - t0
    finally:
        t1 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
            stop: float | None = time.monotonic() - t1
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stop = None
    return page, api, stop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from orchestrator.ui_server import SERVER_ENV

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        uri = make_store(home)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        new, ref = [], []
        for _ in range(args.repeat):
            port = free_port()
            ref.append(
                timed(
                    [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
                    + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
                    + ["--default-artifact-root", (home / "artifacts").as_uri()],
                    port,
                    {**env, **SERVER_ENV},
                )
            )
            port = free_port()
            new.append(
                timed(
                    [sys.executable, "-m", "orchestrator.cli", "ui", "--home", tmp, "--port", str(port)],
                    port,
                    env,
                )
            )
    for name, rows in (("mlflow server (reference)", ref), ("scalelab ui", new)):
        page, api = (statistics.median(r[i] for r in rows) for i in (0, 1))
        stops = [r[2] for r in rows if r[2] is not None]
        stop = f"{statistics.median(stops):.1f} s" if stops else "did not exit within 60 s"
        print(f"{name:26} first page {page:5.1f} s, runs API {api:5.1f} s, SIGINT to exit {stop}")
    ratio = statistics.median(r[0] for r in new) / statistics.median(r[0] for r in ref)
    print(f"first page: scalelab ui / mlflow server = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
