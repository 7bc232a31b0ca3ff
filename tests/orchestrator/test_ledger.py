"""The ledger is created by whichever process gets there first (driver, `status`, workers)."""

from __future__ import annotations

import threading

from orchestrator.store.ledger import Ledger


def test_concurrent_creation_of_a_fresh_ledger_never_fails(tmp_path):
    for i in range(10):
        url = f"sqlite:///{tmp_path / f'l{i}' / 'ledger.db'}"
        errors: list[Exception] = []

        def create():
            try:
                Ledger(url).dispose()
            except Exception as e:  # noqa: BLE001 - collected and asserted on below
                errors.append(e)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        ledger = Ledger(url)
        ledger.ensure("s", [{"run_key": "k", "kind": "point"}])
        assert [r.run_key for r in ledger.rows("s")] == ["k"]
        ledger.dispose()


def test_two_drivers_claiming_a_study_at_once_one_wins(tmp_path):
    """The driver lease is compare-and-set: of drivers starting together exactly one holds it."""
    import os
    import socket

    from orchestrator.run.driverlock import driver_alive

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).dispose()
    for round_ in range(5):
        study = f"s{round_}"
        won: list[str] = []

        def claim(token: str):
            ledger = Ledger(url, create=False)
            if ledger.claim_driver(study, token, socket.gethostname(), os.getpid(), driver_alive) is None:
                won.append(token)
            ledger.dispose()

        threads = [threading.Thread(target=claim, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, won
        ledger = Ledger(url, create=False)
        assert ledger.study(study)["driver"] == won[0]
        ledger.dispose()
