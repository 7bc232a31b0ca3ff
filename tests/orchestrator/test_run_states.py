"""One run-state vocabulary (orchestrator.store.states.RunState) behind the ledger, `scalelab status`,
the MLflow `scalelab.outcome` tag and the worker's reading of trainer statuses; and the typed
messages and sink Protocol of the driver/worker boundary."""

from __future__ import annotations

import json
import pickle

import pytest
import sqlalchemy as sa

from orchestrator.cli import main
from orchestrator.run.messages import RunAssignment, RunReport, TrunkAssignment, WorkPayload
from orchestrator.run.scheduler import record_plan
from orchestrator.run.worker import FencedSink
from orchestrator.store import ledger as ledger_mod
from orchestrator.store import tracking
from orchestrator.store.ledger import Ledger
from orchestrator.store.states import OUTCOMES, RunState
from orchestrator.study.config import load_study
from orchestrator.study.grid import expand
from trainer.sinks import InMemorySink, MetricSink, MlflowSink

VALUES = {s.value for s in RunState}


def test_ledger_and_tag_vocabularies_are_the_enum():
    assert set(ledger_mod.STATES) <= VALUES and "fenced" not in ledger_mod.STATES
    assert set(ledger_mod.TERMINAL) == {"finished", "diverged"}
    assert tracking.MLFLOW_STATUS == {
        "finished": "FINISHED",
        "diverged": "FAILED",
        "failed": "FAILED",
        "killed": "KILLED",
    }
    assert {s.value for s in OUTCOMES} <= set(ledger_mod.STATES)
    # the trainer's words (RunResult.status) map in one place; anything unknown is a failure
    assert {
        w: RunState.from_trainer(w).value for w in ("finished", "diverged", "stopped", "failed", "oops")
    } == {
        "finished": "finished",
        "diverged": "diverged",
        "stopped": "killed",
        "failed": "failed",
        "oops": "failed",
    }
    assert f"{RunState.KILLED:8}|" == "killed  |" and str(RunState.FENCED) == "fenced"
    assert json.dumps({RunState.FAILED: RunState.KILLED}) == '{"failed": "killed"}'


def test_ledger_stores_plain_values_and_rejects_unknown_states(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.ensure(
            "s",
            [
                {
                    "run_key": "k",
                    "kind": "point",
                    "trunk_key": None,
                    "tokens": 1,
                    "flops": 1.0,
                    "spec_json": None,
                    "checkpoint_dir": str(tmp_path),
                }
            ],
        )
        ledger.update("s", "k", state=RunState.KILLED)
        row = ledger.get("s", "k")
        assert row.state == "killed" and row.state is RunState.KILLED  # LedgerRow.state: RunState
        with ledger.engine.connect() as c:  # stored as the plain value: readable without the Enum
            stored = c.execute(sa.text("SELECT state FROM scalelab_runs WHERE run_key = 'k'")).scalar()
        assert stored == "killed" and type(stored) is str
        with pytest.raises(ValueError):
            ledger.update("s", "k", state="exploded")
        assert ledger.get("s", "k").state == "killed"
    finally:
        ledger.dispose()


def test_status_and_outcome_tags_use_the_enum_values(tiny_study, store, capsys):
    path = tiny_study("states")
    cfg = load_study(path)
    planned = expand(cfg)
    ledger = Ledger(store.ledger_uri)
    try:
        record_plan(cfg, store, planned, ledger)
        want = {planned[0].key: "killed", planned[1].key: "diverged", planned[2].key: "running"}
        for key, state in want.items():
            ledger.update(cfg.study, key, state=RunState(state))
        c = tracking.client(store.tracking_uri)
        run_id = c.create_run(ledger.study(cfg.study)["experiment_id"]).info.run_id
        tracking.finish_run(c, run_id, RunState.KILLED)
    finally:
        ledger.dispose()
    run = c.get_run(run_id)
    assert run.data.tags[tracking.OUTCOME] == "killed" and run.info.status == "KILLED"
    with pytest.raises(ValueError):
        tracking.finish_run(c, run_id, "exploded")
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    states = {r["run_key"]: r["state"] for r in out["runs"]}
    assert set(states.values()) | set(out["states"]) <= VALUES
    # no driver holds the study: its running row reads as interrupted
    assert [states[k] for k in want] == ["killed", "diverged", "interrupted"]
    assert sum(1 for s in states.values() if s == "pending") == len(planned) - 3


def test_messages_are_frozen_and_cross_process_boundaries():
    run = RunAssignment(
        run_key="k", spec={"seed": 0}, lease="l", mlflow_run_id="r", attempt=1, checkpoint_dir="/c"
    )
    item = WorkPayload(
        study="s",
        runs=(run,),
        tracking_uri="sqlite:///m.db",
        ledger_uri="sqlite:///l.db",
        num_cpus=1.0,
        trunk=TrunkAssignment(run_key="t", lease="l0", mlflow_run_id="r0"),
    )
    report = RunReport(run_key="k", state=RunState.DIVERGED, message="loss is nan")
    assert pickle.loads(pickle.dumps(item)) == item  # as Ray ships them
    back = pickle.loads(pickle.dumps(report))
    assert back == report and back.state is RunState.DIVERGED and back.ok
    assert not RunReport(run_key="k", state=RunState.FENCED).ok
    with pytest.raises(AttributeError):
        item.study = "other"  # type: ignore[misc]


class _NoClose:
    run_id = None
    pending = 0

    def log_params(self, params): ...

    def set_tags(self, tags): ...

    def log_metrics(self, metrics, step): ...

    def log_text(self, text, artifact_file): ...

    def flush(self): ...


def test_every_sink_satisfies_the_protocol(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        memory = InMemorySink()
        mlflow_sink = MlflowSink(f"sqlite:///{tmp_path / 'mlflow.db'}", "run0")
        fenced = FencedSink(memory, ledger, "s", "k", "lease")
        for sink in (memory, mlflow_sink, fenced):
            assert isinstance(sink, MetricSink), type(sink).__name__
        assert fenced.run_id is None and fenced.pending == 0 and mlflow_sink.run_id == "run0"
        assert not isinstance(_NoClose(), MetricSink)  # close() is required
    finally:
        ledger.dispose()
