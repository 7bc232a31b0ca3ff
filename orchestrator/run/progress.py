"""Live progress of a study: runs by state, FLOPs done/total, ETA, last loss per run.

A rich live table on a terminal; plain lines (at most one every `every_s` seconds, plus one per
state change) when stdout is not a terminal, so CI logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..store.ledger import LedgerRow
from ..store.states import RunState
from ..study.grid import PlannedRun


def _fmt_s(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def bar(frac: float, width: int = 20) -> str:
    """A text progress bar: `#` for done, `.` for to do."""
    n = int(round(max(0.0, min(1.0, frac)) * width))
    return "[" + "#" * n + "." * (width - n) + "]"


def summarize(
    planned: Sequence[PlannedRun], rows: dict[str, LedgerRow], elapsed_s: float, flops_at_start: float
) -> dict:
    """Pure summary used by both displays and by `scalelab status --json`."""
    states = Counter(RunState.of(rows[p.key].state if p.key in rows else None).value for p in planned)
    total = sum(p.flops for p in planned)
    done = 0.0
    for p in planned:
        r = rows.get(p.key)
        if r is None:
            continue
        if r.done:
            done += p.flops
        elif r.tokens_done:
            done += p.flops * min(1.0, r.tokens_done / p.tokens)
    rate = (done - flops_at_start) / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    return {
        "states": dict(states),
        "flops_done": done,
        "flops_total": total,
        "eta_s": eta,
        "elapsed_s": elapsed_s,
    }


class Progress:
    def __init__(
        self, study: str, planned: Sequence[PlannedRun], *, every_s: float = 15.0, enabled: bool = True
    ):
        self.study, self.planned = study, list(planned)
        self.tty = sys.stdout.isatty()
        self.enabled, self.every_s = enabled, every_s
        self.console = Console()
        self.live: Live | None = None
        self._last_line = 0.0
        self._last_states: dict | None = None
        self.t0 = time.monotonic()
        self.flops_at_start: float | None = None
        self._warm: tuple[float, float] | None = None  # (time, FLOPs done) at the first progress

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, rows: dict[str, LedgerRow]) -> dict:
        elapsed = time.monotonic() - self.t0
        if self.flops_at_start is None:
            self.flops_at_start = summarize(self.planned, rows, 0, 0)["flops_done"]
        s = summarize(self.planned, rows, elapsed, self.flops_at_start)
        s["eta_s"] = self._eta(s["flops_done"], s["flops_total"])
        if not self.enabled:
            return s
        if self.live is not None:
            self.live.update(self._table(s, rows))
        elif s["states"] != self._last_states or time.monotonic() - self._last_line > self.every_s:
            self._last_line = time.monotonic()
            self._last_states = s["states"]
            print(self._line(s), flush=True)
        return s

    def _eta(self, done: float, total: float) -> float | None:
        """Seconds left at the rate this study's runs reached since their first progress: the
        warm-up before it (Ray, workers loading torch, earlier studies) is not counted."""
        now = time.monotonic()
        if self._warm is None:
            if done > (self.flops_at_start or 0.0):
                self._warm = (now, done)
            return None
        t_w, done_w = self._warm
        if done >= total:
            return 0.0
        if now - t_w < 1.0 or done <= done_w:
            return None
        return (total - done) / ((done - done_w) / (now - t_w))

    def _line(self, s: dict) -> str:
        states = " ".join(f"{k}={v}" for k, v in sorted(s["states"].items()))
        frac = s["flops_done"] / s["flops_total"] if s["flops_total"] else 1.0
        eta = (
            f"ETA {_fmt_s(s['eta_s'])}"
            if s["eta_s"] is not None
            else "ETA: measuring"
            if self._warm
            else "workers starting"
        )
        return (
            f"[{self.study}] {bar(frac)} {100 * frac:3.0f}% of "
            f"{s['flops_total']:.3g} FLOPs | {states} | elapsed {_fmt_s(s['elapsed_s'])}, {eta}"
        )

    def _table(self, s: dict, rows: dict[str, LedgerRow]) -> Table:
        t = Table(title=escape(self._line(s)), title_justify="left")
        for col in ("run", "key", "N", "D", "state", "tokens done", "last loss", "val_loss"):
            t.add_column(col)
        order = {
            RunState.RUNNING: 0,
            RunState.PENDING: 1,
            RunState.FAILED: 2,
            RunState.KILLED: 3,
            RunState.DIVERGED: 4,
            RunState.FINISHED: 5,
        }
        shown = sorted(
            self.planned,
            key=lambda p: order.get(RunState.of(rows[p.key].state if p.key in rows else None), 9),
        )[:30]
        for p in shown:
            r = rows.get(p.key)
            state = RunState.of(r.state if r else None).value
            done = f"{100 * (r.tokens_done or 0) / p.tokens:.0f}%" if r else ""
            t.add_row(
                p.label,
                p.key[:8],
                f"{p.n_params:.3g}",
                f"{p.tokens:.3g}",
                state,
                done,
                f"{r.last_loss:.4f}" if r and r.last_loss is not None else "",
                f"{r.val_loss:.4f}" if r and r.val_loss is not None else "",
            )
        return t
