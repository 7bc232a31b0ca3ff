"""Mixture-of-experts scaling laws.

Input frame columns: experts, top_k, n_params (total), n_params_active, granularity, tokens,
loss (dense runs have experts 0 or 1).

1. At a fixed expert configuration (experts, top_k, granularity): the dense Approach 3 law in
   ACTIVE parameters (`fit_moe_per_config`).
2. Across expert counts, Clark et al. (2022):
       log L = a log N + b log Ê + c log N log Ê + d,
   N the dense base (active) parameters, Ê a saturating transform of the expert count E:
       Ê = 1 / (1 / (E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max)
   which is E for E_start = 1, E_max = inf, and saturates at E_max for large E (our reading of
   Clark et al.'s transform; E_start and E_max are hyperparameters here, not fitted). The law is
   linear in (a, b, c, d): ordinary least squares on log L (`ClarkFit`).
3. Fine-grained MoE, Krajewski et al. (2024), granularity G = d_ff / d_expert:
       L(N, D, G) = c + (a + g / G^gamma) N^-alpha + b D^-beta,   N = active parameters,
   fitted by Huber on log loss from a small grid of starts (`KrajewskiFit`).
4. Effective dense parameter count of a MoE setting: the dense N that the dense law says reaches
   the same loss at the same D: N_eff = (A / (L - E - B/D^beta))^(1/alpha)
   (`effective_dense_params`). Infinite (flagged) if the MoE loss is below what any dense model
   reaches at that D.
Small data: every fitter reports unidentifiable instead of returning a number when there are
too few distinct sizes / expert counts / granularities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber

from ..groups import is_dense
from ..result import FitResult, estimator_result
from .chinchilla import ChinchillaFit

CONFIG_COLS = ("experts", "top_k", "granularity")


def _config_cols(df):
    return [c for c in CONFIG_COLS if c in df.columns]


def fit_moe_per_config(frame: pd.DataFrame, *, grid="coarse") -> dict:
    """{config tuple: ChinchillaFit in active parameters} for every MoE configuration."""
    out = {}
    df = frame[~is_dense(frame)]
    for key, g in df.groupby(_config_cols(df)):
        key = key if isinstance(key, tuple) else (key,)
        n = g["n_params_active"] if "n_params_active" in g else g["n_params"]
        out[key] = ChinchillaFit(grid=grid).fit(n, g["tokens"], g["loss"])
    return out


def saturating_experts(E, E_start: float = 1.0, E_max: float = np.inf):
    """Clark et al.'s saturating transform Ê(E) (see module docstring); Ê(1) = 1."""
    E = np.maximum(np.asarray(E, float), 1.0)
    inv_max = 0.0 if not np.isfinite(E_max) else 1.0 / E_max
    k = 1.0 / (1.0 / E_start - inv_max)
    return 1.0 / (1.0 / (E - 1.0 + k) + inv_max)


class ClarkFit:
    """log L = a log N + b log Ê + c log N log Ê + d by least squares.

    Fitted: coef_ {"a", "b", "c", "d"}, success_, message_, n_points_, rmse_ (log loss)."""

    def __init__(self, *, E_start: float = 1.0, E_max: float = np.inf, n_col: str = "n_params_active"):
        self.E_start = E_start
        self.E_max = E_max
        self.n_col = n_col

    def fit(self, frame: pd.DataFrame):
        n_col = self.n_col if self.n_col in frame else "n_params"
        N = frame[n_col].to_numpy(float)
        E = np.maximum(frame["experts"].fillna(1).to_numpy(float), 1.0)
        L = frame["loss"].to_numpy(float)
        self.n_points_ = len(frame)
        problems = []
        if np.unique(E).size < 2:
            problems.append("a single expert count: b and c are unidentifiable")
        if np.unique(N).size < 2:
            problems.append("a single model size: a and c are unidentifiable")
        if len(frame) <= 4:
            problems.append(f"{len(frame)} points for 4 parameters")
        if problems:
            self.coef_ = dict.fromkeys("abcd", np.nan)
            self.success_ = False
            self.message_ = "unidentifiable: " + "; ".join(problems)
            return self
        x, e = np.log(N), np.log(saturating_experts(E, self.E_start, self.E_max))
        X = np.column_stack([x, e, x * e, np.ones_like(x)])
        coef, _, rank, _ = np.linalg.lstsq(X, np.log(L), rcond=None)
        if rank < 4:
            self.coef_ = dict.fromkeys("abcd", np.nan)
            self.success_ = False
            self.message_ = "unidentifiable: design matrix is rank deficient (N and E confounded)"
            return self
        self.coef_ = dict(zip("abcd", map(float, coef)))
        self.rmse_ = float(np.sqrt(np.mean((X @ coef - np.log(L)) ** 2)))
        self.success_ = True
        self.message_ = f"fitted on {len(frame)} runs, {np.unique(E).size} expert counts"
        return self

    @property
    def result_(self) -> FitResult:
        """This fit as a FitResult: params a, b, c, d; objective the RMSE of log loss."""
        return estimator_result(
            self, "clark", getattr(self, "coef_", {}), objective=getattr(self, "rmse_", float("nan"))
        )

    def predict(self, N, experts):
        x = np.log(np.asarray(N, float))
        e = np.log(saturating_experts(experts, self.E_start, self.E_max))
        c = self.coef_
        return np.exp(c["a"] * x + c["b"] * e + c["c"] * x * e + c["d"])


class KrajewskiFit:
    """L = c + (a + g/G^gamma) N^-alpha + b D^-beta (N active params, G granularity).

    Fitted: params_ {c, a, g, gamma, alpha, b, beta}, objective_, success_, message_."""

    names = ("c", "a", "g", "gamma", "alpha", "b", "beta")

    def __init__(self, *, delta: float = 1e-3, n_col: str = "n_params_active"):
        self.delta = delta
        self.n_col = n_col

    def _pred(self, th, N, D, G):
        c, a, g, gam, al, b, be = th
        return np.exp(c) + (np.exp(a) + np.exp(g) / G**gam) * N**-al + np.exp(b) * D**-be

    def fit(self, frame: pd.DataFrame):
        n_col = self.n_col if self.n_col in frame else "n_params"
        N, D, G, L = (frame[c].to_numpy(float) for c in (n_col, "tokens", "granularity", "loss"))
        self.n_points_ = len(frame)
        problems = []
        if np.unique(G).size < 3:
            problems.append(f"{np.unique(G).size} distinct granularities (need >= 3 for g, gamma)")
        if np.unique(N).size < 2 or np.unique(D).size < 2:
            problems.append("need >= 2 distinct N and D")
        if len(frame) <= 7:
            problems.append(f"{len(frame)} points for 7 parameters")
        if problems:
            self.params_ = dict.fromkeys(self.names, np.nan)
            self.success_ = False
            self.message_ = "unidentifiable: " + "; ".join(problems)
            return self
        lL = np.log(L)

        def obj(th):
            with np.errstate(all="ignore"):
                r = np.log(self._pred(th, N, D, G)) - lL
            if not np.all(np.isfinite(r)):
                return 1e10
            return float(np.sum(huber(self.delta, r)))

        best = None
        for c0 in (np.log(0.5 * L.min()), np.log(0.9 * L.min())):
            for al in (0.2, 0.4):
                for gam in (0.3, 1.0):
                    th0 = [c0, np.log(5.0), np.log(5.0), gam, al, np.log(100.0), 0.3]
                    r = minimize(
                        obj, th0, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
                    )
                    if best is None or r.fun < best.fun:
                        best = r
        assert best is not None  # the loops above always run
        th = best.x
        self.params_ = {
            "c": float(np.exp(th[0])),
            "a": float(np.exp(th[1])),
            "g": float(np.exp(th[2])),
            "gamma": float(th[3]),
            "alpha": float(th[4]),
            "b": float(np.exp(th[5])),
            "beta": float(th[6]),
        }
        self.theta_ = th
        self.objective_ = float(best.fun)
        self.success_ = bool(np.isfinite(best.fun) and best.fun < 1e9)
        self.converged_ = bool(best.success)
        self.message_ = str(best.message)
        return self

    @property
    def result_(self) -> FitResult:
        """This fit as a FitResult: params c, a, g, gamma, alpha, b, beta."""
        return estimator_result(self, "krajewski", getattr(self, "params_", {}))

    def predict(self, N, D, G):
        return self._pred(self.theta_, np.asarray(N, float), np.asarray(D, float), np.asarray(G, float))


def effective_dense_params(loss, tokens, dense_params: dict) -> np.ndarray:
    """Dense N reaching `loss` at `tokens` under the dense law; inf where unreachable."""
    p = dense_params
    L = np.asarray(loss, float)
    D = np.asarray(tokens, float)
    gap = L - p["E"] - p["B"] / D ** p["beta"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (p["A"] / gap) ** (1.0 / p["alpha"]), np.inf)


def moe_effective_table(
    frame: pd.DataFrame, dense_fit: ChinchillaFit, budgets=None, per_config: dict | None = None
) -> pd.DataFrame:
    """Effective dense N of each MoE setting: per run (observed loss at its D) and, when a
    per-config law exists, at each budget C with D = C/(6 N_active) for each active size."""
    rows = []
    if not dense_fit.success_:
        return pd.DataFrame()
    moe = frame[~is_dense(frame)]
    n_act = moe["n_params_active"] if "n_params_active" in moe else moe["n_params"]
    neff = effective_dense_params(moe["loss"], moe["tokens"], dense_fit.params_)
    for (_, r), na, ne in zip(moe.iterrows(), n_act, neff):
        rows.append(
            {
                "source": "run",
                **{c: r[c] for c in _config_cols(moe)},
                "n_params_active": na,
                "n_params": r["n_params"],
                "flops": r["flops"],
                "tokens": r["tokens"],
                "loss": r["loss"],
                "n_eff": ne,
                "n_eff_over_active": ne / na,
            }
        )
    if budgets is not None and per_config:
        for key, fit in per_config.items():
            if not fit.success_:
                continue
            g = moe[np.all([moe[c] == v for c, v in zip(_config_cols(moe), key)], axis=0)]
            for C in budgets:
                for na in sorted(set(g["n_params_active"] if "n_params_active" in g else g["n_params"])):
                    D = C / (6 * na)
                    L = float(fit.predict(na, D))
                    ne = float(effective_dense_params(L, D, dense_fit.params_))
                    rows.append(
                        {
                            "source": f"law@C={C:.3g}",
                            **dict(zip(_config_cols(moe), key)),
                            "n_params_active": na,
                            "flops": C,
                            "tokens": D,
                            "loss": L,
                            "n_eff": ne,
                            "n_eff_over_active": ne / na,
                        }
                    )
    return pd.DataFrame(rows)


def fit_clark(frame, **kw) -> ClarkFit:
    return ClarkFit(**kw).fit(frame)


def fit_krajewski(frame, **kw) -> KrajewskiFit:
    return KrajewskiFit(**kw).fit(frame)
