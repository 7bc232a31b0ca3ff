"""MLflow (and the ledger) on a real PostgreSQL: the analysis reads back what SQLite gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.data import load_mlflow
from orchestrator import Settings, load_study, run_study
from orchestrator.store.ledger import Ledger
from tests.conftest import TINY_STUDY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def dense_study(tmp_path, name: str, sizes: str = "[{n_layer: 1, d_model: 8}, {n_layer: 1, d_model: 16}]"):
    body = TINY_STUDY.format(name=name, schedule="cosine")
    body = body.replace("moe: [{experts: 1}, {experts: 4, top_k: 2}]", "moe: [{experts: 1}]")
    body = body.replace("sizes: [{n_layer: 1, d_model: 8}, {n_layer: 1, d_model: 16}]", f"sizes: {sizes}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return load_study(path)


def frame(uri: str, study: str) -> pd.DataFrame:
    df = load_mlflow(study, uri).frame
    return df.drop(columns=["run_id"]).sort_values("run_key").reset_index(drop=True)


def test_postgres_store_matches_sqlite(tmp_path, pg_database, ray_session, monkeypatch):
    monkeypatch.delenv("SCALELAB_LEDGER_URI", raising=False)
    cfg = dense_study(tmp_path, "pgparity")  # 4 runs, 2 at a time on the session's Ray
    lite = Settings.resolve(home=str(tmp_path / "lite"))
    pg = Settings.resolve(tracking_uri=pg_database, home=str(tmp_path / "pg"))
    assert pg.ledger_uri == pg_database  # the ledger lives beside MLflow's tables
    assert run_study(cfg, lite, show_progress=False).exit_code == 0
    assert run_study(cfg, pg, show_progress=False).exit_code == 0

    a, b = frame(lite.tracking_uri, "pgparity"), frame(pg.tracking_uri, "pgparity")
    assert len(a) == len(b) == 4
    assert list(a["run_key"]) == list(b["run_key"])
    assert sorted(a.columns) == sorted(b.columns)
    b = b[a.columns]
    numeric = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])]
    other = [c for c in a.columns if c not in numeric]
    pd.testing.assert_frame_equal(a[other], b[other])
    np.testing.assert_allclose(
        a[numeric].to_numpy(float), b[numeric].to_numpy(float), rtol=0, atol=1e-6, equal_nan=True
    )

    ledger = Ledger(pg.ledger_uri, create=False)
    rows = [r for r in ledger.rows("pgparity") if r.kind == "point"]
    ledger.dispose()
    assert sorted(r.state for r in rows) == ["finished"] * 4
    engine = sa.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:
        tables = set(sa.inspect(c).get_table_names())
        n = c.execute(
            sa.text(
                "SELECT count(*) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                "WHERE m.key = 'val_loss'"
            )
        ).scalar()
    engine.dispose()
    assert {"scalelab_runs", "scalelab_studies", "runs", "metrics"} <= tables
    assert n > 4


def test_postgres_psycopg2_driver(tmp_path, pg_database, ray_session, monkeypatch):
    pytest.importorskip("psycopg2", reason="psycopg2-binary is in the test extra")
    monkeypatch.delenv("SCALELAB_LEDGER_URI", raising=False)
    uri = pg_database.replace("postgresql://", "postgresql+psycopg2://", 1)
    cfg = dense_study(tmp_path, "pg2", sizes="[{n_layer: 1, d_model: 8}]")
    settings = Settings.resolve(tracking_uri=uri, home=str(tmp_path / "pg2"))
    assert settings.ledger_uri == uri
    out = run_study(cfg, settings, show_progress=False)
    assert out.exit_code == 0 and sorted(out.states.values()) == ["finished", "finished"]
    df = frame(uri, "pg2")
    assert len(df) == 2 and np.isfinite(df["loss"]).all()
