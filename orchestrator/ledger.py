"""The run ledger: the source of truth for every (study, run key) (state, attempts, MLflow run
id, checkpoint, error). SQL via SQLAlchemy Core: a SQLite file beside the MLflow store by default,
PostgreSQL when configured. The same point (run key) may appear in several studies of one store,
one row each; a finished row of one study lets another reuse its result.

Fencing: each dispatch of a run gets a fresh `lease` token. A worker may write (progress, final
state, metrics through its sink) only while the ledger still holds its lease, so a task orphaned
by a killed driver cannot overwrite the attempt that replaced it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from trainer.redact import redact_text

from .states import LEDGER_STATES, RunState

TERMINAL = tuple(s.value for s in (RunState.FINISHED, RunState.DIVERGED))  # results: never rerun
STATES = tuple(s.value for s in LEDGER_STATES)  # the stored values (see states.RunState)

metadata = sa.MetaData()
runs_table = sa.Table(
    "scalelab_runs",
    metadata,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("run_key", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False, default="point"),  # point | trunk
    sa.Column("trunk_key", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False, default=RunState.PENDING.value),
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
    sa.Column("pid", sa.Integer),  # OS process of the current attempt
    sa.Column("device", sa.String(32)),
    sa.Column("spec_json", sa.Text),
    sa.Column("updated_at", sa.Float),
)
studies_table = sa.Table(
    "scalelab_studies",
    metadata,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("experiment_id", sa.String(64)),
    sa.Column("parent_run_id", sa.String(64)),
    sa.Column("cancel", sa.String(16)),  # None | graceful | now
    sa.Column("driver", sa.String(64)),  # token of the driver holding the study
    sa.Column("driver_host", sa.String(255)),
    sa.Column("driver_pid", sa.Integer),
    sa.Column("driver_heartbeat", sa.Float),  # time.time() of its last heartbeat
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
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # many worker processes write at once
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
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
            _migrate_primary_key(self.engine)

    # ---------------------------------------------------------------- studies
    def study(self, study: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(studies_table).where(studies_table.c.study == study)).first()
        return dict(row._mapping) if row else None

    def upsert_study(self, study: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        with self.engine.begin() as c:
            n = c.execute(
                studies_table.update().where(studies_table.c.study == study).values(**values)
            ).rowcount
            if n == 0:
                c.execute(studies_table.insert().values(study=study, **values))

    def request_cancel(self, study: str, mode: str | None) -> None:
        self.upsert_study(study, cancel=mode)

    def cancel_requested(self, study: str) -> str | None:
        s = self.study(study)
        return s["cancel"] if s else None

    def claim_driver(
        self, study: str, token: str, host: str, pid: int, alive: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Make `token` the study's driver unless `alive(holder)` says another one holds it.
        Compare-and-set, so two drivers starting together cannot both win. Returns None when
        claimed, else the live holder's study row."""
        for _ in range(10):
            cur = self.study(study)
            if cur is not None and cur["driver"] and alive(cur):
                return cur
            values = {
                "driver": token,
                "driver_host": host,
                "driver_pid": pid,
                "driver_heartbeat": time.time(),
                "updated_at": time.time(),
            }
            try:
                with self.engine.begin() as c:
                    if cur is None:
                        c.execute(studies_table.insert().values(study=study, **values))
                        return None
                    held = studies_table.c.driver
                    q = studies_table.update().where(
                        studies_table.c.study == study,
                        held.is_(None) if cur["driver"] is None else held == cur["driver"],
                    )
                    if c.execute(q.values(**values)).rowcount == 1:
                        return None
            except sa.exc.IntegrityError:  # a concurrent driver inserted the row first
                pass
        return self.study(study)

    def driver_heartbeat(self, study: str, token: str) -> bool:
        """Renew the study's driver lease; False if another driver took it over."""
        with self.engine.begin() as c:
            return (
                c.execute(
                    studies_table.update()
                    .where(studies_table.c.study == study, studies_table.c.driver == token)
                    .values(driver_heartbeat=time.time())
                ).rowcount
                == 1
            )

    def release_driver(self, study: str, token: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                studies_table.update()
                .where(studies_table.c.study == study, studies_table.c.driver == token)
                .values(driver=None, driver_pid=None, driver_heartbeat=None, updated_at=time.time())
            )

    # ---------------------------------------------------------------- runs
    def ensure(self, study: str, rows: Iterable[dict[str, Any]]) -> list[str]:
        """Insert the planned runs of `study` that it does not have yet (never touches existing
        rows, nor other studies' rows of the same key). Returns the keys inserted."""
        rows = [dict(r, study=study) for r in rows]
        with self.engine.begin() as c:
            known = {
                k for (k,) in c.execute(sa.select(runs_table.c.run_key).where(runs_table.c.study == study))
            }
            new = [
                dict(r, state=RunState.PENDING.value, attempts=0, updated_at=time.time())
                for r in rows
                if r["run_key"] not in known
            ]
            if new:
                c.execute(runs_table.insert(), new)
        return [r["run_key"] for r in new]

    def get(self, study: str, run_key: str) -> LedgerRow | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs_table).where(*_pk(study, run_key))).first()
        return _row(row) if row else None

    def rows(self, study: str | None = None, keys: Iterable[str] | None = None) -> list[LedgerRow]:
        q = sa.select(runs_table)
        if study is not None:
            q = q.where(runs_table.c.study == study)
        if keys is not None:
            q = q.where(runs_table.c.run_key.in_(list(keys)))
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def specs(self, study: str | None = None) -> dict[tuple[str, str], str]:
        """(study, run_key) -> the run's spec JSON, for the rows that have one."""
        q = sa.select(runs_table.c.study, runs_table.c.run_key, runs_table.c.spec_json).where(
            runs_table.c.spec_json.is_not(None)
        )
        if study is not None:
            q = q.where(runs_table.c.study == study)
        with self.engine.connect() as c:
            return {(s, k): j for s, k, j in c.execute(q)}

    def finished_elsewhere(self, study: str, keys: Iterable[str]) -> dict[str, LedgerRow]:
        """run_key -> a finished row of another study (the result a study can reuse)."""
        q = sa.select(runs_table).where(
            runs_table.c.run_key.in_(list(keys)),
            runs_table.c.study != study,
            runs_table.c.state == RunState.FINISHED.value,
            runs_table.c.mlflow_run_id.is_not(None),
        )
        with self.engine.connect() as c:
            return {r.run_key: r for r in map(_row, c.execute(q.order_by(runs_table.c.updated_at)))}

    def update(self, study: str, run_key: str, *, lease: str | None = None, **values: Any) -> bool:
        """Update a run; with `lease`, only if that lease is still the current one."""
        values["updated_at"] = time.time()
        if "state" in values:  # stored as the plain value; an unknown one raises
            values["state"] = RunState(values["state"]).value
        if values.get("error"):  # stored errors never hold a password
            values["error"] = redact_text(values["error"])
        q = runs_table.update().where(*_pk(study, run_key))
        if lease is not None:
            q = q.where(runs_table.c.lease == lease)
        with self.engine.begin() as c:
            return c.execute(q.values(**values)).rowcount == 1

    def acquire(self, study: str, run_key: str) -> str:
        """Start a new attempt: a fresh lease fences off any older attempt still running."""
        lease = uuid.uuid4().hex
        with self.engine.begin() as c:
            c.execute(
                runs_table.update()
                .where(*_pk(study, run_key))
                .values(
                    lease=lease,
                    state=RunState.RUNNING.value,
                    attempts=runs_table.c.attempts + 1,
                    error=None,
                    updated_at=time.time(),
                )
            )
        return lease

    def holds(self, study: str, run_key: str, lease: str) -> bool:
        with self.engine.connect() as c:
            cur = c.execute(sa.select(runs_table.c.lease).where(*_pk(study, run_key))).scalar()
        return cur == lease

    def rekey(self, study: str, old: str, new: str, **values: Any) -> None:
        """Give a row a new run key (a key computed under an older scheme)."""
        with self.engine.begin() as c:
            c.execute(
                runs_table.update()
                .where(*_pk(study, old))
                .values(run_key=new, updated_at=time.time(), **values)
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _pk(study: str, run_key: str) -> tuple[Any, Any]:
    return runs_table.c.study == study, runs_table.c.run_key == run_key


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added after a ledger was created (e.g. `pid`): ALTER TABLE ADD COLUMN, once."""
    inspector = sa.inspect(engine)
    for table in (runs_table, studies_table):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have:
                with engine.begin() as c:
                    c.execute(
                        sa.text(
                            f"ALTER TABLE {table.name} ADD COLUMN {col.name} "
                            f"{col.type.compile(engine.dialect)}"
                        )
                    )


def _migrate_primary_key(engine: sa.Engine) -> None:
    """Ledgers made before studies could share points are keyed by run_key alone: rekey the
    runs table by (study, run_key), keeping every row; atomic, and a no-op once done."""
    if sa.inspect(engine).get_pk_constraint(runs_table.name)["constrained_columns"] != ["run_key"]:
        return
    if engine.dialect.name == "sqlite":
        _migrate_sqlite(engine)
        return
    with engine.begin() as c:
        c.execute(sa.text(f"LOCK TABLE {runs_table.name} IN ACCESS EXCLUSIVE MODE"))
        pk = sa.inspect(c).get_pk_constraint(runs_table.name)
        if pk["constrained_columns"] == ["run_key"]:  # not migrated by a concurrent driver
            c.execute(
                sa.text(
                    f'ALTER TABLE {runs_table.name} DROP CONSTRAINT "{pk["name"]}", '
                    "ADD PRIMARY KEY (study, run_key)"
                )
            )


def _migrate_sqlite(engine: sa.Engine) -> None:
    """SQLite cannot change a primary key: copy into a new table in one IMMEDIATE transaction."""
    cols = ", ".join(c.name for c in runs_table.columns)
    ddl = str(sa.schema.CreateTable(runs_table).compile(engine))
    raw = engine.raw_connection()
    con: Any = raw.driver_connection  # sqlite3.Connection
    level, con.isolation_level = con.isolation_level, None  # explicit BEGIN/COMMIT
    try:
        cur = con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        pk = [r[1] for r in cur.execute("PRAGMA table_info(scalelab_runs)") if r[5]]
        if pk == ["run_key"]:
            cur.execute("ALTER TABLE scalelab_runs RENAME TO scalelab_runs_old")
            for (name,) in cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                "tbl_name = 'scalelab_runs_old' AND sql IS NOT NULL"
            ).fetchall():
                cur.execute(f'DROP INDEX "{name}"')
            cur.execute(ddl)
            cur.execute(f"INSERT INTO scalelab_runs ({cols}) SELECT {cols} FROM scalelab_runs_old")
            cur.execute("DROP TABLE scalelab_runs_old")
        cur.execute("COMMIT")
    except BaseException:
        con.rollback()
        raise
    finally:
        con.isolation_level = level
        raw.close()


def _row(r: Any) -> LedgerRow:
    m = dict(r._mapping)
    m.pop("spec_json", None)
    m.pop("updated_at", None)
    return LedgerRow(**m)


def spec_json(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)
