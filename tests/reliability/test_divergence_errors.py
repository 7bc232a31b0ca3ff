"""Fault 5: a diverging run (never retried) and a bug-class error (fails fast, traceback kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from orchestrator.store.ledger import Ledger
from orchestrator.study.grid import expand
from tests.reliability.helpers import long_study, point_runs
from trainer import checkpoint as ckpt
from trainer import train
from trainer.sinks import InMemorySink

pytestmark = pytest.mark.slow


def test_diverging_runs_are_marked_diverged_and_not_retried(tmp_path, store, ray_session):
    cfg = load_study(
        long_study(
            tmp_path / "s.yaml",
            "diverge",
            tokens="[16384]",
            seeds="[0, 1]",
            lr="10.0",
            interval=2048,
            extra_train=", grad_clip: 0, divergence_loss: 2.0",
        )
    )
    outcome = run_study(cfg, store, show_progress=False)
    assert outcome.exit_code == 0  # diverged is a result, not a failure
    assert not any("retrying" in m for m in outcome.messages)
    ledger = Ledger(store.ledger_uri)
    rows = ledger.rows("diverge")
    ledger.dispose()
    assert [(r.state, r.attempts) for r in rows] == [("diverged", 1)] * 2
    assert all("train loss" in r.error for r in rows)
    _, points = point_runs(store.tracking_uri, "diverge")
    assert [(r.info.status, r.data.tags["scalelab.outcome"]) for r in points] == [("FAILED", "diverged")] * 2


def test_shape_error_fails_fast_with_traceback_and_the_study_continues(tmp_path, store, ray_session):
    cfg = load_study(
        long_study(
            tmp_path / "s.yaml",
            "bug",
            tokens="[8192]",
            sizes="[{n_layer: 1, d_model: 8}, {n_layer: 1, d_model: 16}]",
            seeds="[0, 1]",
            interval=2048,
        )
    )
    planned = expand(cfg)
    small = next(p for p in planned if p.spec.model.d_model == 8)
    victim = next(p for p in planned if p.spec.model.d_model == 16)
    # an incompatible checkpoint (another model's weights under the victim's key): a shape error
    scratch = tmp_path / "scratch"
    train(small.spec, InMemorySink(), checkpoint_dir=scratch, num_threads=1)
    payload = ckpt.load(scratch / "ckpt.pt")
    payload["extra"].update(run_key=victim.key, finished=False)
    import torch

    target = Path(store.checkpoint_dir("bug", victim.key))
    target.mkdir(parents=True)
    torch.save(payload, target / "ckpt.pt")

    outcome = run_study(cfg, store, show_progress=False)
    assert outcome.exit_code == 1
    assert not any("retrying" in m for m in outcome.messages), outcome.messages
    ledger = Ledger(store.ledger_uri)
    rows = {r.run_key: r for r in ledger.rows("bug")}
    ledger.dispose()
    bad = rows.pop(victim.key)
    assert bad.state == "failed" and bad.attempts == 1
    assert "Traceback" in bad.error and "size mismatch" in bad.error
    assert {(r.state, r.attempts) for r in rows.values()} == {("finished", 1)}  # the rest ran

    c, points = point_runs(store.tracking_uri, "bug")
    run = next(r for r in points if r.data.params["run_key"] == victim.key)
    assert run.info.status == "FAILED" and run.data.tags["scalelab.outcome"] == "failed"
    assert "size mismatch" in run.data.tags["scalelab.error"]
    local = c.download_artifacts(run.info.run_id, "error/traceback.txt", str(tmp_path))
    assert "Traceback" in Path(local).read_text()
