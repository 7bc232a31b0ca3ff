"""How far to trust the answer at a budget: good / rough / poor, why, and what would improve it.

Three numbers decide, each printed beside the verdict:
  - the chosen form's cross-validated error over compute (analysis/selection.py): how well the
    law predicts runs more expensive than those it was fitted on;
  - the width of the 95% interval of N_opt at the budget, as a factor (hi / lo), from the
    bootstrap that repeats the form selection;
  - how many decades (log10 C / C_max) the budget lies beyond the largest run.
Other approaches (IsoFLOP profiles, the frontier of final points) vote only where they are
applicable, and only against "good": an N_opt outside the answer's interval caps it at rough.

Thresholds (benchmarks/calibration.py checks them on simulated studies with planted laws):
a calibrated 95% interval of width W holds the truth within sqrt(W)x of the estimate, so
"good" (width <= 4: within 2x) and "rough" (width <= 100: within 10x, an order of magnitude).
Measured on 100 studies (200 budgets): the intervals covered the true N_opt in 93-94% of
studies; budgets judged good had it within 2x in 99.2%, those judged rough within 10x in 100%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LEVELS = ("good", "rough", "poor")
THRESHOLDS = {
    "good": {"cv_error": 0.01, "width": 4.0, "decades": 1.0},
    "rough": {"cv_error": 0.03, "width": 100.0, "decades": 2.0},
}
WORDS = {
    "good": "reliable at this budget",
    "rough": "an order-of-magnitude guide only",
    "poor": "do not rely on it",
}


def budget_key(C: float) -> str:
    """A budget as it appears in MLflow keys and tables: 1e21, 3.5e21."""
    text = f"{C:.3g}"
    mant, exp = text.split("e") if "e" in text else (text, "0")
    return f"{mant}e{int(exp)}"


@dataclass(frozen=True)
class Verdict:
    """The verdict at one budget, with the numbers it rests on."""

    flops: float
    level: str
    cv_error: float | None
    width: float | None  # N_opt 95% interval hi / lo
    decades: float
    disagree: tuple[str, ...] = ()  # applicable approaches whose N_opt is outside the interval
    why: str = ""
    improve: str = ""
    limits: tuple[str, ...] = field(default=())  # what kept it from the level above

    @property
    def words(self) -> str:
        return WORDS[self.level]

    def line(self) -> str:
        """One line: the level, why, and what would improve it."""
        return (
            f"{budget_key(self.flops)} FLOPs ({self.decades:+.1f} decades): {self.level}, {self.words} "
            f"({self.why}). Next: {self.improve}"
        )


def _level_of(value: float | None, key: str) -> str:
    if value is None or not math.isfinite(value):
        return "poor"
    for lev in ("good", "rough"):
        if value <= THRESHOLDS[lev][key]:
            return lev
    return "poor"


def judge(
    flops: float,
    cv_error: float | None,
    width: float | None,
    decades: float,
    disagree=(),
    *,
    study: str = "STUDY.yaml",
) -> Verdict:
    """The verdict from the three numbers (and the applicable approaches' votes)."""
    levels = {
        "cv_error": _level_of(cv_error, "cv_error"),
        "width": _level_of(width, "width"),
        "decades": _level_of(max(decades, 0.0), "decades"),
    }
    level = max(levels.values(), key=LEVELS.index)
    if disagree and level == "good":
        level = "rough"
    below = [k for k, v in levels.items() if LEVELS.index(v) > 0]
    limits = tuple(k for k in below if levels[k] == level) or (("approaches",) if disagree else ())
    why = "; ".join(
        [
            (f"CV error {cv_error:.2%}" if cv_error is not None else "CV error not measurable"),
            (
                f"N_opt interval {width:.3g}x wide"
                if width is not None and math.isfinite(width)
                else "no N_opt interval"
            ),
        ]
        + ([f"{', '.join(disagree)} outside it"] if disagree else [])
    )
    return Verdict(
        float(flops),
        level,
        cv_error,
        width,
        float(decades),
        tuple(disagree),
        why,
        _improve(limits, flops, decades, cv_error, study),
        limits,
    )


def _improve(limits, flops: float, decades: float, cv_error: float | None, study: str) -> str:
    C = budget_key(flops)
    if not limits:
        return f"`scalelab verify {study} --budget {C}` tests this prediction by training at it"
    tips = []
    if "cv_error" in limits:
        tips.append(
            "more model sizes and token budgets (cross-validation needs >= 3 of each below a compute "
            "threshold, with runs above it)"
            if cv_error is None
            else f"more runs at the largest sizes and budgets (the law misses held-out runs by {cv_error:.1%})"
        )
    if "width" in limits:
        tips.append(
            f"`scalelab suggest {study} --target-flops {C}` picks the runs that narrow N_opt most per FLOP"
            if decades > 0
            else f"runs on this budget's IsoFLOP line around N_opt (`scalelab verify {study} --budget {C}` "
            "trains three and tests the prediction)"
        )
    if "decades" in limits:
        tips.append(f"runs closer to the budget ({decades:.1f} decades beyond the largest run)")
    if "approaches" in limits:
        tips.append(f"`scalelab verify {study} --budget {C}` settles the disagreement by training at it")
    return "; ".join(tips)
