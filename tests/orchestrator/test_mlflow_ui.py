"""What a user sees of a study in MLflow: the saved scaling-law view, the point's accounting as
numeric metrics, and honest run durations (runs are created when dispatched)."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import load_study, run_study
from orchestrator.cli import main
from orchestrator.store.ledger import Ledger
from orchestrator.store.mlflow_view import (
    COLUMNS,
    TAG_PREFIX,
    VIEW_KEY,
    decode_state,
    view_state,
    view_url,
)
from tests.reliability.helpers import in_thread, long_study, wait_for


def _experiment(settings, study):
    c = MlflowClient(settings.tracking_uri)
    return c, c.get_experiment_by_name(study)


def test_view_state_round_trips_through_mlflow_compression():
    state = view_state()
    from orchestrator.store.mlflow_view import encode_state

    assert decode_state(encode_state(state)) == state
    assert state["orderByKey"] == "metrics.`val_loss`" and state["orderByAsc"] is True
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert [c["type"] for c in state["compareRunCharts"]] == ["LINE", "SCATTER"]
    assert view_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=scalelab-scaling-law"
        "&workflowType=machine_learning"
    )


def test_point_runs_carry_numeric_accounting_and_the_experiment_its_view(
    tiny_study, store, ray_session, capsys
):
    cfg = load_study(tiny_study("numbers"))
    outcome = run_study(cfg, store, show_progress=False)
    assert outcome.exit_code == 0
    c, exp = _experiment(store, "numbers")
    assert main(["status", str(tiny_study("numbers"))]) == 0  # prints where the view opens
    assert view_url("http://127.0.0.1:5000", exp.experiment_id) in capsys.readouterr().out

    envelope = json.loads(exp.tags[TAG_PREFIX + VIEW_KEY])
    assert envelope["name"] == "Scaling law" and isinstance(envelope["createdAt"], int)
    state = decode_state(envelope["state"])
    assert state["selectedColumns"] == [key for _, key in COLUMNS]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    # numbers sort as numbers and filter with a numeric comparison (params are strings)
    runs = c.search_runs(
        [exp.experiment_id],
        "tags.`scalelab.role` = 'point'",
        order_by=["metrics.n_params ASC"],
        max_results=100,
    )
    assert len(runs) == 8
    sizes = [r.data.metrics["n_params"] for r in runs]
    assert sizes == sorted(sizes) and len(set(sizes)) > 1
    for r in runs:
        for k in ("n_params", "n_params_active", "tokens"):
            assert r.data.metrics[k] == int(r.data.params[k])
        assert r.data.metrics["flops"] == pytest.approx(float(r.data.params["flops"]), rel=1e-6)
        history = c.get_metric_history(r.info.run_id, "n_params")
        assert [m.step for m in history] == [0]
    threshold = sorted(sizes)[3]
    big = c.search_runs([exp.experiment_id], f"metrics.n_params > {threshold}", max_results=100)
    assert len(big) == sum(s > threshold for s in sizes) > 0


def test_queued_points_are_not_running_and_durations_are_training_time(tmp_path, store, ray_session):
    path = long_study(tmp_path / "s.yaml", "durations", tokens="[49152]", seeds="[0, 1, 2]")
    cfg = load_study(path)
    thread, box = in_thread(run_study, cfg, store, max_concurrent=1, show_progress=False)
    ledger = Ledger(store.ledger_uri)
    wait_for(
        lambda: any((r.tokens_done or 0) > 0 for r in ledger.rows("durations")),
        120,
        "the first point to train",
    )
    c, exp = _experiment(store, "durations")
    runs = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'point'")
    # while the first point trains, the two queued points have no RUNNING MLflow run
    assert [r.info.status for r in runs] == ["RUNNING"]
    thread.join(300)
    assert box["result"].exit_code == 0, box

    rows = {r.run_key: r for r in ledger.rows("durations")}
    runs = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'point'")
    assert len(runs) == 3
    for r in runs:
        duration_s = (r.info.end_time - r.info.start_time) / 1000
        train_s = rows[r.data.params["run_key"]].wall_time_s
        # Duration = this run's training (+ worker start-up), never the time it waited in queue
        assert train_s <= duration_s + 0.5 and duration_s < train_s + 10, (duration_s, train_s)
    starts = sorted(r.info.start_time for r in runs)
    ends = sorted(r.info.end_time for r in runs)
    assert starts[1] >= ends[0] - 1000 and starts[2] >= ends[1] - 1000  # one after another
    ledger.dispose()
