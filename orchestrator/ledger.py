"""The run ledger: the source of truth for every run key (state, attempts, MLflow run id,
checkpoint, error). SQL via SQLAlchemy Core: a SQLite file beside the MLflow store by default,
PostgreSQL when configured.

Fencing: each dispatch of a run gets a fresh `lease` token. A worker may write (progress, final
state, metrics through its sink) only while the ledger still holds its lease, so a task orphaned
by a killed driver cannot overwrite the attempt that replaced it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from trainer.redact import redact_text

TERMINAL = ("finished", "diverged")                 # results: never rerun
STATES = ("pending", "running", "finished", "diverged", "failed", "killed", "stopped")

metadata = sa.MetaData()
runs_table = sa.Table(
    "scalelab_runs", metadata,
    sa.Column("run_key", sa.String(64), primary_key=True),
    sa.Column("study", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False, default="point"),   # point | trunk
    sa.Column("trunk_key", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("lease", sa.String(64)),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("checkpoint_dir", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("tokens", sa.BigInteger),
    sa.Column("flops", sa.Float),
    sa.Column("tokens_done", sa.BigInteger, default=0),
    sa.Column("last_loss", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("flops_per_s", sa.Float),
    sa.Column("wall_time_s", sa.Float),
    sa.Column("node_id", sa.String(64)),
    sa.Column("pid", sa.Integer),                    # OS process of the current attempt
    sa.Column("device", sa.String(32)),
    sa.Column("spec_json", sa.Text),
    sa.Column("updated_at", sa.Float),
)
studies_table = sa.Table(
    "scalelab_studies", metadata,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("experiment_id", sa.String(64)),
    sa.Column("parent_run_id", sa.String(64)),
    sa.Column("cancel", sa.String(16)),              # None | graceful | now
    sa.Column("driver", sa.String(64)),
    sa.Column("updated_at", sa.Float),
)


@dataclass(frozen=True)
class LedgerRow:
    run_key: str
    study: str
    kind: str
    trunk_key: str | None
    state: str
    attempts: int
    lease: str | None
    mlflow_run_id: str | None
    checkpoint_dir: str | None
    error: str | None
    tokens: int | None
    flops: float | None
    tokens_done: int | None
    last_loss: float | None
    val_loss: float | None
    flops_per_s: float | None
    wall_time_s: float | None
    node_id: str | None
    device: str | None
    pid: int | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):                # many worker processes write at once
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


class Ledger:
    """Small facade over the two tables. Every method is one short transaction."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if create:
            for attempt in range(len(metadata.tables) + 2):
                try:
                    metadata.create_all(self.engine)
                    break
                except sa.exc.DatabaseError:  # another process created a table in between
                    if attempt == len(metadata.tables) + 1:
                        raise
                    time.sleep(0.05)
            _add_missing_columns(self.engine)

    # ---------------------------------------------------------------- studies
    def study(self, study: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(studies_table).where(studies_table.c.study == study)).first()
        return dict(row._mapping) if row else None

    def upsert_study(self, study: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        with self.engine.begin() as c:
            n = c.execute(studies_table.update().where(studies_table.c.study == study)
                          .values(**values)).rowcount
            if n == 0:
                c.execute(studies_table.insert().values(study=study, **values))

    def request_cancel(self, study: str, mode: str | None) -> None:
        self.upsert_study(study, cancel=mode)

    def cancel_requested(self, study: str) -> str | None:
        s = self.study(study)
        return s["cancel"] if s else None

    # ---------------------------------------------------------------- runs
    def ensure(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert planned runs that the ledger does not know yet (never touches existing ones)."""
        rows = list(rows)
        with self.engine.begin() as c:
            known = {r for (r,) in c.execute(sa.select(runs_table.c.run_key).where(
                runs_table.c.run_key.in_([r["run_key"] for r in rows])))} if rows else set()
            new = [dict(r, state="pending", attempts=0, updated_at=time.time())
                   for r in rows if r["run_key"] not in known]
            if new:
                c.execute(runs_table.insert(), new)

    def get(self, run_key: str) -> LedgerRow | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs_table).where(runs_table.c.run_key == run_key)).first()
        return _row(row) if row else None

    def rows(self, study: str | None = None, keys: Iterable[str] | None = None) -> list[LedgerRow]:
        q = sa.select(runs_table)
        if study is not None:
            q = q.where(runs_table.c.study == study)
        if keys is not None:
            q = q.where(runs_table.c.run_key.in_(list(keys)))
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def update(self, run_key: str, *, lease: str | None = None, **values: Any) -> bool:
        """Update a run; with `lease`, only if that lease is still the current one."""
        values["updated_at"] = time.time()
        if values.get("error"):              # stored errors never hold a password
            values["error"] = redact_text(values["error"])
        q = runs_table.update().where(runs_table.c.run_key == run_key)
        if lease is not None:
            q = q.where(runs_table.c.lease == lease)
        with self.engine.begin() as c:
            return c.execute(q.values(**values)).rowcount == 1

    def acquire(self, run_key: str) -> str:
        """Start a new attempt: a fresh lease fences off any older attempt still running."""
        lease = uuid.uuid4().hex
        with self.engine.begin() as c:
            c.execute(runs_table.update().where(runs_table.c.run_key == run_key).values(
                lease=lease, state="running", attempts=runs_table.c.attempts + 1, error=None,
                updated_at=time.time()))
        return lease

    def holds(self, run_key: str, lease: str) -> bool:
        with self.engine.connect() as c:
            cur = c.execute(sa.select(runs_table.c.lease).where(
                runs_table.c.run_key == run_key)).scalar()
        return cur == lease

    def dispose(self) -> None:
        self.engine.dispose()


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added after a ledger was created (e.g. `pid`): ALTER TABLE ADD COLUMN, once."""
    have = {c["name"] for c in sa.inspect(engine).get_columns(runs_table.name)}
    for col in runs_table.columns:
        if col.name not in have:
            with engine.begin() as c:
                c.execute(sa.text(f"ALTER TABLE {runs_table.name} ADD COLUMN {col.name} "
                                  f"{col.type.compile(engine.dialect)}"))


def _row(r: Any) -> LedgerRow:
    m = dict(r._mapping)
    m.pop("spec_json", None)
    m.pop("updated_at", None)
    return LedgerRow(**m)


def spec_json(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)
