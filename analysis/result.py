"""One result type for every fit, modelled on `scipy.optimize.OptimizeResult`.

Every estimator (Approach 3 and its forms, Kaplan power laws, IsoFLOP, envelope, MoE,
data-constrained) keeps its scikit-learn surface (`fit`, `predict`, fitted attributes with a
trailing underscore) and also exposes `result_`, a `FitResult`. The CLI's `fit --json`, the
report and the bootstrap read `FitResult` only, so adding a law never adds a translation.
A failed fit is a result with `success=False` and a `message`; it is never raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class FitResult:
    """The outcome of one fit.

    law: the law's name as the CLI spells it (`chinchilla`, `kaplan-n`, `compute`, ...).
    params: fitted parameters by name (NaN when the fit failed).
    objective: the minimised objective (Huber on log loss, unless the law says otherwise).
    success: the parameters are usable (finite, in their admissible range).
    converged: the optimiser's convergence check passed.
    identifiable: the data can determine every free parameter.
    message: why, in words; the first thing to print when `success` is False.
    n_points: points the fit used.
    exponents: allocation exponents `{"a", "b"}` (N_opt ~ C^a, D_opt ~ C^b) where defined.
    ci95: 95% bootstrap intervals by parameter or derived quantity.
    compute_optimal: rows `{"flops", "n_params", "tokens", "tokens_per_param", "loss"}`.
    extra: law-specific fields (groups, held-out errors, ...) merged into the JSON.
    """

    law: str
    params: dict[str, float]
    objective: float
    success: bool
    converged: bool
    identifiable: bool
    message: str
    n_points: int
    exponents: dict[str, float | None] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    compute_optimal: list[dict[str, float | None]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, law: str, message: str, n_points: int, param_names: tuple[str, ...] = ()) -> FitResult:
        """A failed fit: NaN parameters, success and convergence False."""
        return cls(
            law=law,
            params=dict.fromkeys(param_names, math.nan),
            objective=math.nan,
            success=False,
            converged=False,
            identifiable=False,
            message=message,
            n_points=n_points,
        )

    def with_(self, **changes: Any) -> FitResult:
        """A copy with some fields replaced (results are frozen)."""
        return replace(self, **changes)

    def __getitem__(self, key: str) -> Any:
        # OptimizeResult-style access: res["params"] as well as res.params
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The `scalelab fit --json` contract (plus `extra`), with tuples as lists."""
        out: dict[str, Any] = {
            "law": self.law,
            "n_points": self.n_points,
            "params": dict(self.params),
            "objective": self.objective,
            "converged": self.converged,
            "identifiable": self.identifiable,
            "success": self.success,
            "message": self.message,
            "ci95": {k: list(v) for k, v in self.ci95.items()},
            "compute_optimal": [dict(r) for r in self.compute_optimal],
            "exponents": dict(self.exponents),
        }
        out.update(self.extra)
        return out


def optimal_rows(table: Any) -> list[dict[str, float | None]]:
    """A compute-optimal table (DataFrame with flops, n_params, tokens, tokens_per_param, loss)
    as the JSON rows of the contract; NaN cells become None."""
    cols = ("flops", "n_params", "tokens", "tokens_per_param", "loss")
    return [
        {c: (float(r[c]) if r.get(c) is not None and math.isfinite(float(r[c])) else None) for c in cols}
        for r in table.to_dict("records")
    ]


def result_at(estimator: Any, budgets: Any = None) -> FitResult:
    """`estimator.result_` with its compute-optimal rows at `budgets` (FLOPs) filled in, for
    estimators that allocate compute (Approaches 1-3); others are returned unchanged."""
    res: FitResult = estimator.result_
    if not budgets or not res.success or not hasattr(estimator, "compute_optimal"):
        return res
    return res.with_(compute_optimal=optimal_rows(estimator.compute_optimal(list(budgets))))


def estimator_result(
    est: Any,
    law: str,
    params: dict[str, float],
    *,
    exponents: dict[str, float | None] | None = None,
    objective: float | None = None,
) -> FitResult:
    """Build `est.result_` from the fitted attributes every estimator keeps: success_,
    message_, n_points_, and where it has them converged_, identifiable_, objective_.
    Raises AttributeError (as sklearn does) when `est` is not fitted."""
    if not hasattr(est, "success_"):
        raise AttributeError(f"{type(est).__name__} is not fitted: call fit(...) first")
    message = str(est.message_)
    ok = bool(est.success_)
    return FitResult(
        law=law,
        params={k: float(v) for k, v in params.items()},
        objective=float(getattr(est, "objective_", math.nan) if objective is None else objective),
        success=ok,
        converged=bool(getattr(est, "converged_", ok)),
        identifiable=bool(getattr(est, "identifiable_", not message.startswith("unidentifiable"))),
        message=message,
        n_points=int(est.n_points_),
        exponents=dict(exponents or {}),
    )
