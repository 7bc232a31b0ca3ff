"""Fault 2: SIGKILL the driver (`scalelab run`) mid-study, then run it again; and the fencing that
keeps an orphaned attempt of a killed driver from writing to a run another attempt owns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from orchestrator.run.worker import execute
from orchestrator.store.ledger import Ledger
from orchestrator.study.grid import expand
from tests.reliability.helpers import (
    alive,
    assert_metric_series,
    descendants,
    in_thread,
    ledger_rows,
    long_study,
    point_runs,
    proc_name,
    wait_for,
)

pytestmark = pytest.mark.slow
INTERVAL, TOKENS = 8192, 196608


def test_killed_driver_rerun_gives_exactly_the_study(tmp_path, store, ray_session):
    path = long_study(
        tmp_path / "s.yaml", "driver-kill", tokens=f"[{TOKENS}]", seeds="[0, 1, 2]", interval=INTERVAL
    )
    scalelab = str(Path(sys.executable).with_name("scalelab"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(
        [scalelab, "run", str(path), "--home", str(store.home), "--no-progress", "--max-concurrent", "1"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    family: dict[int, str] = {}
    try:

        def mid_study():
            family.update({p: proc_name(p) for p in descendants(proc.pid)})  # its embedded Ray
            rows = ledger_rows(store.ledger_uri, "driver-kill").values()
            done = [r for r in rows if r.state == "finished"]
            running = [r for r in rows if r.state == "running" and (r.tokens_done or 0) > TOKENS // 4]
            return (done, running) if done and running else None

        done, running = wait_for(mid_study, 90, "one run finished and one a quarter done")
    finally:
        family.update({p: proc_name(p) for p in descendants(proc.pid)})
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its process group
        proc.wait(10)
        for pid in family:  # and every process of its Ray
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(alive(p) for p in family), 15, "the killed driver's Ray to exit")
    assert any("raylet" in n for n in family.values()), family  # it had its own Ray
    assert not [p for p in family if alive(p)]

    before = ledger_rows(store.ledger_uri, "driver-kill")
    finished_key, interrupted_key = done[0].run_key, running[0].run_key
    ckpt = Path(before[finished_key].checkpoint_dir) / "ckpt.pt"
    mtime = ckpt.stat().st_mtime_ns

    cfg = load_study(path)
    outcome = run_study(cfg, store, show_progress=False)  # `scalelab run` again
    assert outcome.exit_code == 0, outcome.messages
    after = ledger_rows(store.ledger_uri, "driver-kill")
    assert {r.state for r in after.values()} == {"finished"}
    assert after[finished_key].attempts == before[finished_key].attempts == 1  # not retrained
    assert ckpt.stat().st_mtime_ns == mtime
    assert after[interrupted_key].attempts == 2

    c, points = point_runs(store.tracking_uri, "driver-kill")
    assert len(points) == len(expand(cfg)) == 3  # total MLflow runs = planned points
    assert sorted(r.data.params["run_key"] for r in points) == sorted(after)
    for r in points:
        assert r.info.status == "FINISHED" and r.data.tags["scalelab.outcome"] == "finished"
        steps = assert_metric_series(c, r, max_gap=INTERVAL)
        assert steps == list(range(INTERVAL, TOKENS + 1, INTERVAL))
    resumed = next(r for r in points if r.data.params["run_key"] == interrupted_key)
    assert int(resumed.data.tags["scalelab.resumed_from_tokens"]) > 0
    print(
        f"killed driver with {len(family)} Ray processes; finished={finished_key} "
        f"interrupted={interrupted_key} at {running[0].tokens_done} tokens; "
        f"attempts after rerun: { {k: r.attempts for k, r in after.items()} }"
    )


def test_an_orphaned_attempt_is_fenced_when_a_newer_attempt_takes_the_run(tmp_path, store, ray_session):
    """The task of a killed driver keeps running (e.g. on a remote node): once a new driver
    acquires the run, the orphan stops at its next write and never writes to the ledger row or
    the MLflow run again."""
    from orchestrator.run.dispatcher import _payload, ensure_child_runs
    from orchestrator.run.scheduler import record_plan, validate
    from orchestrator.study.grid import work_items

    path = long_study(tmp_path / "s.yaml", "orphan", tokens=f"[{TOKENS}]", interval=INTERVAL)
    cfg = load_study(path)
    planned = validate(cfg, store, None)
    ledger = Ledger(store.ledger_uri)
    exp_id, parent = record_plan(cfg, store, planned, ledger)
    (item,) = work_items(planned)
    ensure_child_runs(cfg, store, item, ledger, exp_id, parent)  # as the driver dispatches it
    rows = {r.run_key: r for r in ledger.rows("orphan")}
    orphan_payload = _payload(item, cfg, store, ledger, rows)  # the killed driver's attempt
    key = planned[0].key
    thread, box = in_thread(execute, orphan_payload)
    wait_for(lambda: (ledger.get("orphan", key).tokens_done or 0) > TOKENS // 4, 60, "the orphan to train")

    new_lease = ledger.acquire("orphan", key)  # a new driver takes the run
    thread.join(30)
    assert not thread.is_alive(), "the orphan did not stop"
    assert box["result"][0].state == "fenced", box
    fenced_row = ledger.get("orphan", key)
    assert fenced_row.lease == new_lease and fenced_row.state == "running"
    c, (run,) = point_runs(store.tracking_uri, "orphan")
    n_points = len(c.get_metric_history(run.info.run_id, "val_loss"))
    time.sleep(1.0)
    assert len(c.get_metric_history(run.info.run_id, "val_loss")) == n_points
    ledger.dispose()

    outcome = run_study(cfg, store, show_progress=False)
    assert outcome.exit_code == 0
    c, (run,) = point_runs(store.tracking_uri, "orphan")
    assert run.info.status == "FINISHED"
    assert assert_metric_series(c, run, max_gap=INTERVAL) == list(range(INTERVAL, TOKENS + 1, INTERVAL))
