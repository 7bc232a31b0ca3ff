"""Where a run's params and metrics go.

The trainer only talks to a `MetricSink`. Metric steps are TOKENS SEEN (an int), so a curve's
x-axis is data and FLOPs = flops_per_token · step. Sinks may buffer: the trainer calls
`flush()` right before every checkpoint and at the end, so whatever a checkpoint covers is
durable, and metrics logged after the last checkpoint are recomputed (not duplicated) on resume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricSink(Protocol):
    """What the trainer needs from a sink (InMemorySink, MlflowSink, the orchestrator's
    FencedSink). `run_id`: the tracking run the sink writes to (None when there is none), kept
    in checkpoints. `pending`: items logged but not yet delivered; the trainer never checkpoints
    over undelivered metrics. `close(timeout_s)`: deliver everything or raise (None: the sink's
    own default wait)."""

    @property
    def run_id(self) -> str | None: ...

    @property
    def pending(self) -> int: ...

    def close(self, timeout_s: float | None = None) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def flush(self) -> None: ...


def deliver(sink: MetricSink) -> None:
    """Flush, then close when something is still buffered: close waits (bounded) for the store
    and raises, so a run is never marked finished over undelivered metrics."""
    sink.flush()
    if sink.pending:
        sink.close()


class InMemorySink:
    """Keeps everything in lists: for tests and for the bare benchmark loop."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int]] = []  # (key, value, step)
        self.texts: dict[str, str] = {}
        self.flushes = 0
        self.closed = False

    @property
    def run_id(self) -> str | None:
        """No tracking run behind this sink."""
        return None

    @property
    def pending(self) -> int:
        """Nothing is buffered: every call lands in the lists at once."""
        return 0

    def close(self, timeout_s: float | None = None) -> None:
        self.closed = True

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.extend((k, float(v), int(step)) for k, v in metrics.items())

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def flush(self) -> None:
        self.flushes += 1

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in logging order."""
        return [(s, v) for k, v, s in self.metrics if k == key]


def _overloaded(e: Exception) -> bool:
    """A server whose DB connection pool is exhausted answers BAD_REQUEST; nothing was written,
    so it is safe (and right) to retry."""
    text = str(e)
    return "QueuePool limit" in text or "connection timed out" in text.lower()


class MlflowSinkError(RuntimeError):
    """The MLflow store stayed unreachable until the buffer overflowed, or rejected the data.
    Its message never carries a password (URIs in it are masked)."""

    def __init__(self, message: str):
        from .redact import redact_text

        super().__init__(redact_text(message))


# MLflow error codes that no retry can fix (bad value, param changed, run gone or deleted).
_PERMANENT = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}


class MlflowSink:
    """Logs to one MLflow run by explicit run id with `MlflowClient.log_batch` (never the fluent
    active-run API, which misfiles runs when many processes share a store).

    Metrics are buffered in memory and sent by `flush()` (the trainer flushes before every
    checkpoint and at the end); params and tags are sent at once. When the store is unreachable
    the points stay buffered and the next flush retries, with exponential backoff between
    attempts (1 s doubling to 60 s). A `MlflowSinkError` is raised only when the buffer exceeds
    `max_buffer_points`, or when the store rejects the data for good (e.g. a param changed).

    resume=True: before the first send of a metric key, read the largest step the store already
    holds for it and drop buffered points at or below it, so a resumed run never duplicates.
    `close()` keeps retrying for up to `timeout_s` and raises if points would be lost.
    """

    MAX_METRICS_PER_BATCH = 1000
    MAX_PARAMS_PER_BATCH = 100

    def __init__(
        self, tracking_uri: str, run_id: str, *, max_buffer_points: int = 200_000, resume: bool = False
    ) -> None:
        from mlflow.tracking import MlflowClient  # lazy: importing mlflow takes ~1 s

        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.max_buffer_points = max_buffer_points
        self.resume = resume
        self.client = MlflowClient(tracking_uri)
        self._metrics: list[Any] = []  # mlflow.entities.Metric
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._stored_max: dict[str, int] = {}
        self._recheck = False  # after a failed send: drop points the store already has
        self._failures = 0
        self._next_try = 0.0
        self.last_error: BaseException | None = None
        self.points_sent = 0
        self.points_dropped = 0

    @property
    def pending(self) -> int:
        return len(self._metrics) + len(self._params) + len(self._tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.update({k: str(v) for k, v in params.items()})
        self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})
        self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items())
        if len(self._metrics) > self.max_buffer_points:
            self._try_send(ignore_backoff=True)
            self._check_overflow()

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def flush(self) -> None:
        self._try_send(ignore_backoff=False)
        self._check_overflow()

    def close(self, timeout_s: float | None = None) -> None:
        """Send everything, retrying until `timeout_s` (default 60 s); raise if anything is
        still buffered."""
        deadline = time.monotonic() + (60.0 if timeout_s is None else timeout_s)
        while self.pending and time.monotonic() < deadline:
            if self._try_send(ignore_backoff=True):
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if self.pending:
            raise MlflowSinkError(
                f"MLflow run {self.run_id}: {self.pending} buffered items could "
                f"not be sent to {self.tracking_uri}: {self.last_error!r}"
            )

    # ------------------------------------------------------------------ internals

    def _check_overflow(self) -> None:
        if len(self._metrics) > self.max_buffer_points:
            raise MlflowSinkError(
                f"MLflow run {self.run_id}: {len(self._metrics)} metric points buffered, over "
                f"max_buffer_points={self.max_buffer_points}; the store at {self.tracking_uri} "
                f"has been unreachable for {self._failures} flushes: {self.last_error!r}"
            )

    def _try_send(self, ignore_backoff: bool) -> bool:
        """Send what is buffered; True when everything went. Transient errors are kept for the
        next attempt; permanent ones raise."""
        if not self.pending:
            return True
        if not ignore_backoff and time.monotonic() < self._next_try:
            return False
        try:
            self._send()
        except Exception as e:  # noqa: BLE001 - a store error of any kind is retried
            if getattr(e, "error_code", None) in _PERMANENT and not _overloaded(e):
                raise MlflowSinkError(f"MLflow run {self.run_id} rejected the data: {e}") from e
            self.last_error = e
            self._failures += 1
            # The store may have committed a batch whose answer never arrived (timeout, client
            # retry): re-read what it holds before sending again, so nothing is duplicated.
            self._stored_max.clear()
            self._recheck = True
            self._next_try = time.monotonic() + min(60.0, 2.0 ** (self._failures - 1))
            return False
        self._failures = 0
        self._next_try = 0.0
        return True

    def _send(self) -> None:
        from mlflow.entities import Param, RunTag

        while self._params or self._tags:
            params = list(self._params.items())[: self.MAX_PARAMS_PER_BATCH]
            tags = list(self._tags.items())[: self.MAX_PARAMS_PER_BATCH]
            self.client.log_batch(
                self.run_id, params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags]
            )
            for k, _ in params:
                del self._params[k]
            for k, _ in tags:
                del self._tags[k]
        if self.resume or self._recheck:
            self._dedup()
            self._recheck = False
        while self._metrics:
            batch = self._metrics[: self.MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=batch)
            del self._metrics[: len(batch)]
            self.points_sent += len(batch)

    def _dedup(self) -> None:
        for key in {m.key for m in self._metrics} - set(self._stored_max):
            history = self.client.get_metric_history(self.run_id, key)
            self._stored_max[key] = max((m.step for m in history), default=-1)
        before = len(self._metrics)
        self._metrics = [m for m in self._metrics if m.step > self._stored_max[m.key]]
        self.points_dropped += before - len(self._metrics)
