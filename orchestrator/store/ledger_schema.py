"""The ledger's tables, and how a ledger database is opened, created and migrated.

SQL via SQLAlchemy Core: a SQLite file beside the MLflow store by default, PostgreSQL when
configured. Creation is safe from many processes at once (the driver, `status`, workers), and
ledgers of older versions gain the columns and tables added since, keeping every row.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from .states import RunState
from .tracking import sqlite_path

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


rounds_table = sa.Table(
    "scalelab_rounds",  # `run --adaptive`: each round's explicit runs, written before it runs
    metadata,
    sa.Column("study", sa.String(200), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),  # 1-based
    sa.Column("runs_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float),
)


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
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


def create_schema(engine: sa.Engine) -> None:
    """Create what is missing (tables, columns added since) and migrate older layouts; safe
    while other processes do the same."""
    for attempt in range(len(metadata.tables) + 2):
        try:
            metadata.create_all(engine)
            break
        except sa.exc.DatabaseError:  # another process created a table in between
            if attempt == len(metadata.tables) + 1:
                raise
            time.sleep(0.05)
    _add_missing_columns(engine)
    _migrate_primary_key(engine)


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
