"""Where things are stored, and the MLflow layout of a study.

The driver alone creates (and migrates) the store, the experiment, the parent run and every
child run, before any worker starts: concurrent `set_experiment` and first-time migrations race
(see shared/reference/RAY_MLFLOW.md). Workers only ever log to an explicit run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .config import StudyError

ROLE, STUDY, RUN_KEY, OUTCOME, FINGERPRINT = (
    "scalelab.role", "scalelab.study", "scalelab.run_key", "scalelab.outcome",
    "scalelab.fingerprint")
MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED",
                 "killed": "KILLED"}


@dataclass(frozen=True)
class Settings:
    """Resolved locations: flag, then environment, then the embedded default under `home`."""

    home: Path
    tracking_uri: str
    ledger_uri: str
    checkpoint_root: str
    artifact_root: str

    @classmethod
    def resolve(cls, tracking_uri: str | None = None, ledger_uri: str | None = None,
                checkpoint_dir: str | None = None, home: str | None = None) -> "Settings":
        h = Path(home or os.environ.get("SCALELAB_HOME") or "scalelab-store").expanduser().resolve()
        tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{h}/mlflow.db"
        if ledger_uri or os.environ.get("SCALELAB_LEDGER_URI"):
            ledger = ledger_uri or os.environ["SCALELAB_LEDGER_URI"]
        elif tracking.startswith(("postgresql", "mysql")):
            ledger = tracking              # the ledger's tables live beside MLflow's
        else:
            ledger = f"sqlite:///{h}/ledger.db"
        ckpt = checkpoint_dir or os.environ.get("SCALELAB_CHECKPOINT_DIR") or str(h / "checkpoints")
        artifacts = os.environ.get("SCALELAB_ARTIFACT_ROOT") or (h / "artifacts").as_uri()
        return cls(home=h, tracking_uri=tracking, ledger_uri=ledger, checkpoint_root=ckpt,
                   artifact_root=artifacts)

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
    if u.scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise StudyError(flag, f"cannot write the SQLite store {path}: {parent} is not writable; "
                                   "choose another path or set SCALELAB_HOME")
    elif u.scheme.startswith(("postgresql", "mysql")):
        port = u.port or (5432 if u.scheme.startswith("postgresql") else 3306)
        if not tcp_reachable(u.hostname or "127.0.0.1", port):
            raise StudyError(flag, f"no database answers at {u.hostname}:{port}; start it or fix "
                                   "the URI (e.g. postgresql://user@127.0.0.1:5432/mlflow)")
    elif u.scheme in ("http", "https"):
        import urllib.request               # not on the CLI's start-up path
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as r:
                r.read()
        except Exception as e:       # any failure to reach it is the same bad input
            raise StudyError(flag, f"no MLflow server answers at {uri} ({e}); start it "
                                   "(`scalelab ui` or docker compose) or fix the URI") from None
    else:
        raise StudyError(flag, f"unsupported tracking URI {uri!r}; use sqlite:///PATH, "
                               "postgresql://..., or http://HOST:PORT")


def store_exists(uri: str) -> bool:
    """False for a SQLite file that does not exist yet (reading it would create it)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).exists()
    return True


def client(uri: str):
    """An MlflowClient; on a SQL store its first use creates and migrates the schema."""
    from mlflow.tracking import MlflowClient
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def fingerprint_hash(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- layout

def check_experiment(uri: str, study: str, fingerprint: str) -> None:
    """An existing experiment of this name must belong to this same study (read-only check)."""
    if not store_exists(uri):
        return
    exp = client(uri).get_experiment_by_name(study)
    if exp is None:
        return
    theirs = exp.tags.get(FINGERPRINT)
    if theirs is None:
        raise StudyError("study", f"an MLflow experiment named {study!r} already exists and was not "
                                  "made by scalelab; choose another study name")
    if theirs != fingerprint:
        raise StudyError("study", f"experiment {study!r} already holds a different study (its data, "
                                  "model or train settings differ); choose a new study name for "
                                  "the changed recipe, or restore the original settings")


def ensure_experiment(c, study: str, fingerprint: str, artifact_root: str) -> str:
    exp = c.get_experiment_by_name(study)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(study, artifact_location=f"{artifact_root.rstrip('/')}/{study}",
                                   tags={FINGERPRINT: fingerprint, "scalelab.study": study})
    except Exception:                       # created by a concurrent driver in between
        exp = c.get_experiment_by_name(study)
        if exp is None:
            raise
        return exp.experiment_id


def ensure_parent_run(c, experiment_id: str, study: str, description: str = "") -> str:
    found = c.search_runs([experiment_id], filter_string=f"tags.`{ROLE}` = 'parent'",
                          max_results=1)
    if found:
        return found[0].info.run_id
    run = c.create_run(experiment_id, run_name=study,
                       tags={ROLE: "parent", STUDY: study,
                             "mlflow.note.content": description or f"scalelab study {study}"})
    return run.info.run_id


def existing_children(c, experiment_id: str) -> dict[str, str]:
    """run_key -> MLflow run id for every child run already in the experiment (paged)."""
    out: dict[str, str] = {}
    token = None
    while True:
        page = c.search_runs([experiment_id], filter_string=f"tags.`{ROLE}` != 'parent'",
                             max_results=1000, page_token=token)
        for r in page:
            key = r.data.tags.get(RUN_KEY)
            if key and key not in out:
                out[key] = r.info.run_id
        token = page.token
        if not token:
            return out


# The point's accounting, also as single-step metrics (step 0): params are strings, metrics
# sort, filter (`metrics.n_params > 1e5`) and serve as chart axes in the MLflow UI.
POINT_METRICS = ("n_params", "n_params_active", "tokens", "flops")


def create_child_run(c, experiment_id: str, parent_id: str, study: str, run_key: str,
                     run_name: str, role: str, params: dict, extra_tags: dict | None = None,
                     metrics: dict | None = None) -> str:
    """Created when the driver dispatches the run, so MLflow's start time (and Duration) is the
    run's own, not the study's queue."""
    import time

    from mlflow.entities import Metric, Param
    tags = {"mlflow.parentRunId": parent_id, ROLE: role, STUDY: study, RUN_KEY: run_key,
            **(extra_tags or {})}
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    now_ms = int(time.time() * 1000)
    if params or metrics:
        c.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                    metrics=[Metric(k, float(v), now_ms, 0) for k, v in (metrics or {}).items()])
    return run.info.run_id


def finish_run(c, run_id: str, outcome: str) -> None:
    c.set_tag(run_id, OUTCOME, outcome)
    c.set_terminated(run_id, status=MLFLOW_STATUS.get(outcome, "FAILED"))

