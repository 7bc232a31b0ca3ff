"""Comparing architectures: does a design choice move the constant or the exponent of a law?

Input: a points frame (`analysis.load_mlflow(...).frame` or any table with n_params, tokens,
flops, loss and the `arch` / `pos` / `activation` / `norm` / `objective` params). Variants are
compared only inside one stratum, (objective, experts, top_k): an MLM loss is not a CLM loss and
an MoE law is not a dense one, so fits are never pooled across them.

Per stratum:
- per-variant laws: Approach 3 (L = E + A/N^α + B/D^β) and L(C) on the compute frontier, each
  with a bootstrap over runs (percentile 95% intervals);
- a joint fit with one shared E and per-variant (A, α), (B, β) (Huber on log loss, as Approach 3)
  and the bootstrap interval of Δα, Δβ of each variant against the baseline (resampling runs
  within each variant);
- the effective compute multiplier m(C) = C_base(L*_v(C)) / C: how much compute the baseline
  needs, on its compute-optimal frontier, to reach the loss the variant reaches with C (C = 6·N·D
  as in the fit; m > 1: the variant is worth more compute), at budgets inside and beyond the data,
  and any crossover (m = 1).
- length extrapolation: loss against evaluation length (train.eval_lengths) per variant and size.
Pure numpy/scipy/pandas; the report section is analysis/report/compare.py. Never imports
torch or ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from .laws.chinchilla import DEFAULT_DELTA, ChinchillaFit
from .laws.kaplan import fit_compute_frontier
from .result import FitResult

BASELINE = "learned-gelu-pre-clm"
ARCH_KEYS = ("pos", "activation", "norm", "objective")
ARCH_DEFAULTS = ("learned", "gelu", "pre", "clm")
MIN_POINTS = 6  # Approach 3 has 5 parameters
MAX_LC_BOOT = 30


# --------------------------------------------------------------------------- grouping


def with_arch(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `arch`, `objective` and a `stratum` label; runs logged before the
    architecture params existed are the default architecture."""
    df = frame.copy()
    for k, default in zip(ARCH_KEYS, ARCH_DEFAULTS):
        df[k] = df[k].fillna(default).astype(str) if k in df.columns else default
    if "arch" not in df.columns:
        df["arch"] = df[list(ARCH_KEYS)].agg("-".join, axis=1)
    df["arch"] = df["arch"].fillna(df[list(ARCH_KEYS)].agg("-".join, axis=1)).astype(str)
    experts = pd.to_numeric(df.get("experts", 1), errors="coerce")
    top_k = pd.to_numeric(df.get("top_k", 1), errors="coerce")
    experts = pd.Series(experts, index=df.index).fillna(1).astype(int)
    top_k = pd.Series(top_k, index=df.index).fillna(1).astype(int)
    df["stratum"] = [
        o if e == 1 else f"{o}, experts={e} top_k={k}" for o, e, k in zip(df["objective"], experts, top_k)
    ]
    return df


def _baseline_of(labels: list[str], objective: str, baseline: str | None) -> str:
    if baseline and baseline in labels:
        return baseline
    default = f"learned-gelu-pre-{objective}"
    return default if default in labels else sorted(labels)[0]


# --------------------------------------------------------------------------- per-variant laws


def _ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return (math.nan, math.nan)
    q = (1 - level) / 2
    return (float(np.quantile(s, q)), float(np.quantile(s, 1 - q)))


def _starts(loss: np.ndarray) -> np.ndarray:
    """72 Approach 3 starts (log E, log A, log B, α, β) around this variant's losses: a
    per-variant fit runs many times (bootstrap, report), the 1024-start grid is too slow."""
    lo = float(np.min(loss))
    grid = np.meshgrid(
        [math.log(0.5 * lo), math.log(0.9 * lo)],
        [2.0, 5.0, 8.0],
        [2.0, 5.0, 8.0],
        [0.2, 0.5],
        [0.2, 0.5],
        indexing="ij",
    )
    return np.stack([g.ravel() for g in grid], axis=1)


def _approach3(df: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> FitResult:
    """Approach 3 on one variant, with a bootstrap over its runs (warm-started refits)."""
    N, D, L = (df[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
    est = ChinchillaFit(grid=_starts(L), n_polish=2).fit(N, D, L)
    names = ("E", "A", "B", "alpha", "beta")
    if not est.success_:
        return FitResult.failure("chinchilla", est.message_, N.size, names)
    boot: list[list[float]] = []
    for _ in range(n_boot):
        i = rng.integers(0, N.size, N.size)
        b = ChinchillaFit(grid=est.theta_[None], n_polish=1, maxiter=200).fit(N[i], D[i], L[i])
        boot.append([b.params_[k] for k in names] if b.success_ else [math.nan] * 5)
    return _with_intervals("chinchilla", est, boot, names, N.size)


def _compute_law(df: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> FitResult:
    """L(C) on the variant's compute frontier, with a bootstrap over its runs (at most
    MAX_LC_BOOT resamples: each refit is a multi-start fit)."""
    C, L = df["flops"].to_numpy(float), df["loss"].to_numpy(float)
    est = fit_compute_frontier(C, L)
    names = ("E", "x_c", "alpha")
    if not est.success_:
        return FitResult.failure("compute", est.message_, C.size, names)
    boot: list[list[float]] = []
    for _ in range(min(n_boot, MAX_LC_BOOT)):
        i = rng.integers(0, C.size, C.size)
        b = fit_compute_frontier(C[i], L[i])
        boot.append([b.params_[k] for k in names] if b.success_ else [math.nan] * 3)
    return _with_intervals("compute", est, boot, names, C.size)


def _with_intervals(
    law: str, est, boot: list[list[float]], names: tuple[str, ...], n_points: int
) -> FitResult:
    """A successful fit as a FitResult, with percentile intervals from its bootstrap refits."""
    draws = np.array(boot, dtype=float).reshape(-1, len(names))
    return FitResult(
        law=law,
        params=dict(est.params_),
        objective=est.objective_,
        success=True,
        converged=bool(est.converged_),
        identifiable=True,
        message=est.message_,
        n_points=n_points,
        ci95={k: _ci(draws[:, j]) for j, k in enumerate(names)},
    )


# --------------------------------------------------------------------------- joint fit


def _joint_fg(theta, lN, lD, lL, v, n_var, delta):
    """Huber objective (on log loss) and gradient of L = E + A_v/N^α_v + B_v/D^β_v."""
    P = theta[1:].reshape(n_var, 4)  # log A, log B, α, β per variant
    terms = np.stack([np.full_like(lN, theta[0]), P[v, 0] - P[v, 2] * lN, P[v, 1] - P[v, 3] * lD])  # (3, n)
    top = terms.max(axis=0)
    w = np.exp(terms - top)
    pred = top + np.log(w.sum(axis=0))
    w /= w.sum(axis=0)
    r = pred - lL
    f = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    h = np.clip(r, -delta, delta)
    g = np.zeros_like(theta)
    g[0] = (h * w[0]).sum()
    gp = np.zeros((n_var, 4))
    for j, col in enumerate((h * w[1], h * w[2], -h * w[1] * lN, -h * w[2] * lD)):
        gp[:, j] = np.bincount(v, weights=col, minlength=n_var)
    g[1:] = gp.ravel()
    return f, g


def _center(theta: np.ndarray, cN: float, cD: float, sign: int) -> np.ndarray:
    """Map log A, log B to (sign=-1) or from (+1) the intercepts at centred log N, log D:
    log A - α·cN decouples A from α, which makes the fit well conditioned."""
    t = theta.copy()
    P = t[1:].reshape(-1, 4)
    P[:, 0] += sign * P[:, 2] * cN
    P[:, 1] += sign * P[:, 3] * cD
    return t


def _joint_solve(
    lN, lD, lL, v, n_var, starts, delta=DEFAULT_DELTA, maxiter: int = 2000
) -> tuple[np.ndarray, float]:
    cN, cD = float(lN.mean()), float(lD.mean())
    best, best_f = None, math.inf
    bounds = [(None, None)] + [(None, None), (None, None), (0.0, 3.0), (0.0, 3.0)] * n_var
    for theta0 in starts:
        res = minimize(
            _joint_fg,
            _center(np.asarray(theta0, float), cN, cD, -1),
            args=(lN - cN, lD - cD, lL, v, n_var, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-10},
        )
        if res.fun < best_f:
            best, best_f = _center(res.x, cN, cD, +1), float(res.fun)
    if best is None:
        raise RuntimeError("the joint fit found no finite objective from any start")
    return best, best_f


@dataclass
class JointFit:
    """Shared-E joint fit of the variants of one stratum. `result_` is its FitResult; `theta_`
    is [log E, then (log A, log B, α, β) per variant in `variants_` order]; `draws_` the
    bootstrap thetas (rows)."""

    variants_: list[str]
    baseline_: str
    theta_: np.ndarray
    draws_: np.ndarray
    result_: FitResult

    def params_of(self, theta: np.ndarray, variant: str) -> dict[str, float]:
        la, lb, a, b = theta[1:].reshape(-1, 4)[self.variants_.index(variant)]
        return {
            "E": float(np.exp(theta[0])),
            "A": float(np.exp(la)),
            "B": float(np.exp(lb)),
            "alpha": float(a),
            "beta": float(b),
        }


def fit_joint(
    df: pd.DataFrame, baseline: str, per_variant: dict[str, FitResult], *, n_boot: int = 100, seed: int = 0
) -> JointFit:
    """One shared E, per-variant (A, α), (B, β); bootstrap resamples runs within each variant."""
    variants = sorted(df["arch"].unique(), key=lambda a: (a != baseline, a))
    v = df["arch"].map({a: i for i, a in enumerate(variants)}).to_numpy()
    lN, lD, lL = (np.log(df[c].to_numpy(float)) for c in ("n_params", "tokens", "loss"))
    starts_by_variant: list[list[float]] = []
    for a in variants:
        p = (
            per_variant[a].params
            if per_variant[a].success
            else {"A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3}
        )
        starts_by_variant.append([math.log(p["A"]), math.log(p["B"]), p["alpha"], p["beta"]])
    base = np.array(starts_by_variant).ravel()
    Es = [per_variant[a].params["E"] for a in variants if per_variant[a].success]
    E0 = [float(np.median(Es))] if Es else []
    starts = [np.concatenate([[math.log(e)], base]) for e in [*E0, 0.5 * float(np.exp(lL).min())] if e > 0]
    theta, f = _joint_solve(lN, lD, lL, v, len(variants), starts)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(v == i) for i in range(len(variants))]
    boot: list[np.ndarray] = []
    for _ in range(n_boot):
        i = np.concatenate([rng.choice(g, g.size) for g in groups])
        t, _ = _joint_solve(lN[i], lD[i], lL[i], v[i], len(variants), [theta], maxiter=300)
        boot.append(t)
    draws = np.array(boot).reshape(-1, theta.size)
    params = {"E": float(np.exp(theta[0]))}
    for j, a in enumerate(variants):
        for k, val in zip(
            ("A", "B", "alpha", "beta"),
            (np.exp(theta[1 + 4 * j]), np.exp(theta[2 + 4 * j]), theta[3 + 4 * j], theta[4 + 4 * j]),
        ):
            params[f"{k}[{a}]"] = float(val)
    ci = {"E": _ci(np.exp(draws[:, 0]))}
    for j, a in enumerate(variants[1:], start=1):
        ci[f"delta_alpha[{a}]"] = _ci(draws[:, 3 + 4 * j] - draws[:, 3])
        ci[f"delta_beta[{a}]"] = _ci(draws[:, 4 + 4 * j] - draws[:, 4])
    result = FitResult(
        law="joint-shared-E",
        params=params,
        objective=f,
        success=bool(np.all(np.isfinite(theta))),
        converged=True,
        identifiable=True,
        message=f"shared E, per-variant (A, alpha), (B, beta); baseline {baseline}",
        n_points=int(lN.size),
        ci95=ci,
        extra={"baseline": baseline, "variants": variants},
    )
    return JointFit(variants, baseline, theta, draws, result)


# --------------------------------------------------------------------------- compute multiplier


def optimal_loss(p: dict[str, float], flops) -> np.ndarray:
    """L*(C): the loss at the compute-optimal (N, D) for C = 6·N·D (closed form)."""
    C = np.asarray(flops, float) / 6.0
    a, b = p["alpha"], p["beta"]
    if not (a > 0 and b > 0):
        return np.full_like(C, np.nan)
    G = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    N = G * C ** (b / (a + b))
    return p["E"] + p["A"] * N**-a + p["B"] * (C / N) ** -b


def compute_multiplier(variant: dict[str, float], baseline: dict[str, float], flops) -> np.ndarray:
    """m(C) = C_base / C where the baseline's L*(C_base) equals the variant's L*(C)."""
    C = np.atleast_1d(np.asarray(flops, float))
    target = optimal_loss(variant, C)
    grid = np.geomspace(C.min() * 1e-8, C.max() * 1e8, 4000)
    lb = optimal_loss(baseline, grid)  # decreasing in C
    ok = np.isfinite(lb)
    if not ok.any() or not np.isfinite(target).all():
        return np.full(C.shape, np.nan)
    logc = np.interp(-target, -lb[ok], np.log(grid[ok]), left=np.nan, right=np.nan)
    return np.exp(logc) / C


def multiplier_table(joint: JointFit, budgets) -> pd.DataFrame:
    """Rows (variant, flops, multiplier, lo, hi) with bootstrap percentile intervals."""
    rows = []
    base = joint.params_of(joint.theta_, joint.baseline_)
    for a in joint.variants_[1:]:
        m = compute_multiplier(joint.params_of(joint.theta_, a), base, budgets)
        boot = np.array(
            [
                compute_multiplier(joint.params_of(t, a), joint.params_of(t, joint.baseline_), budgets)
                for t in joint.draws_
            ]
        ).reshape(-1, len(budgets))
        for j, c in enumerate(budgets):
            lo, hi = _ci(boot[:, j]) if boot.size else (math.nan, math.nan)
            rows.append({"variant": a, "flops": float(c), "multiplier": float(m[j]), "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=["variant", "flops", "multiplier", "lo", "hi"])


def crossovers(joint: JointFit, c_min: float, c_max: float) -> dict[str, list[float]]:
    """Budgets (FLOPs, 1e-2·c_min .. 1e4·c_max) where a variant's multiplier crosses 1."""
    grid = np.geomspace(c_min * 1e-2, c_max * 1e4, 600)
    base = joint.params_of(joint.theta_, joint.baseline_)
    out = {}
    for a in joint.variants_[1:]:
        lm = np.log(compute_multiplier(joint.params_of(joint.theta_, a), base, grid))
        s = np.sign(lm)
        idx = np.flatnonzero(np.isfinite(lm[:-1]) & np.isfinite(lm[1:]) & (s[:-1] * s[1:] < 0))
        out[a] = [float(np.sqrt(grid[i] * grid[i + 1])) for i in idx]
    return out


# --------------------------------------------------------------------------- length extrapolation


def length_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Loss by evaluation length (multiples of seq_len) per stratum, variant and size: the
    longest-trained run of each (arch, n_params), mean over seeds. Columns `len<k>x` (same
    held-out tokens at every k), `len<k>x_tail` (last quarter of positions); `n/a` runs are NaN."""
    df = with_arch(frame)
    cols = [c for c in df.columns if c.startswith("val_loss_len")]
    if not cols:
        return pd.DataFrame()
    last = df.loc[df.groupby(["stratum", "arch", "n_params"])["tokens"].transform("max") == df["tokens"]]
    table = last.groupby(["stratum", "arch", "n_params"])[["loss", *cols]].mean().reset_index()
    table = table.rename(columns={c: c.replace("val_loss_", "") for c in cols})
    ks = sorted({int(c[3:].split("x")[0]) for c in table.columns if c.startswith("len")})
    order = [f"len{k}x" for k in ks] + [f"len{k}x_tail" for k in ks]
    return table[["stratum", "arch", "n_params", "loss", *[c for c in order if c in table]]]


# --------------------------------------------------------------------------- the comparison


@dataclass
class StratumComparison:
    stratum: str
    baseline: str
    per_variant: dict[str, dict[str, FitResult]] = field(default_factory=dict)
    joint: JointFit | None = None
    multipliers: pd.DataFrame = field(default_factory=pd.DataFrame)
    crossovers: dict[str, list[float]] = field(default_factory=dict)
    flops_range: tuple[float, float] = (math.nan, math.nan)
    notes: list[str] = field(default_factory=list)


def compare_stratum(
    df: pd.DataFrame, stratum: str, *, baseline: str | None = None, n_boot: int = 100, seed: int = 0
) -> StratumComparison:
    """Every law of the module docstring for the variants of one stratum."""
    labels = sorted(df["arch"].unique())
    base = _baseline_of(labels, df["objective"].iloc[0], baseline)
    out = StratumComparison(stratum, base)
    rng = np.random.default_rng(seed)
    c6 = 6.0 * df["n_params"].to_numpy(float) * df["tokens"].to_numpy(float)
    out.flops_range = (float(c6.min()), float(c6.max()))
    for a in labels:
        sub = df[df["arch"] == a]
        if len(sub) < MIN_POINTS:
            out.notes.append(f"{a}: {len(sub)} runs, fewer than {MIN_POINTS}: no per-variant law")
            out.per_variant[a] = {"chinchilla": FitResult.failure("chinchilla", "too few runs", len(sub))}
            continue
        out.per_variant[a] = {
            "chinchilla": _approach3(sub, n_boot, rng),
            "compute": _compute_law(sub, n_boot, rng),
        }
    enough = [a for a in labels if (df["arch"] == a).sum() >= 4]
    if base in enough and len(enough) > 1:
        sub = df[df["arch"].isin(enough)]
        chin = {a: out.per_variant[a]["chinchilla"] for a in enough}
        out.joint = fit_joint(sub, base, chin, n_boot=n_boot, seed=seed)
        lo, hi = out.flops_range
        budgets = np.geomspace(lo, hi * 100, 5)
        out.multipliers = multiplier_table(out.joint, budgets)
        out.crossovers = crossovers(out.joint, lo, hi)
    return out


def compare_architectures(
    frame: pd.DataFrame, *, baseline: str | None = None, n_boot: int = 100, seed: int = 0
) -> list[StratumComparison]:
    """One comparison per stratum (objective, MoE setting) that holds two or more variants."""
    df = with_arch(frame)
    out = []
    for stratum, sub in df.groupby("stratum", sort=True):
        if sub["arch"].nunique() > 1:
            out.append(compare_stratum(sub, stratum, baseline=baseline, n_boot=n_boot, seed=seed))
    return out


__all__ = [
    "BASELINE",
    "JointFit",
    "StratumComparison",
    "compare_architectures",
    "compare_stratum",
    "compute_multiplier",
    "crossovers",
    "fit_joint",
    "length_table",
    "multiplier_table",
    "optimal_loss",
    "with_arch",
]
