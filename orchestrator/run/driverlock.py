"""One driver per study: the ledger's `scalelab_studies.driver` row is a lease that the running
`scalelab run` renews (heartbeat); a second driver of the same study refuses to start while the
holder is alive, and takes over the lease of a dead one (its process gone, or silent too long).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..store.ledger import Ledger
from ..study.config import StudyError

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0  # how often the holder renews its lease
LEASE_S = 60.0  # a holder silent for this long is dead (any host)


class StudyBusy(StudyError):
    """Another live driver holds the study."""


def pid_alive(pid: int) -> bool:
    """True if a process with this id runs on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def driver_alive(row: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether the driver recorded in a study row still runs: its heartbeat is recent and, on
    this host, its process exists (so a killed driver is taken over at once)."""
    if not row or not row.get("driver"):
        return False
    now = time.time() if now is None else now
    if now - (row.get("driver_heartbeat") or 0.0) > LEASE_S:
        return False
    if row.get("driver_host") == socket.gethostname() and row.get("driver_pid"):
        return pid_alive(int(row["driver_pid"]))
    return True


def busy_message(study: str, holder: dict[str, Any], study_path: str) -> str:
    age = time.time() - (holder.get("driver_heartbeat") or 0.0)
    return (
        f"study {study!r} is already being run by another `scalelab run` (pid "
        f"{holder.get('driver_pid')} on host {holder.get('driver_host')}, heartbeat "
        f"{age:.0f} s ago); wait for it to end (`scalelab status {study_path}`), or stop it "
        f"with `scalelab cancel {study_path}` and run again"
    )


@contextmanager
def hold_study(ledger: Ledger, study: str, study_path: str = "STUDY.yaml") -> Iterator[str]:
    """Hold the study's driver lease for the block (renewed by a daemon thread); raises
    StudyBusy, before anything is created, when a live driver holds it."""
    token = uuid.uuid4().hex
    holder = ledger.claim_driver(study, token, socket.gethostname(), os.getpid(), driver_alive)
    if holder is not None:
        raise StudyBusy("study", busy_message(study, holder, study_path))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                if not ledger.driver_heartbeat(study, token):
                    return
            except Exception as e:  # noqa: BLE001 - a missed beat only shortens the lease
                log.warning("driver heartbeat of study %s failed: %s", study, e)

    thread = threading.Thread(target=beat, name=f"scalelab-driver-{study}", daemon=True)
    thread.start()
    try:
        yield token
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_S)
        ledger.release_driver(study, token)
