"""SCALELAB_NODE_* on a node override the driver's locations (fast, no Ray)."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.run.messages import RunAssignment, TrunkAssignment, WorkPayload
from orchestrator.run.worker import node_local
from orchestrator.store.tracking import Settings

ROOT = Path(__file__).resolve().parents[2]


def payload(settings: Settings) -> WorkPayload:
    run = RunAssignment(
        run_key="k1",
        spec={},
        lease="l1",
        mlflow_run_id="r1",
        attempt=1,
        checkpoint_dir=settings.checkpoint_dir("s", "k1"),
    )
    return WorkPayload(
        study="s",
        runs=(run,),
        tracking_uri=settings.tracking_uri,
        ledger_uri=settings.ledger_uri,
        num_cpus=1,
        trunk=TrunkAssignment(run_key="t1", lease="l0", mlflow_run_id="r0"),
        trunk_dir=settings.trunk_dir("s", "t1"),
    )


def test_local_mode_changes_nothing(tmp_path, monkeypatch):
    for v in ("SCALELAB_NODE_TRACKING_URI", "SCALELAB_NODE_LEDGER_URI", "SCALELAB_NODE_CHECKPOINT_DIR"):
        monkeypatch.delenv(v, raising=False)
    item = payload(Settings.resolve(home=str(tmp_path)))
    assert node_local(item) == item


def test_node_environment_overrides_and_rebases(tmp_path, monkeypatch):
    settings = Settings.resolve(
        tracking_uri="http://127.0.0.1:5000",
        ledger_uri="postgresql://u:p@127.0.0.1:5433/scalelab",
        checkpoint_dir=str(tmp_path / "host-ckpt"),
        home=str(tmp_path),
    )
    item = payload(settings)
    monkeypatch.setenv("SCALELAB_NODE_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("SCALELAB_NODE_LEDGER_URI", "postgresql://u:p@postgres:5432/scalelab")
    monkeypatch.setenv("SCALELAB_NODE_CHECKPOINT_DIR", "/scalelab/checkpoints")
    out = node_local(item)
    assert out.tracking_uri == "http://mlflow:5000"
    assert out.ledger_uri == "postgresql://u:p@postgres:5432/scalelab"
    assert out.runs[0].checkpoint_dir == "/scalelab/checkpoints/s/k1"
    assert out.trunk_dir == "/scalelab/checkpoints/s/trunks/t1"
    assert item.runs[0].checkpoint_dir == str(tmp_path / "host-ckpt" / "s" / "k1")  # not mutated


def test_compose_nodes_set_node_locations():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("ray-head", "ray-worker"):
        env = compose["services"][name]["environment"]
        assert env["SCALELAB_NODE_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["SCALELAB_NODE_LEDGER_URI"] == env["SCALELAB_LEDGER_URI"]
        assert env["SCALELAB_NODE_CHECKPOINT_DIR"] == env["SCALELAB_CHECKPOINT_DIR"]
