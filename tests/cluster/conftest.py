"""A two-node Ray cluster on this machine, started with `ray start` on free ports.

The head offers 1 CPU and no GPU; the worker 2 CPUs and 2 *logical* GPUs (accounting only, no
CUDA). Both use token auth (RAY_AUTH_MODE=token, a random RAY_AUTH_TOKEN) and their own temp dir,
so nothing here touches another Ray on the machine (a test session's, the default /tmp/ray).
The nodes are stopped by process group id (`ray start --block` in a new session), never by
`ray stop`, which would stop every Ray instance of this user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.helpers import free_port

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
SCALELAB = str(VENV_BIN / "scalelab")


@dataclass
class Cluster:
    address: str  # HOST:GCS_PORT
    client_address: str  # ray://HOST:PORT
    env: dict[str, str]  # token auth + a clean environment for drivers
    gpu_node_id: str
    head_node_id: str
    temp_dir: str


def _node_cmd(*args: str) -> list[str]:
    return [
        RAY,
        "start",
        "--block",
        "--disable-usage-stats",
        "--min-worker-port=0",
        "--max-worker-port=0",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--object-store-memory=100000000",
        *args,
    ]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (ours: started with start_new_session), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (raylet, gcs, workers)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


WAIT_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + 60
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= 2 or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in nodes]))
"""


@pytest.fixture(scope="session")
def ray_cluster():
    temp_dir = tempfile.mkdtemp(prefix="slray-", dir="/tmp")  # short: unix socket paths
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "SCALELAB_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    port, client_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    logs = Path(temp_dir) / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        head = _node_cmd(
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--ray-client-server-port={client_port}",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--num-cpus=1",
            "--num-gpus=0",
        )
        procs.append(
            subprocess.Popen(
                head,
                env=env,
                start_new_session=True,
                stdout=open(logs / "head.out", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        _wait_port(port, procs[0], logs / "head.out")
        worker = _node_cmd(
            f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=2"
        )
        for attempt in range(3):
            # Ray gives a joining raylet a fixed 30 s to register; on a loaded 2-core CI machine
            # that occasionally runs out, so a node that did not join is started again.
            log = logs / f"worker{attempt}.out"
            procs.append(
                subprocess.Popen(
                    worker, env=env, start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT
                )
            )
            out = subprocess.run(
                [sys.executable, "-c", WAIT_NODES, address],
                env=env,
                timeout=120,
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stderr[-3000:]
            nodes = json.loads(out.stdout.strip().splitlines()[-1])
            if len(nodes) == 2:
                break
            _stop(procs.pop())
        assert len(nodes) == 2, (nodes, log.read_text()[-3000:])
        gpu = [n["id"] for n in nodes if n["resources"].get("GPU", 0) == 2]
        cpu = [n["id"] for n in nodes if not n["resources"].get("GPU")]
        assert len(gpu) == 1 and len(cpu) == 1, nodes
        yield Cluster(
            address=address,
            client_address=f"ray://127.0.0.1:{client_port}",
            env=env,
            gpu_node_id=gpu[0],
            head_node_id=cpu[0],
            temp_dir=temp_dir,
        )
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start --head exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"the Ray head did not open port {port}: {log.read_text()[-3000:]}")
