"""Comparing model families trained under different objectives: GPT (decoder, clm), BERT
(decoder stack with bidirectional attention, mlm), T5 (encoder-decoder, span corruption), the
prefix LM (decoder, prefix).

The losses of different objectives are nats per predicted token of different tasks, so they are
never compared as numbers (the T5 paper's rule). Each family is compared on what is defined for
it alone (points: the `family` and `objective` params; no `family` = decoder, no `objective` =
clm; one comparison per MoE setting):
- per-family laws: Approach 3 (E + A/N^α + B/D^β) with a bootstrap over the family's runs (95%
  percentile intervals), and what it implies for compute: with the family's own FLOPs per
  parameter-token k (median of logged flops / (n_params·tokens), chinchilla convention: an
  encoder-decoder at a decoder's FLOPs holds ~2x the parameters, so 6·N·D would misstate its
  compute), the compute-optimal L*(C) - E = A/N*^α + B/D*^β falls as C^-γ with γ = αβ/(α+β),
  and N_opt ∝ C^a with a = β/(α+β);
- Δα, Δβ, Δγ vs the baseline family (GPT when present): intervals from the differences of the
  independent bootstrap draws;
- compute-optimal allocations at budgets inside and beyond the data: N_opt, D_opt and D/N;
- compute multipliers at matched FLOPs C: between two families of one objective, the usual
  effective multiplier C_b/C where the baseline's L*(C_b) equals the family's L*(C); between
  objectives, the relative-progress multiplier m(C) = (C0/C)·(C/C0)^(γ_v/γ_b): the compute the
  baseline needs to cut its reducible loss L* - E by the factor the family cuts its own by from
  the study's smallest budget C0 to C. It compares exponents, never losses: m = 1 at C0, m > 1
  when the family's reducible loss falls faster with compute.
Pure numpy/scipy/pandas (matplotlib only for the figure); never imports torch or ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .result import FitResult

BASELINE = "decoder-clm"
NICKNAMES = {"decoder-clm": "GPT", "decoder-mlm": "BERT", "encdec-span": "T5", "decoder-prefix": "prefix LM"}
MIN_POINTS = 6  # Approach 3 has 5 parameters
A3_NAMES = ("E", "A", "B", "alpha", "beta")
NOT_COMPARED = (
    "Losses under different objectives are nats per predicted token of different tasks (next "
    "token; masked tokens; corrupted spans and their sentinels): they are not compared "
    "directly. Families are compared by exponents, allocations and the multipliers the "
    "exponents imply."
)


def family_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `family`, `objective`, a `variant` label per (family, objective) (the
    `arch` label appended where a family holds several) and a `stratum` (the MoE setting)."""
    df = frame.copy()
    for col, default in (("family", "decoder"), ("objective", "clm")):
        df[col] = df[col].fillna(default).astype(str) if col in df.columns else default
    df["variant"] = df["family"] + "-" + df["objective"]
    if "arch" in df.columns:
        several = df.groupby("variant")["arch"].transform("nunique") > 1
        df.loc[several, "variant"] = df.loc[several, "variant"] + " " + df.loc[several, "arch"].astype(str)
    experts = pd.to_numeric(df["experts"], errors="coerce").fillna(1) if "experts" in df.columns else 1
    top_k = pd.to_numeric(df["top_k"], errors="coerce").fillna(1) if "top_k" in df.columns else 1
    experts = pd.Series(experts, index=df.index).astype(int)
    top_k = pd.Series(top_k, index=df.index).astype(int)
    df["stratum"] = ["dense" if e <= 1 else f"experts={e} top_k={k}" for e, k in zip(experts, top_k)]
    return df


def nickname(variant: str) -> str:
    """`decoder-clm (GPT)`: the variant with the family's usual name."""
    base = variant.split(" ", 1)[0]
    return f"{variant} ({NICKNAMES[base]})" if base in NICKNAMES else variant


def _ci(samples: np.ndarray) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return (math.nan, math.nan)
    return (float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975)))


def _a3_starts(loss: np.ndarray) -> np.ndarray:
    """72 Approach 3 starts (log E, log A, log B, α, β) around the family's losses."""
    lo = float(np.min(loss))
    grid = np.meshgrid(
        [math.log(0.5 * lo), math.log(0.9 * lo)], [2.0, 5.0, 8.0], [2.0, 5.0, 8.0], [0.2, 0.5], [0.2, 0.5]
    )
    return np.stack([g.ravel() for g in grid], axis=1)


@dataclass
class FamilyLaws:
    """One family's Approach 3 fit and bootstrap draws (rows (E, A, B, α, β); NaN where a
    refit failed)."""

    variant: str
    objective: str
    n_points: int
    k_flops: float  # FLOPs per parameter-token, median of flops / (N·D)
    approach3: FitResult
    draws: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    warnings: list[str] = field(default_factory=list)  # what these runs do not identify

    def params(self, row: int | None = None) -> dict[str, float]:
        """The fitted parameters (or bootstrap draw `row`), with k."""
        p = self.approach3.params if row is None else dict(zip(A3_NAMES, self.draws[row]))
        return {**p, "k": self.k_flops}


def gamma(p: dict[str, float]) -> float:
    """γ = αβ/(α+β): the exponent of the compute-optimal reducible loss L*(C) - E."""
    a, b = p["alpha"], p["beta"]
    return a * b / (a + b) if a > 0 and b > 0 else math.nan


def _identification(p: dict[str, float], loss: np.ndarray) -> list[str]:
    """Degenerate Approach 3 solutions the runs allow: E at its lower bound, or an exponent so
    small that its term acts as a constant (E and that term then trade off)."""
    out = []
    if p["E"] < 1e-3 * float(np.min(loss)):
        out.append(f"E = {p['E']:.2g} is at its lower bound: the runs do not identify the floor")
    for q, term in (("alpha", "A/N^α"), ("beta", "B/D^β")):
        if p[q] < 0.05:
            out.append(f"{q} = {p[q]:.3g}: {term} is nearly constant over the runs (it trades off with E)")
    return out


def fit_family(df: pd.DataFrame, variant: str, n_boot: int, rng: np.random.Generator) -> FamilyLaws:
    """Approach 3 of one family, with a bootstrap over its runs (warm-started refits)."""
    from .laws.chinchilla import ChinchillaFit  # scipy: loaded when a comparison is made

    N, D, C, L = (df[c].to_numpy(float) for c in ("n_params", "tokens", "flops", "loss"))
    k = float(np.median(C / (N * D)))
    n = len(df)
    if n < MIN_POINTS:
        failed = FitResult.failure("chinchilla", f"{n} runs, fewer than {MIN_POINTS}: no law", n, A3_NAMES)
        return FamilyLaws(variant, str(df["objective"].iloc[0]), n, k, failed)
    est = ChinchillaFit(grid=_a3_starts(L), n_polish=2).fit(N, D, L)
    if not est.success_:
        failed = FitResult.failure("chinchilla", est.message_, n, A3_NAMES)
        return FamilyLaws(variant, str(df["objective"].iloc[0]), n, k, failed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        b = ChinchillaFit(grid=est.theta_[None], n_polish=1, maxiter=200).fit(N[i], D[i], L[i])
        draws.append([b.params_[name] for name in A3_NAMES] if b.success_ else [math.nan] * 5)
    d = np.array(draws, float).reshape(-1, 5)
    ci = {name: _ci(d[:, j]) for j, name in enumerate(A3_NAMES)}
    g = d[:, 3] * d[:, 4] / (d[:, 3] + d[:, 4])
    ci["gamma"], ci["a"] = _ci(g), _ci(d[:, 4] / (d[:, 3] + d[:, 4]))
    params = dict(est.params_)
    params["gamma"], params["a"] = gamma(params), params["beta"] / (params["alpha"] + params["beta"])
    result = FitResult(
        law="chinchilla",
        params=params,
        objective=est.objective_,
        success=True,
        converged=bool(est.converged_),
        identifiable=True,
        message=est.message_,
        n_points=n,
        ci95=ci,
        extra={"flops_per_param_token": k},
    )
    return FamilyLaws(variant, str(df["objective"].iloc[0]), n, k, result, d, _identification(params, L))


def allocation(p: dict[str, float], flops) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) at budgets C = k·N·D from (A, B, α, β, k): Chinchilla's closed form with
    the family's own FLOPs per parameter-token k instead of 6."""
    C = np.asarray(flops, float) / p["k"]
    a, b = p["alpha"], p["beta"]
    if not (a > 0 and b > 0):
        return np.full_like(C, np.nan), np.full_like(C, np.nan)
    G = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    N = G * C ** (b / (a + b))
    return N, C / N


def optimal_loss(p: dict[str, float], flops) -> np.ndarray:
    """L*(C) at the compute-optimal allocation (nats per predicted token of the family)."""
    N, D = allocation(p, flops)
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def multiplier(
    variant: dict[str, float], base: dict[str, float], flops, c0: float, same_objective: bool
) -> np.ndarray:
    """m(C) of a family vs the baseline from their Approach 3 parameters (module doc)."""
    C = np.atleast_1d(np.asarray(flops, float))
    gv, gb = gamma(variant), gamma(base)
    if not (gv > 0 and gb > 0):
        return np.full(C.shape, np.nan)
    if not same_objective:
        return (c0 / C) * (C / c0) ** (gv / gb)
    target = optimal_loss(variant, C)
    grid = np.geomspace(C.min() * 1e-8, C.max() * 1e8, 4000)
    lb = optimal_loss(base, grid)  # decreasing in C
    ok = np.isfinite(lb)
    if not ok.any() or not np.isfinite(target).all():
        return np.full(C.shape, np.nan)
    return np.exp(np.interp(-target, -lb[ok], np.log(grid[ok]), left=np.nan, right=np.nan)) / C


@dataclass
class FamilyComparison:
    stratum: str
    baseline: str
    laws: dict[str, FamilyLaws]
    deltas: pd.DataFrame  # variant, quantity (alpha, beta, gamma), delta, lo, hi
    allocations: pd.DataFrame  # variant, flops, n_opt (lo, hi), d_opt, tokens_per_param (lo, hi)
    multipliers: pd.DataFrame  # variant, kind, flops, multiplier, lo, hi
    flops_range: tuple[float, float]
    notes: list[str] = field(default_factory=list)


def _deltas(laws: dict[str, FamilyLaws], base: str) -> pd.DataFrame:
    rows = []
    b = laws[base]
    for v, f in laws.items():
        if v == base or not (f.approach3.success and b.approach3.success):
            continue
        n = min(len(f.draws), len(b.draws))
        for q in ("alpha", "beta", "gamma"):
            fd, bd = ([_draw_q(x, i, q) for i in range(n)] for x in (f, b))
            delta = f.approach3.params[q] - b.approach3.params[q]
            lo, hi = _ci(np.array(fd) - np.array(bd))
            rows.append({"variant": v, "quantity": q, "delta": delta, "lo": lo, "hi": hi})
    return pd.DataFrame(rows, columns=["variant", "quantity", "delta", "lo", "hi"])


def _draw_q(f: FamilyLaws, row: int, q: str) -> float:
    """Quantity `q` (alpha, beta, gamma) of bootstrap draw `row`."""
    p = f.params(row)
    return gamma(p) if q == "gamma" else p[q]


def _allocations(laws: dict[str, FamilyLaws], budgets: np.ndarray) -> pd.DataFrame:
    rows = []
    for v, f in laws.items():
        if not f.approach3.success:
            continue
        N, D = allocation(f.params(), budgets)
        boot = [allocation(f.params(i), budgets) for i in range(len(f.draws))]
        bN = np.array([b[0] for b in boot]).reshape(-1, len(budgets))
        bR = np.array([b[1] / b[0] for b in boot]).reshape(-1, len(budgets))
        for j, c in enumerate(budgets):
            n_lo, n_hi = _ci(bN[:, j])
            r_lo, r_hi = _ci(bR[:, j])
            rows.append(
                {
                    "variant": v,
                    "flops": float(c),
                    "n_opt": float(N[j]),
                    "n_lo": n_lo,
                    "n_hi": n_hi,
                    "d_opt": float(D[j]),
                    "tokens_per_param": float(D[j] / N[j]),
                    "tpp_lo": r_lo,
                    "tpp_hi": r_hi,
                }
            )
    return pd.DataFrame(rows)


def _multipliers(laws: dict[str, FamilyLaws], base: str, budgets: np.ndarray, c0: float) -> pd.DataFrame:
    cols = ["variant", "kind", "flops", "multiplier", "lo", "hi"]
    rows = []
    b = laws[base]
    if not b.approach3.success:
        return pd.DataFrame(columns=cols)
    for v, f in laws.items():
        if v == base or not f.approach3.success:
            continue
        same = f.objective == b.objective
        m = multiplier(f.params(), b.params(), budgets, c0, same)
        n = min(len(f.draws), len(b.draws))
        boot = np.array([multiplier(f.params(i), b.params(i), budgets, c0, same) for i in range(n)])
        boot = boot.reshape(-1, len(budgets))
        kind = "loss-matched" if same else "relative progress"
        for j, c in enumerate(budgets):
            lo, hi = _ci(boot[:, j])
            rows.append(
                {"variant": v, "kind": kind, "flops": float(c), "multiplier": float(m[j]), "lo": lo, "hi": hi}
            )
    return pd.DataFrame(rows, columns=cols)


def compare_families(
    frame: pd.DataFrame, *, baseline: str | None = None, n_boot: int = 100, seed: int = 0
) -> list[FamilyComparison]:
    """One comparison per MoE setting holding two or more (family, objective) variants."""
    df = family_frame(frame)
    out = []
    for stratum, sub in df.groupby("stratum", sort=True):
        if sub[["family", "objective"]].drop_duplicates().shape[0] < 2:
            continue
        rng = np.random.default_rng(seed)
        variants = sorted(sub["variant"].unique())
        laws = {v: fit_family(sub[sub["variant"] == v], v, n_boot, rng) for v in variants}
        base = next(b for b in (baseline, BASELINE, variants[0]) if b is not None and b in laws)
        C = sub["flops"].to_numpy(float)
        lo, hi = float(C.min()), float(C.max())
        budgets = np.geomspace(lo, hi * 100, 5)
        notes = [NOT_COMPARED] + [
            f"{nickname(v)}: {f.approach3.message}" for v, f in laws.items() if not f.approach3.success
        ]
        notes += [
            f"{nickname(v)}: {w}; its γ, allocation and multiplier inherit this"
            for v, f in laws.items()
            for w in f.warnings
        ]
        out.append(
            FamilyComparison(
                stratum=str(stratum),
                baseline=base,
                laws=laws,
                deltas=_deltas(laws, base),
                allocations=_allocations(laws, np.array([lo, hi, hi * 100])),
                multipliers=_multipliers(laws, base, budgets, lo),
                flops_range=(lo, hi),
                notes=notes,
            )
        )
    return out


def families_summary(frame: pd.DataFrame, *, n_boot: int = 100, seed: int = 0) -> dict | None:
    """JSON-ready `{stratum: {"baseline", "note", "laws", "deltas", "multipliers",
    "allocations"}}` for `scalelab fit --group-by arch` (None: one family/objective)."""
    comps = compare_families(frame, n_boot=n_boot, seed=seed)
    if not comps:
        return None
    out = {}
    for c in comps:
        out[c.stratum] = {
            "baseline": c.baseline,
            "note": NOT_COMPARED,
            "notes": c.notes[1:],
            "laws": {
                v: {"approach3": f.approach3.to_dict(), "flops_per_param_token": f.k_flops}
                for v, f in c.laws.items()
            },
            "deltas": c.deltas.to_dict("records"),
            "multipliers": c.multipliers.to_dict("records"),
            "allocations": c.allocations.to_dict("records"),
        }
    return out


def families_block(frame: pd.DataFrame, *, n_boot: int = 100, seed: int = 0) -> dict:
    """`{"families": families_summary(...)}`, or {} when the points hold one family/objective."""
    summary = families_summary(frame, n_boot=n_boot, seed=seed)
    return {"families": summary} if summary else {}


__all__ = [
    "BASELINE",
    "FamilyComparison",
    "FamilyLaws",
    "allocation",
    "compare_families",
    "gamma",
    "optimal_loss",
    "families_block",
    "families_summary",
    "family_frame",
    "multiplier",
]
