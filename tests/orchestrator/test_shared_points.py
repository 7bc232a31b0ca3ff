"""Studies that share points in one store: a ledger keyed by (study, run_key), reuse of finished
points (`--no-reuse` retrains), grown grids, and the migration of ledgers keyed by run_key alone."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from orchestrator import load_study, run_study
from orchestrator.cli import main
from orchestrator.store.ledger import Ledger, make_engine
from tests.conftest import write_study

SMALL = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 1024}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: {sizes}
  tokens: {tokens}
train: {{batch_size: 8, lr: 1.0e-2, device: {device}, eval_interval_tokens: {interval}}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""


def small(
    tmp_path: Path,
    name: str,
    *,
    sizes="[{n_layer: 1, d_model: 8}]",
    tokens="[4096]",
    device="cpu",
    interval=1024,
    file: str | None = None,
) -> Path:
    return write_study(
        tmp_path / f"{file or name}.yaml",
        SMALL.format(name=name, sizes=sizes, tokens=tokens, device=device, interval=interval),
    )


def points(store, study: str) -> dict:
    """run_key -> MLflow point run of the study's experiment."""
    c = MlflowClient(store.tracking_uri)
    exp = c.get_experiment_by_name(study)
    runs = c.search_runs([exp.experiment_id], "tags.`scalelab.role` = 'point'", max_results=1000)
    return {r.data.tags["scalelab.run_key"]: r for r in runs}


def ledger_rows(store, study: str) -> dict:
    ledger = Ledger(store.ledger_uri)
    try:
        return {r.run_key: r for r in ledger.rows(study)}
    finally:
        ledger.dispose()


def history(store, run) -> list[tuple[int, float]]:
    c = MlflowClient(store.tracking_uri)
    return [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "val_loss")]


def test_a_point_finished_in_another_study_is_reused_not_retrained(tmp_path, store, ray_session, capsys):
    first = small(tmp_path, "first", tokens="[4096, 8192]")
    assert main(["run", str(first), "--no-progress"]) == 0
    # the same points under a new name, plus one new size: only the new size trains
    second = small(
        tmp_path,
        "second",
        tokens="[4096, 8192]",
        sizes="[{n_layer: 1, d_model: 8}, {n_layer: 1, d_model: 16}]",
    )
    assert main(["run", str(second), "--no-progress"]) == 0
    assert "2 point(s) reused" in capsys.readouterr().out

    src, dst = points(store, "first"), points(store, "second")
    rows = ledger_rows(store, "second")
    assert len(dst) == 4 and set(src) < set(dst)
    for key, run in src.items():
        copy = dst[key]
        assert copy.info.run_id != run.info.run_id
        assert copy.data.tags["scalelab.reused_from"] == run.info.run_id
        assert copy.info.status == "FINISHED" and copy.data.tags["scalelab.outcome"] == "finished"
        assert copy.data.params == run.data.params
        assert history(store, copy) == history(store, run)  # every step, every value
        assert rows[key].state == "finished" and rows[key].attempts == 0
        assert rows[key].mlflow_run_id == copy.info.run_id
    for key in set(dst) - set(src):
        assert "scalelab.reused_from" not in dst[key].data.tags and rows[key].attempts == 1
    assert {r.attempts for r in ledger_rows(store, "first").values()} == {1}


def test_no_reuse_retrains_the_shared_points(tmp_path, store, ray_session):
    assert main(["run", str(small(tmp_path, "orig")), "--no-progress"]) == 0
    assert main(["run", str(small(tmp_path, "again")), "--no-progress", "--no-reuse"]) == 0
    (run,) = points(store, "again").values()
    assert "scalelab.reused_from" not in run.data.tags and run.info.status == "FINISHED"
    assert [r.attempts for r in ledger_rows(store, "again").values()] == [1]


def test_growing_a_study_grid_trains_only_the_new_points(tmp_path, store, ray_session):
    path = small(tmp_path, "grow", tokens="[4096]")
    assert run_study(load_study(path), store, show_progress=False).exit_code == 0
    before = points(store, "grow")
    ckpts = {p: p.stat().st_mtime_ns for p in Path(store.checkpoint_root).rglob("*.pt")}
    path = small(tmp_path, "grow", tokens="[4096, 8192]")
    assert run_study(load_study(path), store, show_progress=False).exit_code == 0
    after, rows = points(store, "grow"), ledger_rows(store, "grow")
    assert len(after) == 2 and set(before) < set(after)
    for key, run in before.items():
        assert after[key].info.run_id == run.info.run_id and rows[key].attempts == 1
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts  # nothing retrained


OLD_SCHEMA = """\
CREATE TABLE scalelab_runs (
    run_key VARCHAR(64) NOT NULL, study VARCHAR(200) NOT NULL, kind VARCHAR(16) NOT NULL,
    trunk_key VARCHAR(64), state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL,
    lease VARCHAR(64), mlflow_run_id VARCHAR(64), checkpoint_dir TEXT, error TEXT,
    tokens BIGINT, flops FLOAT, tokens_done BIGINT, last_loss FLOAT, val_loss FLOAT,
    flops_per_s FLOAT, wall_time_s FLOAT, node_id VARCHAR(64), device VARCHAR(32),
    spec_json TEXT, updated_at FLOAT, PRIMARY KEY (run_key))"""


def _old_ledger(url: str) -> None:
    """A ledger as scalelab wrote it before (study, run_key): keyed by run_key, no pid column."""
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(sa.text(OLD_SCHEMA))
        c.execute(sa.text("CREATE INDEX ix_scalelab_runs_study ON scalelab_runs (study)"))
        c.execute(
            sa.text(
                "INSERT INTO scalelab_runs (run_key, study, kind, state, attempts, "
                "mlflow_run_id, val_loss) VALUES ('k1', 'old', 'point', 'finished', 1, "
                "'r1', 2.5), ('k2', 'old', 'point', 'failed', 3, 'r2', NULL)"
            )
        )
    engine.dispose()


def _check_migrated(url: str) -> None:
    ledger = Ledger(url)
    try:
        engine = ledger.engine
        assert sa.inspect(engine).get_pk_constraint("scalelab_runs")["constrained_columns"] == [
            "study",
            "run_key",
        ]
        old = {r.run_key: r for r in ledger.rows("old")}
        assert (
            old["k1"].state == "finished"
            and old["k1"].mlflow_run_id == "r1"
            and old["k1"].val_loss == 2.5
            and old["k2"].attempts == 3
        )  # old rows keep working
        assert ledger.ensure("new", [{"run_key": "k1", "kind": "point"}]) == ["k1"]
        assert ledger.update("new", "k1", state="running") and ledger.get("old", "k1").state == "finished"
        assert ledger.finished_elsewhere("new", ["k1"])["k1"].study == "old"
    finally:
        ledger.dispose()
    Ledger(url).dispose()  # idempotent: a second open is a no-op


def test_an_old_sqlite_ledger_is_migrated_keeping_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _old_ledger(url)
    _check_migrated(url)


def test_an_old_postgresql_ledger_is_migrated_keeping_its_rows(pg_database):
    _old_ledger(pg_database)
    _check_migrated(pg_database)
