"""Fault 8: security defaults (loopback binds, no unpickling, no shell strings, no logged secrets)."""

from __future__ import annotations

import ast
import os
import socket
from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from orchestrator.cli import main, redact
from tests.reliability.helpers import long_study, point_runs

SRC = [
    p
    for pkg in ("orchestrator", "trainer", "analysis")
    for p in (Path(__file__).parents[2] / pkg).rglob("*.py")
]


def _calls(name_test):
    for path in SRC:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and name_test(ast.unparse(node.func)):
                yield path, node


def test_no_unsafe_deserialisation():
    loads = list(_calls(lambda f: f.endswith("torch.load")))
    assert loads and all(
        any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in n.keywords) for _, n in loads
    )
    assert not list(
        _calls(
            lambda f: (
                f in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "cloudpickle.loads")
            )
        )
    )
    for _, n in _calls(lambda f: f.endswith("np.load")):
        assert not any(k.arg == "allow_pickle" and ast.unparse(k.value) == "True" for k in n.keywords)


def test_no_shell_strings_for_subprocesses():
    assert not list(_calls(lambda f: f in ("os.system", "os.popen")))
    for path, n in _calls(lambda f: f.startswith("subprocess.")):
        assert not any(k.arg == "shell" and ast.unparse(k.value) != "False" for k in n.keywords), path
        assert not (n.args and isinstance(n.args[0], (ast.JoinedStr, ast.BinOp))), path


def test_ui_binds_loopback_with_one_worker_and_no_job_runner(monkeypatch, tmp_path):
    import uvicorn

    from orchestrator import ui_server

    seen = {}
    monkeypatch.setattr(ui_server, "_open_store", lambda uri, root: seen.update(uri=uri))
    monkeypatch.setattr(ui_server, "scalelab_experiments", lambda store: [])
    monkeypatch.setattr(ui_server, "_mlflow_app", lambda: "app")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.update(config=self.config))
    (tmp_path / "mlflow.db").touch()  # ui serves an existing store only
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["ui", "--home", str(tmp_path), "--port", str(port)]) == 0
    config = seen["config"]
    assert config.host == "127.0.0.1" and config.port == port and config.workers == 1
    env = ui_server.server_environment(seen["uri"], "file:///x")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["_MLFLOW_SERVER_FILE_STORE"] == seen["uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_passwords_in_uris_are_masked_when_printed():
    assert redact("postgresql://bob:hunter2@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"
    assert redact("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"


@pytest.mark.slow
def test_secrets_in_the_environment_never_reach_mlflow(tmp_path, store, monkeypatch, ray_session):
    secret = "s3cr3t-9f1c2e"
    for var in ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"):
        monkeypatch.setenv(var, secret)
    cfg = load_study(long_study(tmp_path / "s.yaml", "secrets", tokens="[4096]", interval=2048))
    assert run_study(cfg, store, show_progress=False).exit_code == 0
    c, points = point_runs(store.tracking_uri, "secrets")
    exp = c.get_experiment_by_name("secrets")
    everything = [exp.tags]
    for r in c.search_runs([exp.experiment_id]):
        everything += [r.data.params, r.data.tags]
    assert points and not [d for d in everything if any(secret in str(k) + str(v) for k, v in d.items())]
    assert secret.encode() not in Path(store.tracking_uri[len("sqlite:///") :]).read_bytes()


def test_embedded_ray_listens_on_loopback_only():
    """`scalelab run` without --address starts a local Ray: none of its servers may be reachable
    from other machines."""
    import shutil
    import subprocess
    import sys

    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2) to list listening sockets")
    probe = r"""
import os, subprocess
os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
from orchestrator.run.ray_connection import connect_ray
connect_ray(None)                                        # imports ray: nothing may before it
import ray
ray.get(ray.remote(lambda: 1).remote())                  # a worker process is up too
def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(p) for p in out.stdout.split()]
    return kids + [g for k in kids for g in children(k)]
pids = {os.getpid(), *children(os.getpid())}
for line in subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines():
    if any(f"pid={p}," in line for p in pids):
        print(line.split()[3])
ray.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    addresses = out.stdout.split()
    assert len(addresses) >= 3, out.stdout  # gcs, raylet, worker at least
    bad = [a for a in addresses if not a.rsplit(":", 1)[0].strip("[]").endswith("127.0.0.1")]
    assert not bad, f"listening beyond loopback: {bad}"
