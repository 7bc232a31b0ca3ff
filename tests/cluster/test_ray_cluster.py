"""`scalelab run --address` against a two-node Ray cluster (see conftest.py): GPU runs land on
the GPU node, logical GPUs fall back to the CPU, infeasible requests fail at once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.store.ledger import Ledger
from orchestrator.store.tracking import Settings
from tests.conftest import TINY_STUDY

from .conftest import SCALELAB

pytestmark = pytest.mark.slow


def gpu_study(tmp_path: Path, name: str, num_gpus: int) -> Path:
    body = TINY_STUDY.format(name=name, schedule="cosine")
    body = body.replace("moe: [{experts: 1}, {experts: 4, top_k: 2}]", "moe: [{experts: 1}]")
    body = body.replace("num_gpus: 0", f"num_gpus: {num_gpus}")
    assert f"num_gpus: {num_gpus}" in body and "experts: 4" not in body
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def scalelab_run(
    cluster, study: Path, home: Path, address: str, timeout: float = 150, *extra: str
) -> subprocess.CompletedProcess:
    """The driver is a separate process: this one may hold the session's local Ray."""
    return subprocess.run(
        [SCALELAB, "run", str(study), "--address", address, "--no-progress", "--home", str(home), *extra],
        env=cluster.env,
        cwd=study.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_runs_land_on_the_gpu_node_and_fall_back_to_cpu(ray_cluster, tmp_path):
    study = gpu_study(tmp_path, "gpus", num_gpus=1)
    home = tmp_path / "store"
    ckpt = tmp_path / "shared-ckpt"
    t0 = time.time()
    r = scalelab_run(ray_cluster, study, home, ray_cluster.address, 150, "--checkpoint-dir", str(ckpt))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "4 finished" in r.stdout
    assert time.time() - t0 < 120

    settings = Settings.resolve(home=str(home), checkpoint_dir=str(ckpt))
    ledger = Ledger(settings.ledger_uri, create=False)
    rows = [r for r in ledger.rows("gpus") if r.kind == "point"]
    ledger.dispose()
    assert len(rows) == 4
    for row in rows:
        assert row.state == "finished"
        assert row.node_id == ray_cluster.gpu_node_id, "a num_gpus=1 run ran on the GPU-less head"
        assert row.device and row.device.startswith("cpu"), row.device  # logical GPUs: no CUDA
        assert (ckpt / "gpus" / row.run_key / "ckpt.pt").exists()  # --checkpoint-dir honoured
    c = MlflowClient(settings.tracking_uri)
    exp = c.get_experiment_by_name("gpus")
    points = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'point'")
    assert len(points) == 4
    for run in points:
        assert run.data.tags["scalelab.node_id"] == ray_cluster.gpu_node_id
        assert run.data.tags["scalelab.device"].startswith("cpu")
        assert run.info.status == "FINISHED"


def test_infeasible_gpu_request_fails_at_once_and_writes_nothing(ray_cluster, tmp_path):
    study = gpu_study(tmp_path, "toomany", num_gpus=4)
    home = tmp_path / "store"
    t0 = time.time()
    r = scalelab_run(ray_cluster, study, home, ray_cluster.address, 60)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resources.num_gpus" in r.stdout + r.stderr
    assert time.time() - t0 < 45
    assert not (home / "mlflow.db").exists(), "nothing may be written to MLflow"
    assert not (home / "ledger.db").exists()


def test_ray_client_address_with_token_auth(ray_cluster, tmp_path):
    """`ray://HOST:PORT` (Ray Client) reaches the same cluster; the token comes from the env."""
    study = gpu_study(tmp_path, "client", num_gpus=1)
    body = study.read_text().replace(
        "sizes: [{n_layer: 1, d_model: 8}, {n_layer: 1, d_model: 16}]", "sizes: [{n_layer: 1, d_model: 8}]"
    )
    study.write_text(body.replace("tokens: [4096, 8192]", "tokens: [4096]"))
    home = tmp_path / "store"
    r = scalelab_run(ray_cluster, study, home, ray_cluster.client_address, 150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ledger = Ledger(Settings.resolve(home=str(home)).ledger_uri, create=False)
    rows = [r for r in ledger.rows("client") if r.kind == "point"]
    ledger.dispose()
    assert [r.state for r in rows] == ["finished"]
    assert rows[0].node_id == ray_cluster.gpu_node_id


def test_wrong_token_is_bad_input(ray_cluster, tmp_path):
    study = gpu_study(tmp_path, "badtoken", num_gpus=1)
    home = tmp_path / "store"
    env = dict(ray_cluster.env, RAY_AUTH_TOKEN="0" * 64)
    r = subprocess.run(
        [SCALELAB, "run", str(study), "--address", ray_cluster.address, "--no-progress", "--home", str(home)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "RAY_AUTH_TOKEN" in r.stdout + r.stderr
    assert not (home / "mlflow.db").exists()
