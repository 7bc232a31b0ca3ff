"""Where things are stored, and the MLflow layout of a study.

The driver alone creates (and migrates) the store, the experiment, the parent run and every
child run, before any worker starts: concurrent `set_experiment` and first-time migrations race
(see shared/reference/RAY_MLFLOW.md). Workers only ever log to an explicit run id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from trainer import mlflow_contract as mc
from trainer.mlflow_contract import FINGERPRINT, OUTCOME, ROLE, RUN_KEY, STUDY
from trainer.redact import redact_text

from ..study.config import StudyError
from .states import OUTCOMES, RunState

log = logging.getLogger(__name__)
T = TypeVar("T")
# `scalelab.outcome` tag value -> the MLflow run status it ends with (states.OUTCOMES).
MLFLOW_STATUS = {state.value: status for state, status in OUTCOMES.items()}


@dataclass(frozen=True)
class Settings:
    """Resolved locations: flag, then environment, then the embedded default under `home`."""

    home: Path
    tracking_uri: str
    ledger_uri: str
    checkpoint_root: str
    artifact_root: str

    @classmethod
    def resolve(
        cls,
        tracking_uri: str | None = None,
        ledger_uri: str | None = None,
        checkpoint_dir: str | None = None,
        home: str | None = None,
    ) -> Settings:
        h = Path(home or os.environ.get("SCALELAB_HOME") or "scalelab-store").expanduser().resolve()
        tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{h}/mlflow.db"
        if ledger_uri or os.environ.get("SCALELAB_LEDGER_URI"):
            ledger = ledger_uri or os.environ["SCALELAB_LEDGER_URI"]
        elif tracking.startswith(("postgresql", "mysql")):
            ledger = tracking  # the ledger's tables live beside MLflow's
        else:
            ledger = f"sqlite:///{h}/ledger.db"
        ckpt = checkpoint_dir or os.environ.get("SCALELAB_CHECKPOINT_DIR") or str(h / "checkpoints")
        artifacts = os.environ.get("SCALELAB_ARTIFACT_ROOT") or (h / "artifacts").as_uri()
        return cls(
            home=h, tracking_uri=tracking, ledger_uri=ledger, checkpoint_root=ckpt, artifact_root=artifacts
        )

    def checkpoint_dir(self, study: str, run_key: str) -> str:
        return checkpoint_path(self.checkpoint_root, study, run_key)

    def trunk_dir(self, study: str, trunk_key: str) -> str:
        return trunk_path(self.checkpoint_root, study, trunk_key)


# The checkpoint layout under a root, shared by the driver and by nodes that mount the same
# storage under another root (SCALELAB_NODE_CHECKPOINT_DIR).
def checkpoint_path(root: str, study: str, run_key: str) -> str:
    return str(Path(root) / study / run_key)


def trunk_path(root: str, study: str, trunk_key: str) -> str:
    return str(Path(root) / study / "trunks" / trunk_key)


# --------------------------------------------------------------------------- reachability


def tcp_reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_tracking_uri(uri: str, flag: str = "--tracking-uri") -> None:
    """Fail fast (StudyError) when the store cannot be reached; writes nothing."""
    u = urlparse(uri)
    path = sqlite_path(uri)
    if u.scheme == "sqlite" and path is None:
        raise StudyError(
            flag,
            f"{uri} is an in-memory SQLite database: every process would see "
            "its own empty store; give a file, sqlite:///PATH/mlflow.db",
        )
    if path is not None:
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise StudyError(
                flag,
                f"cannot write the SQLite store {path}: {parent} is not writable; "
                "choose another path or set SCALELAB_HOME",
            )
    elif u.scheme.startswith(("postgresql", "mysql")):
        _sql_engine(uri, flag).dispose()  # the driver first: no server needed to say so
        port = u.port or (5432 if u.scheme.startswith("postgresql") else 3306)
        if not tcp_reachable(u.hostname or "127.0.0.1", port):
            raise StudyError(
                flag,
                f"no database answers at {u.hostname}:{port}; start it or fix "
                "the URI (e.g. postgresql://user@127.0.0.1:5432/mlflow)",
            )
        check_sql_database(uri, flag)
    elif u.scheme in ("http", "https"):
        check_http_store(uri, flag)
    else:
        raise StudyError(
            flag,
            f"unsupported tracking URI {redact_text(uri)!r}; use sqlite:///PATH, "
            "postgresql://..., or http://HOST:PORT",
        )


def _sql_engine(uri: str, flag: str):
    """An engine for a probe; a missing DB driver is bad input naming the package to install."""
    import sqlalchemy as sa

    try:
        return sa.create_engine(uri, connect_args={"connect_timeout": 5})
    except (ImportError, sa.exc.NoSuchModuleError) as e:
        if uri.startswith("postgresql://"):  # psycopg2 missing: psycopg 3 will do
            return _sql_engine("postgresql+psycopg://" + uri[len("postgresql://") :], flag)
        scheme = uri.split("://", 1)[0]
        hint = (
            "pip install pymysql and write mysql+pymysql://..."
            if scheme.startswith("mysql")
            else "install its SQLAlchemy driver"
        )
        raise StudyError(
            flag,
            f"no database driver for {scheme}:// is installed "
            f"({type(e).__name__}: {e}); {hint}, or use postgresql:// "
            "(psycopg is installed)",
        ) from None


def check_sql_database(uri: str, flag: str) -> None:
    """Connect once (5 s timeout): a missing database or refused login is bad input now, not
    two minutes of MLflow's retries and a traceback later."""
    import sqlalchemy as sa

    engine = _sql_engine(uri, flag)
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as e:
        reason = redact_text(str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else "")
        u = engine.url
        if "does not exist" in reason and "database" in reason:
            cmd = (
                f"createdb -h {u.host or '127.0.0.1'} -p {u.port or 5432}"
                + (f" -U {u.username}" if u.username else "")
                + f" {u.database}"
            )
            raise StudyError(
                flag,
                f"database {u.database!r} does not exist on {u.host}:"
                f"{u.port or 5432}; create it with `{cmd}` (scalelab creates the "
                "tables, not the database) or fix the URI",
            ) from None
        raise StudyError(
            flag,
            f"cannot connect to {redact_text(uri)}: {reason[:300]}; check the "
            "user, password and database name in the URI",
        ) from None
    finally:
        engine.dispose()


def check_ledger_uri(uri: str, flag: str = "--ledger-uri") -> None:
    """The ledger is a SQL database (SQLite file or a server every node can reach)."""
    if not uri.startswith(("sqlite", "postgresql", "mysql")):
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        why = (
            "an MLflow server does not hold it"
            if scheme in ("http", "https")
            else f"{scheme}:// is not supported for it"
            if scheme
            else "it is not a database URI"
        )
        raise StudyError(
            flag,
            f"{redact_text(uri)} cannot hold the ledger ({why}): it must be a SQL database, "
            "sqlite:///PATH/ledger.db, "
            "postgresql://... or mysql+pymysql://..., or omit it to keep the ledger beside the "
            "store under --home",
        )
    check_tracking_uri(uri, flag)


def check_http_store(uri: str, flag: str) -> None:
    """GET /health of an MLflow server. `http://user:pass@host` (which MLflow accepts) is sent
    as HTTP basic auth, as MLflow does; the password is never printed."""
    import base64
    import urllib.request  # not on the CLI's start-up path
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(uri)
    bare = urlunsplit(u._replace(netloc=u.netloc.rpartition("@")[2]))
    req = urllib.request.Request(f"{bare.rstrip('/')}/health")
    if u.username is not None:
        cred = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(cred).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
    except Exception as e:  # noqa: BLE001 - any failure to reach it is the same bad input
        raise StudyError(
            flag,
            f"no MLflow server answers at {redact_text(uri)} "
            f"({redact_text(str(e))[:200]}); start it (`scalelab ui` or docker "
            "compose) or fix the URI",
        ) from None


def check_store_readable(uri: str, flag: str = "--tracking-uri") -> None:
    """For commands that only read (fit, report): a server or database that does not answer is
    bad input within seconds (a SQLite path is left to the reader, which says it is missing)."""
    if not uri.startswith("sqlite"):
        check_tracking_uri(uri, flag)


# MLflow retries an unreachable http store for minutes (7 retries, backoff 2: 251 s of silence
# seen); read-only commands bound it. Values the user exported win.
READ_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


@contextlib.contextmanager
def bounded_http_retries():
    """Within the block, MLflow's HTTP client gives up after ~2 retries (MLflow reads these
    variables per request); the previous environment is restored afterwards."""
    saved = {k: os.environ.get(k) for k in READ_HTTP_ENV}
    for k, v in READ_HTTP_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI; None for any other URI and for an
    in-memory SQLite database (`sqlite://`, `sqlite:///:memory:`)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :]
    return Path(path) if path not in ("", ":memory:") else None


def store_exists(uri: str) -> bool:
    """False for a SQLite file that does not exist yet (reading it would create it)."""
    path = sqlite_path(uri)
    return path is None or path.exists()


def client(uri: str):
    """An MlflowClient; on a SQL store its first use creates and migrates the schema."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def fingerprint_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- layout


def check_experiment(uri: str, study: str, fingerprint: str, legacy: tuple[str, ...] = ()) -> None:
    """An existing experiment of this name must belong to this same study (read-only check).
    `legacy`: fingerprints this study had under the older scheme (run-time settings hashed)."""
    if not store_exists(uri):
        return
    exp = client(uri).get_experiment_by_name(study)
    if exp is None:
        return
    if exp.lifecycle_stage == "deleted":
        raise StudyError(
            "study",
            f"the MLflow experiment {study!r} (id {exp.experiment_id}) was "
            "deleted (it is in MLflow's trash); restore it with `MLFLOW_"
            f"TRACKING_URI={redact_text(uri)} mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}`, or choose a new study "
            "name (`mlflow gc` empties the trash for good)",
        )
    theirs = exp.tags.get(FINGERPRINT)
    if theirs is None:
        raise StudyError(
            "study",
            f"an MLflow experiment named {study!r} already exists and was not "
            "made by scalelab; choose another study name",
        )
    if theirs != fingerprint and theirs not in legacy:
        raise StudyError(
            "study",
            f"experiment {study!r} already holds a different study (its data, "
            "model or train settings differ); choose a new study name for "
            "the changed recipe, or restore the original settings",
        )


def ensure_experiment(c, study: str, fingerprint: str, artifact_root: str) -> str:
    exp = c.get_experiment_by_name(study)
    if exp is not None:
        if exp.tags.get(FINGERPRINT) != fingerprint:  # checked compatible: a legacy fingerprint
            c.set_experiment_tag(exp.experiment_id, FINGERPRINT, fingerprint)
        return exp.experiment_id
    try:
        return c.create_experiment(
            study,
            artifact_location=f"{artifact_root.rstrip('/')}/{study}",
            tags={FINGERPRINT: fingerprint, STUDY: study},
        )
    except Exception as e:  # noqa: BLE001 - created by a concurrent driver in between?
        log.debug("creating experiment %s failed (%s); looking it up", study, e)
        exp = c.get_experiment_by_name(study)
        if exp is None:
            raise
        return exp.experiment_id


def ensure_parent_run(c, experiment_id: str, study: str, description: str = "") -> str:
    found = c.search_runs([experiment_id], filter_string=mc.PARENT_FILTER, max_results=1)
    if found:
        return found[0].info.run_id
    run = c.create_run(
        experiment_id,
        run_name=study,
        tags={ROLE: mc.ROLE_PARENT, STUDY: study, mc.NOTE: description or f"scalelab study {study}"},
    )
    return run.info.run_id


def child_runs(c, experiment_id: str) -> list:
    """Every live (not deleted) child run of the experiment, oldest first (paged)."""
    from analysis.data import search_all_runs

    return search_all_runs(c, experiment_id, mc.CHILD_FILTER, order_by=["attributes.start_time ASC"])


def children_by_key(runs: list) -> dict:
    """run_key -> the first child run carrying it."""
    out: dict = {}
    for r in runs:
        key = r.data.tags.get(RUN_KEY)
        if key and key not in out:
            out[key] = r
    return out


def existing_children(c, experiment_id: str) -> dict[str, str]:
    """run_key -> MLflow run id for every child run already in the experiment (paged)."""
    return {k: r.info.run_id for k, r in children_by_key(child_runs(c, experiment_id)).items()}


def recorded_outcome(run) -> str | None:
    """'finished' / 'diverged' when an MLflow run holds a complete result, else None."""
    outcome = run.data.tags.get(OUTCOME)
    if outcome == RunState.FINISHED and run.info.status == "FINISHED" and "val_loss" in run.data.metrics:
        return outcome
    if outcome == RunState.DIVERGED and run.info.status == "FAILED":
        return outcome
    return None


def copy_point_run(
    c, source_id: str, experiment_id: str, parent_id: str, study: str, run_key: str, run_name: str
) -> str:
    """A finished point of another study as a point run of this one: same params and tags,
    every metric with its steps, tagged scalelab.reused_from=<source run id>."""
    from mlflow.entities import Param

    src = c.get_run(source_id)
    own = {ROLE, STUDY, RUN_KEY, OUTCOME, mc.ERROR}
    tags = {k: v for k, v in src.data.tags.items() if not k.startswith("mlflow.") and k not in own}
    tags.update({mc.REUSED_FROM: source_id, mc.REUSED_FROM_STUDY: src.data.tags.get(STUDY, "")})
    if "n_params_active" in src.data.metrics:  # mlflow.* tags are not copied: this one is ours
        from .mlflow_view import RUN_COLOR_TAG, run_color

        tags[RUN_COLOR_TAG] = run_color(src.data.metrics["n_params_active"])
    run_id = create_child_run(c, experiment_id, parent_id, study, run_key, run_name, mc.ROLE_POINT, {}, tags)
    params = [Param(k, v) for k, v in src.data.params.items()]
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=params[i : i + 100])
    for name in src.data.metrics:
        history = c.get_metric_history(source_id, name)
        for i in range(0, len(history), 1000):
            c.log_batch(run_id, metrics=history[i : i + 1000])
    finish_run(c, run_id, RunState.FINISHED)
    return run_id


def create_child_run(
    c,
    experiment_id: str,
    parent_id: str,
    study: str,
    run_key: str,
    run_name: str,
    role: str,
    params: dict,
    extra_tags: dict | None = None,
    metrics: dict | None = None,
) -> str:
    """Created when the driver dispatches the run, so MLflow's start time (and Duration) is the
    run's own, not the study's queue."""
    import time

    from mlflow.entities import Metric, Param

    from .mlflow_view import RUN_COLOR_TAG, log10_metrics, run_color

    tags = {mc.PARENT_RUN_ID: parent_id, ROLE: role, STUDY: study, RUN_KEY: run_key, **(extra_tags or {})}
    metrics = {**(metrics or {}), **log10_metrics(metrics or {})}  # for the view's log-log scatters
    if role == mc.ROLE_POINT and "n_params_active" in metrics:
        tags.setdefault(RUN_COLOR_TAG, run_color(metrics["n_params_active"]))
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    now_ms = int(time.time() * 1000)
    if params or metrics:
        c.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            metrics=[Metric(k, float(v), now_ms, 0) for k, v in (metrics or {}).items()],
        )
    return run.info.run_id


def finish_run(c, run_id: str, outcome: RunState | str) -> None:
    """Tag the run's outcome (a RunState value) and end it with the matching MLflow status."""
    state = RunState(outcome)
    c.set_tag(run_id, OUTCOME, state.value)
    c.set_terminated(run_id, status=OUTCOMES.get(state, "FAILED"))


def retry_store(fn: Callable[[], T], timeout_s: float, before_retry: Callable[[], object] | None = None) -> T:
    """Call fn until it succeeds or `timeout_s` passed (backoff 0.5 s doubling to 8 s), for
    MLflow calls while a store restarts; the last error is raised. `before_retry` runs between
    attempts (e.g. adopting runs a failed attempt did create, so nothing is created twice)."""
    import time

    deadline, wait = time.monotonic() + timeout_s, 0.5
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - any store error: retried
            if time.monotonic() + wait > deadline:
                raise
            log.debug("MLflow call failed (%s: %s); retrying in %.1f s", type(e).__name__, e, wait)
            time.sleep(wait)
            wait = min(8.0, wait * 2)
            if before_retry is not None:
                try:
                    before_retry()
                except Exception as e2:  # noqa: BLE001 - still down: the next try tells
                    log.debug("store still unreachable: %s: %s", type(e2).__name__, e2)
