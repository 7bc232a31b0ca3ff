"""The ledger is created by whichever process gets there first (driver, `status`, workers)."""

from __future__ import annotations

import threading

from orchestrator.ledger import Ledger


def test_concurrent_creation_of_a_fresh_ledger_never_fails(tmp_path):
    for i in range(10):
        url = f"sqlite:///{tmp_path / f'l{i}' / 'ledger.db'}"
        errors: list[Exception] = []

        def create():
            try:
                Ledger(url).dispose()
            except Exception as e:   # noqa: BLE001 - collected and asserted on below
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
