"""The run ledger: the source of truth for every (study, run key) (state, attempts, MLflow run
id, checkpoint, error), and for each study's driver and adaptive rounds. The same point (run
key) may appear in several studies of one store, one row each; a finished row of one study lets
another reuse its result.

`Ledger` is the store: the tables of every study (see ledger_schema). `Ledger.for_study(name)`
gives a `StudyLedger`: one study's snapshot and the named transitions that move its runs
between states. Every state a run takes is written here and nowhere else:

    PENDING --start_attempt--> RUNNING --finish/diverge--> FINISHED | DIVERGED   (results)
                                       --fail-----------> FAILED  (retried by a later attempt)
                                       --kill-----------> KILLED  (cancel --now, Ctrl-C)
    any non-result --reset--> PENDING (its MLflow run was lost)
    PENDING --adopt_result / reuse--> FINISHED | DIVERGED (a result MLflow or another study holds)

Fencing: each attempt gets a fresh `lease` token. A worker may write (progress, final state,
metrics through its sink) only while the ledger still holds its lease, so a task orphaned by a
killed driver cannot overwrite the attempt that replaced it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from trainer.redact import redact_text

from .ledger_schema import create_schema, make_engine, rounds_table, runs_table, studies_table
from .states import LEDGER_STATES, TERMINAL, RunState

__all__ = ["Ledger", "LedgerRow", "StudyLedger", "Snapshot", "AttemptEnd", "TERMINAL", "make_engine"]
STATES = tuple(s.value for s in LEDGER_STATES)  # the stored values (see states.RunState)


@dataclass(frozen=True)
class LedgerRow:
    run_key: str
    study: str
    kind: str  # point | trunk
    trunk_key: str | None
    state: RunState
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
        """A result (finished or diverged): never run again."""
        return self.state.is_result

    def as_seen_without_driver(self) -> LedgerRow:
        """The row as `plan`/`status` show it when no live driver holds the study: a run left
        RUNNING by a driver that is gone is INTERRUPTED (a view; nothing is written)."""
        return replace(self, state=RunState.INTERRUPTED) if self.state is RunState.RUNNING else self


@dataclass(frozen=True)
class Snapshot:
    """One read of a study: its rows by run key, and the cancel request (None | graceful | now)."""

    rows: dict[str, LedgerRow]
    cancel: str | None = None


@dataclass(frozen=True)
class AttemptEnd:
    """What an attempt measured, written with the state it ended in."""

    error: str | None = None
    val_loss: float | None = None
    wall_time_s: float | None = None
    flops_per_s: float | None = None
    device: str | None = None
    tokens_done: int | None = None

    def values(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "val_loss": self.val_loss,
            "wall_time_s": self.wall_time_s,
            "flops_per_s": self.flops_per_s,
            "device": self.device,
            "tokens_done": self.tokens_done,
        }


class Ledger:
    """The store: small facade over the tables, every method one short transaction. Runs move
    between states through `for_study(name)`; `update` is the raw write beneath it."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if create:
            create_schema(self.engine)

    def for_study(self, study: str) -> StudyLedger:
        return StudyLedger(self, study)

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
        """Insert the planned runs of `study` that it does not have yet, PENDING (never touches
        existing rows, nor other studies' rows of the same key). Returns the keys inserted."""
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
        with self.engine.connect() as c:
            return _select_rows(c, study, keys)

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
        """Write a run's columns; with `lease`, only if that lease is still the current one.
        The raw write: product code moves runs through StudyLedger's named transitions."""
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


class StudyLedger:
    """One study's runs: a snapshot to read, and the named transitions that move a run between
    states (the only writers of a run's state). A transition given a `lease` writes only while
    that attempt still holds it and returns whether it did."""

    def __init__(self, ledger: Ledger, study: str):
        self.ledger, self.study = ledger, study

    # ---------------------------------------------------------------- reads
    def snapshot(self) -> Snapshot:
        """Every row of the study and its cancel request, in one read."""
        with self.ledger.engine.connect() as c:
            rows = {r.run_key: r for r in _select_rows(c, self.study, None)}
            cancel = c.execute(
                sa.select(studies_table.c.cancel).where(studies_table.c.study == self.study)
            ).scalar()
        return Snapshot(rows, cancel)

    def rows_of(self, keys: Iterable[str]) -> dict[str, LedgerRow]:
        """Some rows of the study (a work item's), by run key."""
        with self.ledger.engine.connect() as c:
            return {r.run_key: r for r in _select_rows(c, self.study, keys)}

    def row(self, key: str) -> LedgerRow | None:
        return self.ledger.get(self.study, key)

    def info(self) -> dict[str, Any] | None:
        """The study's own row (fingerprint, MLflow ids, cancel request, driver)."""
        return self.ledger.study(self.study)

    def holds(self, key: str, lease: str) -> bool:
        return self.ledger.holds(self.study, key, lease)

    def cancel_requested(self) -> str | None:
        return self.ledger.cancel_requested(self.study)

    # ---------------------------------------------------------------- the study
    def record_study(self, **values: Any) -> None:
        """fingerprint, experiment_id, parent_run_id as record_plan made them."""
        self.ledger.upsert_study(self.study, **values)

    def request_cancel(self, mode: str | None) -> None:
        """graceful (no new runs), now (running ones checkpoint and stop), None (clear)."""
        self.ledger.request_cancel(self.study, mode)

    def plan(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        """Insert the planned runs not in the ledger yet, PENDING; returns their keys."""
        return self.ledger.ensure(self.study, rows)

    # ---------------------------------------------------------------- transitions
    def start_attempt(self, key: str) -> str:
        """RUNNING under a fresh lease (attempts + 1, the last error cleared); returns it."""
        return self.ledger.acquire(self.study, key)

    def record_mlflow_run(self, key: str, run_id: str) -> None:
        self.ledger.update(self.study, key, mlflow_run_id=run_id)

    def record_worker(self, key: str, lease: str, *, node_id: str, pid: int) -> bool:
        """Where the attempt runs (Ray node, OS process)."""
        return self.ledger.update(self.study, key, lease=lease, node_id=node_id, pid=pid)

    def progress(self, key: str, lease: str, *, tokens_done: int, last_loss: float | None) -> bool:
        return self.ledger.update(self.study, key, lease=lease, tokens_done=tokens_done, last_loss=last_loss)

    def finish(self, key: str, *, lease: str | None = None, end: AttemptEnd | None = None) -> bool:
        return self._move(key, RunState.FINISHED, lease, end.values() if end else {})

    def diverge(self, key: str, *, lease: str | None = None, end: AttemptEnd | None = None) -> bool:
        return self._move(key, RunState.DIVERGED, lease, end.values() if end else {})

    def fail(
        self, key: str, error: str | None, *, lease: str | None = None, end: AttemptEnd | None = None
    ) -> bool:
        """FAILED with its error (a traceback); a later attempt may retry it."""
        return self._move(key, RunState.FAILED, lease, {**(end.values() if end else {}), "error": error})

    def kill(self, key: str, *, lease: str | None = None, end: AttemptEnd | None = None) -> bool:
        return self._move(key, RunState.KILLED, lease, end.values() if end else {})

    def end_attempt(self, key: str, state: RunState, lease: str, end: AttemptEnd) -> bool:
        """The worker's final write: the transition named by the state the attempt ended in."""
        if state is RunState.FAILED:
            return self.fail(key, end.error, lease=lease, end=end)
        move = {RunState.FINISHED: self.finish, RunState.DIVERGED: self.diverge, RunState.KILLED: self.kill}
        return move[state](key, lease=lease, end=end)

    def reset(self, key: str) -> None:
        """PENDING again, its MLflow run forgotten (lost or deleted): re-logged from the
        checkpoint, else retrained."""
        self.ledger.update(self.study, key, state=RunState.PENDING, error=None, mlflow_run_id=None)

    def forget_mlflow_run(self, key: str) -> None:
        """Drop a lost MLflow run of a row still RUNNING (its attempt may be alive)."""
        self.ledger.update(self.study, key, mlflow_run_id=None)

    def adopt_result(
        self, key: str, run_id: str, state: RunState, *, val_loss: float | None, tokens: int | None
    ) -> None:
        """A result the MLflow run `run_id` holds (made by a driver that crashed, or before the
        ledger was lost) becomes the row's: linked, and FINISHED or DIVERGED."""
        if not state.is_result:
            raise ValueError(f"adopt_result: {state} is not a result")
        self.ledger.update(
            self.study,
            key,
            state=state,
            mlflow_run_id=run_id,
            error=None,
            val_loss=val_loss,
            tokens_done=tokens,
        )

    def reuse(self, key: str, source: LedgerRow, run_id: str) -> None:
        """FINISHED with another study's result (copied into this study's MLflow run `run_id`)."""
        self.ledger.update(
            self.study,
            key,
            state=RunState.FINISHED,
            mlflow_run_id=run_id,
            error=None,
            val_loss=source.val_loss,
            tokens_done=source.tokens_done,
            wall_time_s=0.0,
            flops_per_s=source.flops_per_s,
            device=source.device,
            checkpoint_dir=source.checkpoint_dir,
        )

    def _move(self, key: str, state: RunState, lease: str | None, values: dict[str, Any]) -> bool:
        return self.ledger.update(self.study, key, lease=lease, state=state, **values)

    # ---------------------------------------------------------------- adaptive rounds
    def rounds(self) -> dict[int, str]:
        """Round number (1-based) -> that round's explicit runs as JSON; {} in a ledger made
        before rounds were kept here (see adaptive.load_rounds)."""
        q = sa.select(rounds_table.c.round, rounds_table.c.runs_json).where(
            rounds_table.c.study == self.study
        )
        try:
            with self.ledger.engine.connect() as c:
                return {int(n): text for n, text in c.execute(q)}
        except sa.exc.SQLAlchemyError:  # no rounds table yet (a reader of an older ledger)
            return {}

    def record_round(self, n: int, runs_json: str) -> None:
        """Keep round `n` (idempotent: the same round written again keeps the first)."""
        with self.ledger.engine.begin() as c:
            have = c.execute(
                sa.select(rounds_table.c.round).where(
                    rounds_table.c.study == self.study, rounds_table.c.round == n
                )
            ).first()
            if have is None:
                c.execute(
                    rounds_table.insert().values(
                        study=self.study, round=n, runs_json=runs_json, created_at=time.time()
                    )
                )


def _pk(study: str, run_key: str) -> tuple[Any, Any]:
    return runs_table.c.study == study, runs_table.c.run_key == run_key


def _select_rows(c: sa.Connection, study: str | None, keys: Iterable[str] | None) -> list[LedgerRow]:
    q = sa.select(runs_table)
    if study is not None:
        q = q.where(runs_table.c.study == study)
    if keys is not None:
        q = q.where(runs_table.c.run_key.in_(list(keys)))
    return [_row(r) for r in c.execute(q)]


def _row(r: Any) -> LedgerRow:
    m = dict(r._mapping)
    m.pop("spec_json", None)
    m.pop("updated_at", None)
    m["state"] = RunState(m["state"])
    return LedgerRow(**m)


def spec_json(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)
