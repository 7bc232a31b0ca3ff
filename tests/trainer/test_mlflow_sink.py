"""MlflowSink against a real SQLite MLflow store (created once per module: migration is slow)."""

import pytest

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from trainer import MlflowSink, MlflowSinkError, train  # noqa: E402

from .conftest import tiny_spec  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("trainer-tests")
    return uri, client, exp


def _run(store):
    uri, client, exp = store
    return client.create_run(exp).info.run_id


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_batches_buffer_and_resume_dedup(store):
    uri, client, _ = store
    run_id = _run(store)
    sink = MlflowSink(uri, run_id)
    sink.log_params({"a": 1, "b": "x"})
    sink.set_tags({"scalelab.device": "cpu"})
    for step in range(0, 3000, 100):
        sink.log_metrics({"loss": step / 1000, "lr": 0.1}, step=step)
    assert sink.pending == 60 and not _history(client, run_id, "loss")  # buffered until flush
    sink.flush()
    assert sink.pending == 0
    run = client.get_run(run_id)
    assert run.data.params == {"a": "1", "b": "x"} and run.data.tags["scalelab.device"] == "cpu"
    assert [s for s, _ in _history(client, run_id, "loss")] == list(range(0, 3000, 100))

    # a resumed attempt recomputes steps after its checkpoint (1500) and continues
    again = MlflowSink(uri, run_id, resume=True)
    for step in range(1500, 4000, 100):
        again.log_metrics({"loss": step / 1000}, step=step)
    again.flush()
    steps = [s for s, _ in _history(client, run_id, "loss")]
    assert steps == list(range(0, 4000, 100))  # no duplicates, no gaps
    assert again.points_dropped == 15


def test_unreachable_store_keeps_points_and_retries(store, monkeypatch):
    uri, client, _ = store
    run_id = _run(store)
    sink = MlflowSink(uri, run_id, max_buffer_points=50)
    real = sink.client.log_batch
    calls = []

    def down(*a, **k):
        calls.append(1)
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(sink.client, "log_batch", down)
    for step in range(10):
        sink.log_metrics({"loss": 1.0}, step=step)
    sink.flush()  # fails quietly, keeps the points
    sink.flush()  # within the backoff: no new attempt
    assert sink.pending == 10 and len(calls) == 1
    monkeypatch.setattr(sink.client, "log_batch", real)
    sink.close(timeout_s=5)
    assert [s for s, _ in _history(client, run_id, "loss")] == list(range(10))

    monkeypatch.setattr(sink.client, "log_batch", down)
    with pytest.raises(MlflowSinkError, match="max_buffer_points=50"):
        for step in range(10, 100):
            sink.log_metrics({"loss": 1.0}, step=step)


def test_changed_param_is_a_clear_error(store):
    uri, _, _ = store
    run_id = _run(store)
    sink = MlflowSink(uri, run_id)
    sink.log_params({"n": 1})
    with pytest.raises(MlflowSinkError, match="rejected"):
        sink.log_params({"n": 2})


def test_train_logs_to_mlflow_and_resumes_same_run(store, tmp_path):
    uri, client, _ = store
    run_id = _run(store)
    spec = tiny_spec(tokens=4096, checkpoint_interval_tokens=1024)
    n = [0]
    res = train(
        spec,
        MlflowSink(uri, run_id),
        checkpoint_dir=tmp_path,
        should_stop=lambda: n.__setitem__(0, n[0] + 1) or n[0] >= 2,
    )
    assert res.status == "stopped"
    from trainer import checkpoint_info

    info = checkpoint_info(tmp_path)
    assert info["run_id"] == run_id and info["tokens"] == res.tokens
    res = train(spec, MlflowSink(uri, info["run_id"], resume=True), checkpoint_dir=tmp_path)
    assert res.status == "finished", res.message
    steps = [s for s, _ in _history(client, run_id, "train_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 4096
    assert _history(client, run_id, "val_loss")[-1] == (4096, pytest.approx(res.val_loss))
    assert "true_entropy" in client.get_run(run_id).data.params


def test_a_batch_committed_but_unacknowledged_is_not_duplicated(store):
    """A timeout after the store committed (client retries, overloaded server) must not make the
    next send write the same points again."""
    uri, client, _ = store
    run_id = _run(store)
    sink = MlflowSink(uri, run_id)
    real = sink.client.log_batch
    calls = {"n": 0}

    def commit_then_time_out(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1 and kwargs.get("metrics"):
            raise ConnectionError("read timed out")

    sink.client.log_batch = commit_then_time_out
    for step in range(10):
        sink.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    sink.flush()  # committed, but reported as failed: kept buffered
    assert sink.pending == 10
    for step in range(10, 15):
        sink.log_metrics({"loss": 0.05}, step=step)
    sink.close(timeout_s=10)
    steps = [s for s, _ in _history(client, run_id, "loss")]
    assert steps == list(range(15))  # every point once
