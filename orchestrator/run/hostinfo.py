"""What this process may actually use of the machine: CPUs (affinity, cgroup v2 quota) and
memory (MemAvailable, cgroup v2 limit). Pure parsers plus thin readers of /proc and /sys, so a
container or a CPU-limited cgroup is not oversubscribed the way os.cpu_count() would."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"); None = no limit."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_dirs(proc_cgroup: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """This process's cgroup v2 directory and its ancestors (limits of each apply)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            rel = line[3:].strip().strip("/")
            d = root / rel if rel else root
            return [d, *[p for p in d.parents if p == root or root in p.parents]]
    return []


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def available_cpus(affinity: set[int] | None = None, dirs: list[Path] | None = None) -> int:
    """Whole CPUs this process may run on: the affinity mask, capped by every cgroup v2
    `cpu.max` quota on its path (rounded up: a 1.5-CPU quota still runs two threads). >= 1."""
    if affinity is None:
        affinity = (
            set(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else set(range(os.cpu_count() or 1))
        )
    if dirs is None:
        dirs = cgroup_dirs(_read(Path("/proc/self/cgroup")) or "")
    n = float(len(affinity) or 1)
    for d in dirs:
        text = _read(d / "cpu.max")
        quota = parse_cpu_max(text) if text else None
        if quota is not None:
            n = min(n, quota)
    return max(1, math.ceil(n))


def available_memory_bytes(meminfo: str | None = None, dirs: list[Path] | None = None) -> int | None:
    """Bytes this process could still allocate: MemAvailable, capped by every cgroup v2
    `memory.max - memory.current` on its path. None when nothing can be read."""
    if meminfo is None:
        meminfo = _read(Path("/proc/meminfo")) or ""
    avail = None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
    if dirs is None:
        dirs = cgroup_dirs(_read(Path("/proc/self/cgroup")) or "")
    for d in dirs:
        limit, used = _read(d / "memory.max"), _read(d / "memory.current")
        if limit and limit.strip().isdigit():
            free = int(limit) - int(used.strip()) if used and used.strip().isdigit() else int(limit)
            avail = free if avail is None else min(avail, free)
    return avail
