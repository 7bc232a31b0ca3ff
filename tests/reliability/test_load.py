"""Fault 4: 32 concurrent tiny runs on one machine (fractional Ray CPUs), one SQLite store."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator import load_study, run_study
from orchestrator.store.ledger import Ledger
from tests.reliability.helpers import assert_metric_series, long_study, point_runs

pytestmark = pytest.mark.slow


def test_32_concurrent_runs_on_one_store(tmp_path, store, ray_session):
    seeds = list(range(32))
    cfg = load_study(
        long_study(
            tmp_path / "s.yaml",
            "load",
            tokens="[4096]",
            seeds=str(seeds),
            sizes="[{n_layer: 1, d_model: 8}]",
            interval=1024,
            num_cpus=0.0625,
            max_retries=0,
        )
    )
    outcome = run_study(cfg, store, show_progress=False)
    assert outcome.exit_code == 0, outcome.messages
    assert not any("locked" in m for m in outcome.messages)

    ledger = Ledger(store.ledger_uri)
    rows = ledger.rows("load")
    ledger.dispose()
    assert len(rows) == 32
    assert {(r.state, r.attempts, r.tokens_done) for r in rows} == {("finished", 1, 4096)}
    assert len({r.mlflow_run_id for r in rows}) == 32
    assert all(r.error is None for r in rows)

    c, points = point_runs(store.tracking_uri, "load")
    assert len(points) == 32
    assert {r.info.run_id for r in points} == {r.mlflow_run_id for r in rows}
    for r in points:
        assert r.info.status == "FINISHED"
        assert assert_metric_series(c, r, max_gap=1024) == [1024, 2048, 3072, 4096]
    for db in (store.tracking_uri, store.ledger_uri):
        with sqlite3.connect(db[len("sqlite:///") :]) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
