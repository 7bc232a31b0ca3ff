"""Ray Client: a transient failure of the server-side driver start is retried, nothing else."""

from __future__ import annotations

import pytest

from orchestrator.run import ray_connection


class FakeRay:
    def __init__(self, failures: list[BaseException]):
        self.failures = failures
        self.inits = 0
        self.shutdowns = 0

    def init(self, **kw):
        self.inits += 1
        if self.failures:
            raise self.failures.pop(0)

    def shutdown(self):
        self.shutdowns += 1


SERVER = "Initialization failure from server:\npsutil.ZombieProcess: PID still exists but it's a zombie"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(ray_connection.time, "sleep", lambda s: None)


def test_server_start_race_is_retried_then_connects():
    ray = FakeRay([ConnectionAbortedError(SERVER)])
    ray_connection._init_with_retry(ray, "ray://127.0.0.1:10001", {})
    assert (ray.inits, ray.shutdowns) == (2, 1)


def test_gives_up_after_the_attempts():
    ray = FakeRay([ConnectionAbortedError(SERVER) for _ in range(3)])
    with pytest.raises(ConnectionAbortedError):
        ray_connection._init_with_retry(ray, "ray://127.0.0.1:10001", {}, attempts=3)
    assert ray.inits == 3


@pytest.mark.parametrize(
    "address, error",
    [
        ("ray://127.0.0.1:10001", ConnectionAbortedError("authentication failed")),
        ("127.0.0.1:6380", ConnectionAbortedError(SERVER)),  # not Ray Client
        ("ray://127.0.0.1:10001", ConnectionError(SERVER)),
    ],
)
def test_other_errors_are_not_retried(address, error):
    ray = FakeRay([error])
    with pytest.raises(type(error)):
        ray_connection._init_with_retry(ray, address, {})
    assert ray.inits == 1
