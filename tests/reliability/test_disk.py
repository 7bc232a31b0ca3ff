"""Fault 6: the checkpoint storage is full or read-only."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from orchestrator import load_study, run_study
from orchestrator.store.ledger import Ledger
from orchestrator.store.tracking import Settings
from tests.reliability.helpers import long_study

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def mount(options: str) -> Path:
        d = tmp_path / f"mnt{len(mounts)}"
        d.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True, text=True
        )
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs to simulate a full/read-only disk: {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("options,code", [("size=24k", "ENOSPC"), ("ro,size=1m", "EROFS")])
def test_unusable_checkpoint_storage_stops_the_study_cleanly(tmp_path, tmpfs, ray_session, options, code):
    root = tmpfs(options)
    settings = Settings.resolve(home=str(tmp_path / "home"), checkpoint_dir=str(root))
    cfg = load_study(
        long_study(tmp_path / "s.yaml", "disk", tokens="[8192]", seeds="[0, 1, 2]", interval=2048)
    )
    outcome = run_study(cfg, settings, max_concurrent=1, show_progress=False)
    assert outcome.exit_code == 1
    assert any("checkpoint storage unusable" in m for m in outcome.messages), outcome.messages
    assert not any("retrying" in m for m in outcome.messages)

    ledger = Ledger(settings.ledger_uri)
    rows = ledger.rows("disk")
    ledger.dispose()
    failed = [r for r in rows if r.state == "failed"]
    assert len(failed) == 1 and failed[0].attempts == 1
    assert f"checkpoint storage unusable ({code}" in failed[0].error
    assert sorted((r.state, r.attempts) for r in rows if r not in failed) == [("pending", 0)] * 2
    with sqlite3.connect(settings.ledger_uri[len("sqlite:///") :]) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not list(root.rglob("*.tmp"))  # no torn temp files left behind
    for f in root.rglob("ckpt.pt"):  # whatever was written is loadable
        from trainer import checkpoint_info

        assert checkpoint_info(f.parent) is not None
