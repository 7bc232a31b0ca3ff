"""Learning-rate schedules: pure functions of the tokens seen at the END of an optimizer step.

Step s (0-based) of a run with B tokens per step uses lr(t = (s+1)·B), so the first step is
already warmed up a little and the last step (t = D) uses exactly the schedule's final value.

- cosine: linear warmup 0 -> peak over W tokens, then a half cosine from peak to
  min_lr_ratio·peak that lands exactly at the run's own budget D.
- wsd (warmup-stable-decay, Hägele et al. 2024): linear warmup, constant peak until the
  cooldown start S, then 1 - sqrt((t - S)/(D - S)) down to 0 at D. Everything before S depends
  only on (W, peak), so branches with different D share the trunk exactly.
"""

from __future__ import annotations

import math


def _warmup(t: float, warmup: float, peak: float) -> float | None:
    if warmup > 0 and t < warmup:
        return peak * t / warmup
    return None


def cosine_lr(t: float, *, total: float, warmup: float, peak: float, min_ratio: float = 0.1) -> float:
    w = _warmup(t, warmup, peak)
    if w is not None:
        return w
    if t >= total:
        return peak * min_ratio
    progress = (t - warmup) / max(total - warmup, 1e-12)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def wsd_lr(t: float, *, total: float, warmup: float, peak: float, cooldown_start: float) -> float:
    w = _warmup(t, warmup, peak)
    if w is not None:
        return w
    if t <= cooldown_start:
        return peak
    if t >= total:
        return 0.0
    return peak * (1.0 - math.sqrt((t - cooldown_start) / (total - cooldown_start)))


def lr_at(
    t: float,
    *,
    schedule: str,
    total: float,
    warmup: float,
    peak: float,
    min_ratio: float = 0.1,
    cooldown_start: float = 0.0,
) -> float:
    """Dispatch by schedule name ("cosine" or "wsd")."""
    if schedule == "cosine":
        return cosine_lr(t, total=total, warmup=warmup, peak=peak, min_ratio=min_ratio)
    if schedule == "wsd":
        return wsd_lr(t, total=total, warmup=warmup, peak=peak, cooldown_start=cooldown_start)
    raise ValueError(f"unknown schedule {schedule!r}")
