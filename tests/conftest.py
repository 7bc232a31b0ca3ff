"""Shared fixtures: one embedded local Ray per test session, tiny studies, store locations."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests choose their own stores
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the session Ray: loopback only,
# as orchestrator.run.ray_connection.connect_ray

PG_URL = os.environ.get("SCALELAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (start-up costs ~5 s and ~800 MB)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 1024 * 1024
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh embedded store (SQLite MLflow + SQLite ledger + checkpoints) under tmp_path."""
    home = tmp_path / "store"
    monkeypatch.setenv("SCALELAB_HOME", str(home))
    from orchestrator.store.tracking import Settings

    return Settings.resolve(home=str(home))


def write_study(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


TINY_STUDY = """\
study: {name}
data: {{source: markov, vocab_size: 16, order: 1, seed: 0, seq_len: 16, val_tokens: 2048}}
model: {{d_head: 8, aspect_ratio: 8}}
grid:
  sizes: [{{n_layer: 1, d_model: 8}}, {{n_layer: 1, d_model: 16}}]
  tokens: [4096, 8192]
  moe: [{{experts: 1}}, {{experts: 4, top_k: 2}}]
train: {{batch_size: 8, lr: 1.0e-2, schedule: {schedule}}}
resources: {{num_cpus: 1, num_gpus: 0}}
"""


@pytest.fixture
def tiny_study(tmp_path):
    """A 8-run study (2 sizes x 2 budgets x dense/MoE) that trains in seconds."""

    def make(name: str = "tiny", schedule: str = "cosine") -> Path:
        return write_study(tmp_path / f"{name}.yaml", TINY_STUDY.format(name=name, schedule=schedule))

    return make


def pg_available() -> bool:
    from urllib.parse import urlparse

    from orchestrator.store.tracking import tcp_reachable

    u = urlparse(PG_URL)
    return tcp_reachable(u.hostname, u.port or 5432, timeout=2)


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database for one test; skips with a message when no server answers."""
    if not pg_available():
        pytest.skip(f"no PostgreSQL server answers at {PG_URL} (set SCALELAB_TEST_PG_URL)")
    import sqlalchemy as sa

    name = f"scalelab_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
