"""What a user sees of a study in MLflow: the saved scaling-law view, the point's accounting as
numeric metrics, and honest run durations (runs are created when dispatched)."""

from __future__ import annotations

import json
import math

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import load_study, run_study
from orchestrator.cli import main
from orchestrator.store.ledger import Ledger
from orchestrator.store.mlflow_view import (
    COLUMNS,
    FIT_COLUMNS,
    FIT_VIEW_KEY,
    PARENT_FILTER,
    RUN_COLOR_TAG,
    TAG_PREFIX,
    VIEW_KEY,
    VIEW_VERSION,
    compare_url,
    decode_state,
    ensure_view,
    fit_view_state,
    log10_metrics,
    run_color,
    view_state,
    view_tag,
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
    assert [c["type"] for c in state["compareRunCharts"]] == ["LINE", "SCATTER", "SCATTER"]
    # MLflow's scatter axes are linear: the log-log scatters plot logged log10 metrics
    axes = [(c["xaxis"]["key"], c["yaxis"]["key"]) for c in state["compareRunCharts"][1:]]
    assert axes == [("log10_n_params_active", "log10_val_loss"), ("log10_flops", "log10_val_loss")]
    assert view_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=scalelab-scaling-law"
        "&workflowType=machine_learning"
    )


def test_fit_results_view_opens_on_the_compare_experiments_table():
    state = fit_view_state()
    assert state["searchFilter"] == PARENT_FILTER  # the parent run, where `report` logs the fit
    assert state["selectedColumns"][:2] == ["metrics.`fit.alpha`", "metrics.`fit.beta`"]
    assert state["selectedColumns"] == [key for _, key in FIT_COLUMNS]
    assert compare_url("http://127.0.0.1:5000", ["2", "10"]) == (
        "http://127.0.0.1:5000/#/compare-experiments/s?experiments=%5B%2210%22%2C%222%22%5D"
        "&viewStateShareKey=scalelab-fit-results&workflowType=machine_learning"
    )


def test_log10_metrics_and_one_colour_per_size():
    logs = log10_metrics({"n_params": 1e5, "tokens": 2e6, "val_loss": 2.0, "flops": 0.0, "other": 10})
    assert logs == pytest.approx(
        {"log10_n_params": 5.0, "log10_tokens": math.log10(2e6), "log10_val_loss": math.log10(2)}
    )
    assert run_color(1000) == run_color(1100)  # one half-octave: one colour
    sizes = [1e3 * 2**i for i in range(6)]  # a grid of sizes 2x apart: all distinct
    assert len({run_color(n) for n in sizes}) == len(sizes)
    assert all(c.startswith("#") and len(c) == 7 for c in map(run_color, sizes))


class _Experiments:
    """The two MlflowClient calls ensure_view makes, on a dict of tags."""

    def __init__(self, tags):
        self.tags = dict(tags)

    def get_experiment(self, _id):
        return type("E", (), {"tags": dict(self.tags)})()

    def set_experiment_tag(self, _id, key, value):
        self.tags[key] = value


def test_ensure_view_upgrades_a_view_scalelab_wrote_before_and_keeps_the_current_one():
    old = json.dumps({"name": "Scaling law", "createdAt": 1, "updatedAt": 1, "state": "deflate;x"})
    c = _Experiments({TAG_PREFIX + VIEW_KEY: old})
    ensure_view(c, "1")
    for key in (VIEW_KEY, FIT_VIEW_KEY):
        assert json.loads(c.tags[TAG_PREFIX + key])["scalelabViewVersion"] == VIEW_VERSION
    assert decode_state(json.loads(c.tags[TAG_PREFIX + VIEW_KEY])["state"]) == view_state()
    current = view_tag(now_ms=5)[1]
    c = _Experiments({TAG_PREFIX + VIEW_KEY: current, TAG_PREFIX + FIT_VIEW_KEY: "not json"})
    ensure_view(c, "1")
    assert c.tags[TAG_PREFIX + VIEW_KEY] == current and c.tags[TAG_PREFIX + FIT_VIEW_KEY] == "not json"


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
    for r in runs:  # the view's log-log scatters and colours
        m = r.data.metrics
        for k in ("n_params", "n_params_active", "tokens", "flops", "val_loss"):
            assert m[f"log10_{k}"] == pytest.approx(math.log10(m[k]))
        assert r.data.tags[RUN_COLOR_TAG] == run_color(m["n_params_active"])
    colours = {r.data.metrics["n_params_active"]: r.data.tags[RUN_COLOR_TAG] for r in runs}
    assert len(set(colours.values())) == len(colours) > 1  # one colour per N (active)
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
