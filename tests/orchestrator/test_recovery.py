"""The ledger and the MLflow store disagree, a second driver starts, a study moves device: the
rerun keeps every result and trains only what has none."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator import Settings, load_study, run_study
from orchestrator.cli import main
from orchestrator.run.driverlock import driver_alive
from orchestrator.store import tracking
from orchestrator.store.ledger import Ledger
from tests.orchestrator.test_shared_points import history, ledger_rows, points, small
from trainer.spec import RunSpec


def _remove_sqlite(uri: str) -> None:
    path = Path(uri[len("sqlite:///") :])
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def test_a_lost_mlflow_store_is_refilled_from_the_checkpoints(tmp_path, store, ray_session):
    path = small(tmp_path, "lost", tokens="[4096, 8192]")
    assert main(["run", str(path), "--no-progress"]) == 0
    losses = {k: r.val_loss for k, r in ledger_rows(store, "lost").items()}
    # the MLflow store is lost (an empty one in its place: a fresh file, as this process's MLflow
    # keeps the old one open), the ledger and the checkpoints are kept
    store = Settings.resolve(
        tracking_uri=f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}",
        ledger_uri=store.ledger_uri,
        home=str(store.home),
    )

    out = run_study(load_study(path), store, show_progress=False)
    assert out.exit_code == 0 and any("missing from the MLflow store" in m for m in out.messages)
    runs, rows = points(store, "lost"), ledger_rows(store, "lost")
    assert set(runs) == set(losses)  # not an empty experiment
    for key, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.tags["scalelab.outcome"] == "finished"
        assert history(store, run)[-1] == (int(run.data.params["tokens"]), losses[key])
        assert rows[key].mlflow_run_id == run.info.run_id and rows[key].state == "finished"
        assert rows[key].error is None  # "already finished" is not an error


def test_a_finished_run_is_adopted_not_failed_when_the_ledger_is_lost_and_its_checkpoint_corrupt(
    tmp_path, store, ray_session
):
    path = small(tmp_path, "adopt")
    assert main(["run", str(path), "--no-progress"]) == 0
    ((key, row),) = ledger_rows(store, "adopt").items()
    (Path(row.checkpoint_dir) / "ckpt.pt").write_bytes(b"not a checkpoint")
    _remove_sqlite(store.ledger_uri)

    assert run_study(load_study(path), store, show_progress=False).exit_code == 0
    run = points(store, "adopt")[key]
    assert run.info.status == "FINISHED" and run.data.tags["scalelab.outcome"] == "finished"
    again = ledger_rows(store, "adopt")[key]
    assert again.state == "finished" and again.attempts == 0
    assert again.val_loss == run.data.metrics["val_loss"] and again.mlflow_run_id == run.info.run_id


def test_a_second_driver_of_a_live_study_refuses_and_a_dead_ones_lease_is_taken(
    tmp_path, store, ray_session, capsys
):
    path = small(tmp_path, "busy")
    assert main(["run", str(path), "--no-progress"]) == 0
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name("busy")
    before = {r.info.run_id: r.info.status for r in c.search_runs([exp.experiment_id])}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ledger = Ledger(store.ledger_uri)
        assert ledger.claim_driver("busy", "t0", socket.gethostname(), holder.pid, driver_alive) is None
        ledger.update("busy", next(iter(ledger_rows(store, "busy"))), state="pending")
        capsys.readouterr()
        assert main(["run", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and socket.gethostname() in err
        assert "scalelab cancel" in err
        after = {r.info.run_id: r.info.status for r in c.search_runs([exp.experiment_id])}
        assert after == before and "RUNNING" not in after.values()
        # while the holder lives, `status` shows the study's runs as they are
        assert main(["status", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["runs"][0]["state"] == "pending"
    finally:
        holder.kill()
        holder.wait()
    assert main(["run", str(path), "--no-progress"]) == 0  # the dead driver's lease is taken
    assert ledger.study("busy")["driver"] is None  # and released at the end
    ledger.dispose()


def test_status_shows_runs_of_a_gone_driver_as_interrupted(tmp_path, store, ray_session, capsys):
    path = small(tmp_path, "gone")
    assert main(["run", str(path), "--no-progress"]) == 0
    ledger = Ledger(store.ledger_uri)
    (key,) = ledger_rows(store, "gone")
    ledger.update("gone", key, state="running")  # a driver was killed mid-run
    ledger.dispose()
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["state"] == "interrupted"


def test_plan_and_status_warn_when_the_recipe_was_edited(tmp_path, store, ray_session, capsys):
    path = small(tmp_path, "edited")
    assert main(["run", str(path), "--no-progress"]) == 0
    path.write_text(path.read_text().replace("lr: 1.0e-2", "lr: 2.0e-2"))
    capsys.readouterr()
    for cmd in ("plan", "status"):
        assert main([cmd, str(path)]) == 0
        err = capsys.readouterr().err
        assert "warning:" in err and "differ from those study 'edited' ran with" in err
    path.write_text(path.read_text().replace("device: cpu", "device: auto"))  # run-time only
    path.write_text(path.read_text().replace("lr: 2.0e-2", "lr: 1.0e-2"))
    assert main(["plan", str(path)]) == 0 and "warning" not in capsys.readouterr().err


def test_moving_a_finished_study_from_cpu_to_auto_retrains_nothing(tmp_path, store, ray_session):
    assert run_study(load_study(small(tmp_path, "move")), store, show_progress=False).exit_code == 0
    before, rows = points(store, "move"), ledger_rows(store, "move")
    moved = load_study(small(tmp_path, "move", device="auto", interval=2048, file="move-auto"))
    assert run_study(moved, store, show_progress=False).exit_code == 0
    assert {k: r.info.run_id for k, r in points(store, "move").items()} == {
        k: r.info.run_id for k, r in before.items()
    }
    assert {k: r.attempts for k, r in ledger_rows(store, "move").items()} == {
        k: r.attempts for k, r in rows.items()
    }


def _make_legacy(store, cfg) -> dict[str, str]:
    """Rewrite a store as the older scheme wrote it: run-time settings in keys and fingerprint."""
    ledger = Ledger(store.ledger_uri)
    c = MlflowClient(store.tracking_uri)
    legacy = {}
    for (study, key), text in ledger.specs(cfg.study).items():
        old = RunSpec.from_dict(json.loads(text)).legacy_key()
        ledger.rekey(study, key, old)
        c.set_tag(ledger.get(study, old).mlflow_run_id, tracking.RUN_KEY, old)
        legacy[old] = key
    fp = tracking.fingerprint_hash(cfg.legacy_fingerprint())
    c.set_experiment_tag(c.get_experiment_by_name(cfg.study).experiment_id, tracking.FINGERPRINT, fp)
    ledger.upsert_study(cfg.study, fingerprint=fp)
    ledger.dispose()
    return legacy


def test_a_store_keyed_the_old_way_is_recognised_after_a_device_move(tmp_path, store, ray_session, capsys):
    cfg = load_study(small(tmp_path, "legacy", tokens="[4096, 8192]"))
    assert run_study(cfg, store, show_progress=False).exit_code == 0
    ids = {k: r.info.run_id for k, r in points(store, "legacy").items()}
    legacy = _make_legacy(store, cfg)
    capsys.readouterr()
    assert main(["status", str(tmp_path / "legacy.yaml"), "--json"]) == 0  # read before migrating
    assert {r["state"] for r in json.loads(capsys.readouterr().out)["runs"]} == {"finished"}
    moved = load_study(small(tmp_path, "legacy", tokens="[4096, 8192]", device="auto", file="legacy-auto"))
    assert run_study(moved, store, show_progress=False).exit_code == 0
    rows = ledger_rows(store, "legacy")
    assert set(rows) == set(legacy.values()) and {r.attempts for r in rows.values()} == {1}
    assert {k: r.info.run_id for k, r in points(store, "legacy").items()} == ids
