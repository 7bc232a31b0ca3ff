"""The driver's Ray: check the address, attach to a cluster or start an embedded local Ray,
treat SIGTERM as an interrupt, and check that some node can hold one run.

`ray_session(address)` holds all of it for a block: a study's rounds (`run --adaptive`) share
one session, so an embedded Ray starts and stops once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..store.tracking import tcp_reachable
from ..study.config import StudyConfig, StudyError

log = logging.getLogger(__name__)

# Ray binds its gRPC servers to the node IP, which on Linux is the machine's address; with
# "clusters" off the embedded Ray's node IP is 127.0.0.1 and every server listens on loopback.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def check_address(address: str | None) -> None:
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        raise StudyError("--address", f"{address!r} is not HOST:PORT or ray://HOST:PORT")
    if not tcp_reachable(host or "127.0.0.1", int(port)):
        raise StudyError(
            "--address",
            f"no Ray cluster answers at {address}; start it "
            "(`ray start --head --port=...`) or fix --address/RAY_ADDRESS",
        )


def _init_with_retry(ray: Any, address: str, env: dict, attempts: int = 3) -> None:
    """ray.init, retrying (Ray Client only) the one transient failure seen: the proxier failing
    to start this driver's dedicated server (a psutil ZombieProcess race in
    proxier.start_specific_server), after which a new connection works."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level=logging.ERROR)
            return
        except ConnectionAbortedError as e:
            transient = address.startswith("ray://") and "Initialization failure from server" in str(e)
            if attempt == attempts or not transient:
                raise
            log.warning(
                "Ray Client server failed to start (attempt %d of %d); reconnecting", attempt, attempts
            )
            ray.shutdown()
            time.sleep(2.0 * attempt)


def connect_ray(address: str | None) -> bool:
    """Attach to a cluster, or start an embedded local Ray. Returns True if we connected.

    `HOST:PORT` (the head's GCS port) joins the cluster as a driver: this machine must be a node
    of it (Slurm, `ray job submit`, a test cluster). `ray://HOST:10001` uses Ray Client from
    anywhere that reaches the port. Token auth comes from the environment (`RAY_AUTH_TOKEN`,
    else ~/.ray/auth_token): a token alone implies `RAY_AUTH_MODE=token`. The embedded local Ray
    binds its GCS to a port the OS picks (port 0; never 6379, which a local Redis often holds)
    and, like everything scalelab starts, listens on 127.0.0.1 only (LOCAL_ONLY_ENV)."""
    if not address:
        # Environment, unavoidably: Ray reads this when it is first imported (no init argument
        # exists); setdefault keeps a user's choice.
        for k, v in LOCAL_ONLY_ENV.items():
            os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if address:
        if os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_MODE"):
            os.environ["RAY_AUTH_MODE"] = "token"  # Ray reads auth only from the environment
        try:
            _init_with_retry(ray, address, env)
        except Exception as e:
            cause: BaseException | None = e
            while cause is not None and "auth" not in f"{type(cause).__name__} {cause}".lower():
                cause = cause.__cause__ or cause.__context__
            if cause is not None:  # ConnectionError from AuthenticationError
                raise StudyError(
                    "--address",
                    f"the Ray cluster at {address} refused the connection "
                    f"({type(cause).__name__}: {str(cause)[:200]}); export "
                    "the cluster's RAY_AUTH_MODE=token and RAY_AUTH_TOKEN",
                ) from None
            raise
        return True
    # "local": always a new instance, never the cluster a `ray start` on this machine recorded
    from .hostinfo import available_cpus  # affinity + cgroup quota, not os.cpu_count()

    ray.init(
        address="local",
        num_cpus=available_cpus(),
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        runtime_env=env,
        logging_level=logging.ERROR,
    )
    return True


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (a clean stop, not Ray's sys.exit and a C++ abort)."""


TERMINATED: list[int] = []  # signals received (Ray may re-raise ours as a KeyboardInterrupt)


def sigterm_as_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            TERMINATED.append(signum)
            raise Terminated()

        signal.signal(signal.SIGTERM, handler)


@contextmanager
def ray_session(address: str | None) -> Iterator[bool]:
    """Ray for the block (yields whether this block started it, and then shuts it down).
    SIGTERM inside is an interrupt, raised as `Terminated` even where Ray re-raised it as a
    plain KeyboardInterrupt, so callers tell the two apart by type."""
    started = connect_ray(address)
    sigterm_as_interrupt()  # after ray.init, which installs sys.exit on SIGTERM
    try:
        yield started
    except KeyboardInterrupt as e:
        if TERMINATED and not isinstance(e, Terminated):
            raise Terminated() from e
        raise
    finally:
        if started:
            import ray

            ray.shutdown()


def ray_died(error: BaseException) -> bool:
    """An error raised because the Ray cluster (GCS, raylet, the embedded Ray) went away."""
    e: BaseException | None = error
    while e is not None:
        if type(e).__module__.startswith("ray") or "raylet" in str(e) or "GCS" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def check_resources(cfg: StudyConfig) -> int:
    """Fail fast if no alive node can hold one run; return how many runs fit at once."""
    import ray

    need_cpu, need_gpu = cfg.resources.num_cpus, cfg.resources.num_gpus
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    best_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    best_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if not any(
        n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu for n in nodes
    ):
        key = "resources.num_gpus" if need_gpu > best_gpu else "resources.num_cpus"
        raise StudyError(
            key,
            f"no node can hold one run (asks {need_cpu:g} CPU, {need_gpu:g} GPU; "
            f"the largest node has {best_cpu:g} CPU, {best_gpu:g} GPU); lower the "
            "request or add a node that has it",
        )
    slots = 0
    for n in nodes:
        r = n["Resources"]
        fit = int(r.get("CPU", 0) // need_cpu) if need_cpu else 10**6
        if need_gpu:
            fit = min(fit, int(r.get("GPU", 0) // need_gpu))
        slots += fit
    return max(1, slots)
