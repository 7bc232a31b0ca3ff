"""SIGTERM stops `scalelab run` like Ctrl-C: running runs checkpoint and are marked killed, the
driver exits 143 with one line saying to rerun (no C++ abort, exit 134), and a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from tests.reliability.helpers import ledger_rows, long_study, wait_for

pytestmark = pytest.mark.slow
INTERVAL, TOKENS = 8192, 196608


def test_sigterm_is_a_clean_stop_and_the_rerun_resumes(tmp_path, store, ray_session):
    path = long_study(tmp_path / "s.yaml", "sigterm", tokens=f"[{TOKENS}]", interval=INTERVAL)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            str(path),
            "--home",
            str(store.home),
            "--no-progress",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: any(
                r.state == "running" and (r.tokens_done or 0) >= 2 * INTERVAL
                for r in ledger_rows(store.ledger_uri, "sigterm").values()
            ),
            120,
            "a run two checkpoints in",
        )
        proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID`
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 143, (proc.returncode, err[-2000:])
    assert "interrupted: run `scalelab run` again to resume" in err
    for crash in ("core dumped", "Aborted", "terminate called", "Fatal Python error"):
        assert crash not in err, err[-2000:]
    rows = ledger_rows(store.ledger_uri, "sigterm")
    (row,) = rows.values()
    assert row.state == "killed" and (row.tokens_done or 0) >= 2 * INTERVAL
    assert (Path(row.checkpoint_dir) / "ckpt.pt").exists()

    outcome = run_study(load_study(path), store, show_progress=False)  # `scalelab run` again
    assert outcome.exit_code == 0, outcome.messages
    (after,) = ledger_rows(store.ledger_uri, "sigterm").values()
    assert after.state == "finished" and after.attempts == 2
