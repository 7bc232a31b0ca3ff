"""The per-study ledger: a run's state changes only through named transitions, each one write;
an attempt's writes are fenced by its lease; a snapshot is one read of the rows and the cancel
request; adaptive rounds are kept once."""

from __future__ import annotations

import pytest

from orchestrator.store.ledger import AttemptEnd, Ledger
from orchestrator.store.states import TERMINAL, RunState


@pytest.fixture
def study(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    s = ledger.for_study("s")
    s.plan([{"run_key": k, "kind": "point", "tokens": 100, "flops": 1.0} for k in ("a", "b")])
    yield s
    ledger.dispose()


def test_an_attempt_moves_a_run_and_a_newer_one_fences_it(study):
    assert {r.state for r in study.snapshot().rows.values()} == {RunState.PENDING}
    old = study.start_attempt("a")
    new = study.start_attempt("a")  # a new driver took the run over
    row = study.row("a")
    assert row.state is RunState.RUNNING and row.attempts == 2 and study.holds("a", new)
    assert not study.progress("a", old, tokens_done=50, last_loss=3.0)  # the orphan writes nothing
    assert not study.end_attempt("a", RunState.FAILED, old, AttemptEnd(error="late"))
    assert study.progress("a", new, tokens_done=50, last_loss=3.0)
    end = AttemptEnd(val_loss=2.5, wall_time_s=4.0, flops_per_s=10.0, device="cpu:1threads", tokens_done=100)
    assert study.end_attempt("a", RunState.FINISHED, new, end)
    row = study.row("a")
    assert row.state is RunState.FINISHED and row.done and row.val_loss == 2.5 and row.tokens_done == 100
    assert row.state in TERMINAL and row.error is None


def test_fail_keeps_the_error_and_a_new_attempt_clears_it(study):
    lease = study.start_attempt("b")
    assert study.fail("b", "RuntimeError: out of memory", lease=lease)
    assert study.row("b").state is RunState.FAILED and "out of memory" in study.row("b").error
    study.start_attempt("b")
    assert study.row("b").error is None and study.row("b").attempts == 2
    study.kill("b")
    assert study.row("b").state is RunState.KILLED


def test_lost_mlflow_runs_reset_and_results_are_adopted_or_reused(study):
    study.record_mlflow_run("a", "run-a")
    study.reset("a")  # its MLflow run was lost: train (or re-log) again
    a = study.row("a")
    assert a.state is RunState.PENDING and a.mlflow_run_id is None
    study.adopt_result("b", "run-b", RunState.DIVERGED, val_loss=None, tokens=100)
    assert study.row("b").state is RunState.DIVERGED and study.row("b").mlflow_run_id == "run-b"
    with pytest.raises(ValueError):
        study.adopt_result("a", "run-x", RunState.FAILED, val_loss=None, tokens=1)
    other = study.ledger.for_study("t")
    other.plan([{"run_key": "a", "kind": "point"}])
    other.reuse("a", study.row("b"), "copy-of-b")
    assert other.row("a").state is RunState.FINISHED and other.row("a").mlflow_run_id == "copy-of-b"
    assert study.row("a").state is RunState.PENDING  # the other study's row is its own


def test_a_snapshot_is_one_read_of_rows_and_cancel(study):
    import sqlalchemy as sa

    study.request_cancel("graceful")
    statements: list[str] = []
    sa.event.listen(study.ledger.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    snap = study.snapshot()
    assert set(snap.rows) == {"a", "b"} and snap.cancel == "graceful"
    assert len(statements) == 2  # rows and the study's cancel request, on one connection


def test_rounds_are_kept_once(study):
    study.record_round(1, "[1]")
    study.record_round(1, "[changed]")  # a replayed round keeps what was recorded first
    study.record_round(2, "[2]")
    assert study.rounds() == {1: "[1]", 2: "[2]"}
    assert study.ledger.for_study("other").rounds() == {}
