"""Bug-class errors (the code or the spec is wrong) are matched by type, subclasses included:
they fail the run at once instead of being retried as if transient."""

from __future__ import annotations

import sys

from orchestrator import load_study
from orchestrator.run.dispatcher import _handle_results, _payload, ensure_child_runs
from orchestrator.run.scheduler import record_plan, validate
from orchestrator.run.worker import execute, is_bug
from orchestrator.store.ledger import Ledger
from orchestrator.study.grid import work_items
from tests.orchestrator.test_shared_points import small
from trainer import train
from trainer.spec import SpecError


class WidthSpecError(SpecError):
    """A project-specific refinement of SpecError, as model code defines them."""


def test_bug_classes_are_matched_by_type():
    assert is_bug(WidthSpecError("model.d_model", "not a multiple of d_head"))
    assert is_bug(RuntimeError("size mismatch for wte.weight"))  # torch shape errors
    assert not is_bug(ConnectionError("store unreachable")) and not is_bug(RuntimeError("OOM"))
    assert not is_bug(None)


def test_a_spec_error_subclass_in_a_run_is_not_retried(tmp_path, store, ray_session, monkeypatch):
    cfg = load_study(small(tmp_path, "bug"))
    planned = validate(cfg, store, None)
    ledger = Ledger(store.ledger_uri)
    exp_id, parent = record_plan(cfg, store, planned, ledger)
    (item,) = work_items(planned)
    ensure_child_runs(cfg, store, item, ledger, exp_id, parent)  # as dispatch does
    rows = {r.run_key: r for r in ledger.rows("bug")}

    def broken(self, sink, trunk_sink):
        raise WidthSpecError("model.d_model", "must be a multiple of d_head")

    monkeypatch.setattr(sys.modules[train.__module__]._Run, "execute", broken)
    (result,) = execute(_payload(item, cfg, store, ledger, rows))  # the real worker, in-process
    assert result.state == "failed" and result.bug, result.message[-1500:]
    retry, why = _handle_results([result], "bug", ledger, store)
    assert not retry and "WidthSpecError" in why
    assert ledger.get("bug", planned[0].key).state == "failed"
    ledger.dispose()
