"""Fault 1: SIGKILL the Ray worker process running a training run, mid-run."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator import load_study, run_study
from orchestrator.store.ledger import Ledger
from tests.reliability.helpers import assert_metric_series, in_thread, long_study, point_runs, wait_for

pytestmark = pytest.mark.slow
INTERVAL, TOKENS = 8192, 393216


def test_killed_worker_is_retried_and_resumes_in_the_same_mlflow_run(tmp_path, store, ray_session):
    cfg = load_study(long_study(tmp_path / "s.yaml", "worker-kill", tokens=f"[{TOKENS}]", interval=INTERVAL))
    thread, box = in_thread(run_study, cfg, store, show_progress=False)

    def running_row():
        if not os.path.exists(store.ledger_uri[len("sqlite:///") :]):
            return None
        ledger = Ledger(store.ledger_uri, create=False)
        try:
            rows = ledger.rows("worker-kill")
        except Exception:
            return None
        finally:
            ledger.dispose()
        r = rows[0] if rows else None
        return r if r and r.pid and (r.tokens_done or 0) >= 0.3 * TOKENS else None

    row = wait_for(running_row, 60, "the run to pass 30% of its tokens")
    killed_at = row.tokens_done
    os.kill(row.pid, signal.SIGKILL)
    thread.join(90)
    assert not thread.is_alive() and "error" not in box, box
    outcome = box["result"]
    assert outcome.exit_code == 0, outcome.messages
    assert any("retrying" in m and "1/2" in m for m in outcome.messages), outcome.messages

    ledger = Ledger(store.ledger_uri)
    (final,) = ledger.rows("worker-kill")
    ledger.dispose()
    assert final.state == "finished" and final.attempts == 2
    assert final.pid != row.pid  # a new process did the second attempt

    c, points = point_runs(store.tracking_uri, "worker-kill")
    assert len(points) == 1  # the same MLflow run, resumed
    run = points[0]
    assert run.info.status == "FINISHED" and run.data.tags["scalelab.outcome"] == "finished"
    assert run.data.tags["scalelab.attempt"] == "2"
    resumed = int(run.data.tags["scalelab.resumed_from_tokens"])
    assert 0 < resumed <= killed_at + INTERVAL  # from its last checkpoint, not from 0
    steps = assert_metric_series(c, run, max_gap=INTERVAL)
    assert steps == list(range(INTERVAL, TOKENS + 1, INTERVAL))  # every evaluation, once
    train_steps = [m.step for m in c.get_metric_history(run.info.run_id, "train_loss")]
    assert len(train_steps) == len(set(train_steps))
    print(
        f"killed pid {row.pid} at {killed_at} tokens; resumed from {resumed}; "
        f"{len(steps)} val_loss points, {len(train_steps)} train_loss points"
    )
