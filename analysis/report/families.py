"""The report section of `analysis.families`: markdown tables and a figure (matplotlib)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..families import FamilyComparison, compare_families, family_frame, nickname, optimal_loss  # noqa: E402


def _f(v, p: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{p}g}"


def _iv(ci) -> str:
    lo, hi = ci if ci else (math.nan, math.nan)
    return f"[{_f(lo)}, {_f(hi)}]"


def _laws_md(c: FamilyComparison) -> list[str]:
    lines = [
        "| family | objective | runs | E | α [95%] | β [95%] | γ = αβ/(α+β) [95%] | a = β/(α+β) [95%] "
        "| FLOPs / (N·D) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, f in c.laws.items():
        r = f.approach3
        if not r.success:
            lines.append(
                f"| {nickname(v)} | {f.objective} | {f.n_points} | {r.message} | | | | | {_f(f.k_flops)} |"
            )
            continue
        cells = [f"{_f(r.params[q])} {_iv(r.ci95.get(q))}" for q in ("alpha", "beta", "gamma", "a")]
        lines.append(
            f"| {nickname(v)} | {f.objective} | {f.n_points} | {_f(r.params['E'], 4)} "
            f"{_iv(r.ci95.get('E'))} | " + " | ".join(cells) + f" | {_f(f.k_flops)} |"
        )
    return lines


def _deltas_md(c: FamilyComparison) -> list[str]:
    if c.deltas.empty:
        return []
    lines = [
        f"Exponents vs {nickname(c.baseline)} (difference of independent bootstrap draws, 95%):",
        "",
        "| family | Δα [95%] | Δβ [95%] | Δγ [95%] | exponents |",
        "|---|---|---|---|---|",
    ]
    for v, g in c.deltas.groupby("variant", sort=False):
        cells, distinct = [], False
        for q in ("alpha", "beta", "gamma"):
            r = g[g["quantity"] == q]
            if r.empty:
                cells.append("n/a")
                continue
            r0 = r.iloc[0]
            cells.append(f"{_f(r0.delta)} {_iv((r0.lo, r0.hi))}")
            distinct |= bool(np.isfinite(r0.lo) and (r0.lo > 0 or r0.hi < 0))
        verdict = "differ" if distinct else "not distinguishable"
        lines.append(f"| {nickname(v)} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def _multipliers_md(c: FamilyComparison) -> list[str]:
    m = c.multipliers
    if m.empty:
        return []
    lo, hi = c.flops_range
    budgets = sorted(m["flops"].unique())
    lines = [
        f"Compute multipliers vs {nickname(c.baseline)} at matched FLOPs C (logged FLOPs; data "
        f"span {_f(lo)} to {_f(hi)}, `*` beyond it). Between objectives, `relative progress`: "
        "the compute the baseline needs to cut its reducible loss by the factor the family cuts "
        f"its own by from C0 = {_f(lo)} to C (exponents only; 1 at C0; > 1: the family improves "
        "faster with compute); within one objective, `loss-matched` (the usual effective "
        "compute multiplier):",
        "",
        "| family | kind | "
        + " | ".join(f"C={b:.2g}{'*' if b > hi * 1.0001 else ''}" for b in budgets)
        + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for v, rows in m.groupby("variant", sort=False):
        cells = [f"{_f(r.multiplier)} {_iv((r.lo, r.hi))}" for r in rows.itertuples()]
        lines.append(f"| {nickname(v)} | {rows['kind'].iloc[0]} | " + " | ".join(cells) + " |")
    return lines


def _allocations_md(c: FamilyComparison) -> list[str]:
    a = c.allocations
    if a.empty:
        return []
    hi = c.flops_range[1]
    lines = [
        "Compute-optimal allocation per family (its Approach 3 law, C = (FLOPs per parameter-token)"
        "·N·D), 95% intervals:",
        "",
        "| family | C | N_opt [95%] | D_opt | D/N [95%] |",
        "|---|---|---|---|---|",
    ]
    for r in a.itertuples():
        star = "*" if r.flops > hi * 1.0001 else ""
        lines.append(
            f"| {nickname(r.variant)} | {r.flops:.2g}{star} | {_f(r.n_opt)} {_iv((r.n_lo, r.n_hi))} | "
            f"{_f(r.d_opt)} | {_f(r.tokens_per_param)} {_iv((r.tpp_lo, r.tpp_hi))} |"
        )
    return lines


def _figure(frame: pd.DataFrame, comps: list[FamilyComparison]):
    """Each family's runs and compute-optimal L*(C), relative to its own fitted E (reducible
    loss): the slopes are comparable across objectives, the levels are not."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    df = family_frame(frame)
    for c in comps:
        sub = df[df["stratum"] == c.stratum]
        C = np.geomspace(c.flops_range[0], c.flops_range[1] * 100, 60)
        for v, f in c.laws.items():
            if not f.approach3.success:
                continue
            p = f.params()
            g = sub[sub["variant"] == v]
            pts = ax.scatter(g["flops"], g["loss"] - p["E"], s=12, label=f"{nickname(v)} ({c.stratum})")
            ax.plot(C, optimal_loss(p, C) - p["E"], color=pts.get_facecolor()[0])
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training FLOPs (logged, chinchilla convention)",
        ylabel="loss - E (nats per predicted token)",
        title="reducible loss and L*(C) - E: compare slopes, not levels",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def section(frame: pd.DataFrame, comps: list[FamilyComparison]) -> dict:
    """The report section comparing model families under different objectives (GPT clm, BERT
    mlm, T5 span, prefix LM) by exponents, allocations and multipliers, never by raw losses:
    `comps` from `analysis.families.compare_families` (fitted in the report's context)."""
    lines = [comps[0].notes[0]]
    for c in comps:
        lines += [
            "",
            f"### {c.stratum}",
            "",
            "Per-family laws (Approach 3 in N and D, nats per predicted token of the family's "
            "objective), 95% bootstrap intervals over runs; γ: L*(C) - E ∝ C^-γ at the "
            "compute-optimal allocation, a: N_opt ∝ C^a:",
            "",
            *_laws_md(c),
            "",
            *_deltas_md(c),
            "",
            *_multipliers_md(c),
            "",
            *_allocations_md(c),
            "",
            *[f"- {n}" for n in c.notes[1:]],
        ]
    return {
        "title": "Model families (GPT, BERT, T5)",
        "markdown": "\n".join(lines),
        "figures": {"families_reducible_loss.png": _figure(frame, comps)},
    }


def families_section(frame: pd.DataFrame, *, n_boot: int = 100, seed: int = 0) -> dict | None:
    """The section for a points frame (`analysis.load_mlflow(...).frame`), fitted here; None
    when the frame holds one family/objective. The report fits once, in its context."""
    comps = compare_families(frame, n_boot=n_boot, seed=seed)
    return section(frame, comps) if comps else None
