"""Wall-time estimates for `scalelab plan`: pure functions, no Ray, no MLflow.

Three things make a plan's time honest: the FLOPs actually trained (wsd branches of one trunk
share its stable phase, so a trunk trains max S + sum(D - S) tokens, not sum D), a rate measured
on this study's own finished runs of the same device kind (another study's tiny models run at
another speed), and the makespan of largest-first dispatch over the slots that run at once.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

from ..store.states import RunState
from .grid import PlannedRun, WorkItem

ASSUMED_CPU_FLOPS = 1.0e10  # FLOP/s per CPU core for tiny models (measured 1-2e10 here)
ASSUMED_GPU_PEAK, ASSUMED_MFU = 989e12, 0.35  # H100 bf16 dense peak, a typical achieved MFU


def device_kind(num_gpus: float, device: str = "auto") -> str:
    """ "cuda" when the recipe asks for a GPU (resources.num_gpus or train.device), else "cpu"."""
    return "cuda" if num_gpus > 0 or device == "cuda" else "cpu"


def measured_rate(rows: Iterable, kind: str) -> tuple[float | None, int]:
    """Median FLOP/s per run of the finished ledger rows on `kind` ("cuda:0" counts as cuda),
    and how many rows it comes from. Pass this study's rows only."""
    rates = [
        r.flops_per_s
        for r in rows
        if r.state == RunState.FINISHED and r.flops_per_s and (r.device or "").split(":")[0] == kind
    ]
    return (statistics.median(rates) if rates else None), len(rates)


def assumed_rate(kind: str, num_cpus: float, num_gpus: float) -> float:
    """FLOP/s per run when nothing of this study was measured yet."""
    if kind == "cuda":
        return ASSUMED_GPU_PEAK * ASSUMED_MFU * max(1.0, num_gpus)
    return ASSUMED_CPU_FLOPS * max(1.0, num_cpus)


def trained_tokens(item: WorkItem) -> dict[str, int]:
    """Tokens each run of a work item trains itself. Cosine: its D. wsd: branch i (by D) trains
    the trunk from the previous branch's cooldown start S to its own, then its cooldown."""
    if item.trunk_key is None:
        return {p.key: p.tokens for p in item.runs}
    out, stable_done = {}, 0
    for p in sorted(item.runs, key=lambda r: r.tokens):
        start = min(p.spec.cooldown_start_tokens, p.tokens)
        out[p.key] = max(0, start - stable_done) + (p.tokens - start)
        stable_done = max(stable_done, start)
    return out


def trained_flops(items: Sequence[WorkItem]) -> dict[str, float]:
    """run_key -> training FLOPs actually spent on it (the point's FLOPs scaled by the share of
    its tokens it trains itself)."""
    out = {}
    for item in items:
        own = trained_tokens(item)
        for p in item.runs:
            out[p.key] = p.flops * own[p.key] / p.tokens
    return out


def makespan(durations_s: Sequence[float], slots: int) -> float:
    """Wall time of running jobs in the given order, each on the first free of `slots`."""
    free = [0.0] * max(1, slots)
    for d in durations_s:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def study_wall_time(
    planned: Sequence[PlannedRun],
    items: Sequence[WorkItem],
    rate: float,
    slots: int,
    done: AbstractSet[str] = frozenset(),
) -> float:
    """Seconds until every run not in `done` has trained, dispatched largest first."""
    flops = trained_flops(items)
    jobs = [sum(flops[p.key] for p in w.runs if p.key not in done) / rate for w in items]
    return makespan([j for j in jobs if j > 0], slots)
