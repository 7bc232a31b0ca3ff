"""The report section of `analysis.compare`: markdown tables and figures (matplotlib)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..compare import StratumComparison, compare_architectures, length_table, optimal_loss  # noqa: E402


def _f(v: float, p: int = 4) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{p}g}"


def _iv(ci) -> str:
    lo, hi = ci if ci else (math.nan, math.nan)
    return f"[{_f(lo, 3)}, {_f(hi, 3)}]"


def _per_variant_md(c: StratumComparison) -> list[str]:
    lines = ["| variant | runs | E | α [95%] | β [95%] | L(C) exponent [95%] |", "|---|---|---|---|---|---|"]
    for a, fits in c.per_variant.items():
        ch, lc = fits["chinchilla"], fits.get("compute")
        if not ch.success:
            lines.append(f"| {a} | {ch.n_points} | fit failed: {ch.message} | | | |")
            continue
        p = ch.params
        lc_txt = (
            f"{_f(lc.params['alpha'], 3)} {_iv(lc.ci95.get('alpha'))}"
            if lc is not None and lc.success
            else "n/a"
        )
        lines.append(
            f"| {a} | {ch.n_points} | {_f(p['E'])} | {_f(p['alpha'], 3)} "
            f"{_iv(ch.ci95.get('alpha'))} | {_f(p['beta'], 3)} {_iv(ch.ci95.get('beta'))} "
            f"| {lc_txt} |"
        )
    return lines


def _distinct(ci) -> bool:
    return bool(ci) and np.isfinite(ci[0]) and (ci[0] > 0 or ci[1] < 0)


def _joint_md(c: StratumComparison) -> list[str]:
    joint = c.joint
    if joint is None:  # callers show the joint fit only when it was made
        return []
    j = joint.result_
    lines = [
        f"Joint fit, shared E = {_f(j.params['E'])} {_iv(j.ci95.get('E'))}, baseline "
        f"**{c.baseline}** ({len(joint.draws_)} bootstrap resamples of runs within each "
        "variant):",
        "",
        "| variant | α | Δα vs baseline [95%] | β | Δβ vs baseline [95%] | exponents |",
        "|---|---|---|---|---|---|",
    ]
    for a in joint.variants_:
        p = joint.params_of(joint.theta_, a)
        if a == c.baseline:
            lines.append(f"| {a} (baseline) | {_f(p['alpha'], 3)} | | {_f(p['beta'], 3)} | | |")
            continue
        da, db = j.ci95[f"delta_alpha[{a}]"], j.ci95[f"delta_beta[{a}]"]
        base = joint.params_of(joint.theta_, c.baseline)
        verdict = "differ" if _distinct(da) or _distinct(db) else "not distinguishable"
        lines.append(
            f"| {a} | {_f(p['alpha'], 3)} | {_f(p['alpha'] - base['alpha'], 3)} "
            f"{_iv(da)} | {_f(p['beta'], 3)} | {_f(p['beta'] - base['beta'], 3)} "
            f"{_iv(db)} | {verdict} |"
        )
    return lines


def _multiplier_md(c: StratumComparison) -> list[str]:
    m = c.multipliers
    lo, hi = c.flops_range
    lines = [
        f"Effective compute multiplier vs {c.baseline} (compute the baseline needs on its "
        "compute-optimal frontier to match the variant, C = 6·N·D; > 1 favours the variant; "
        f"data span C = {_f(lo, 3)} to {_f(hi, 3)}, `*` = beyond the data):",
        "",
    ]
    budgets = sorted(m["flops"].unique())
    lines.append(
        "| variant | "
        + " | ".join(f"C={b:.2g}{'*' if b > hi * 1.0001 else ''}" for b in budgets)
        + " | crossover (m = 1) |"
    )
    lines.append("|---|" + "---|" * (len(budgets) + 1))
    for a, rows in m.groupby("variant", sort=False):
        cells = [f"{_f(r.multiplier, 3)} {_iv((r.lo, r.hi))}" for r in rows.itertuples()]
        cross = c.crossovers.get(a) or []
        where = (
            ", ".join(f"C≈{x:.2g} ({'inside' if lo <= x <= hi else 'beyond'} the data)" for x in cross)
            or "none in 1e-2×..1e4× the data span"
        )
        lines.append(f"| {a} | " + " | ".join(cells) + f" | {where} |")
    return lines


def _stratum_md(c: StratumComparison) -> list[str]:
    lines = [
        f"### {c.stratum}",
        "",
        "Per-variant laws (Approach 3; L(C) on each variant's "
        "compute frontier), 95% bootstrap intervals over runs:",
        "",
        *_per_variant_md(c),
        "",
    ]
    if c.joint is not None:
        lines += [*_joint_md(c), "", *_multiplier_md(c), ""]
    lines += [f"- {n}" for n in c.notes]
    return lines


def _length_md(table: pd.DataFrame) -> list[str]:
    cols = [c for c in table.columns if c.startswith("len")]
    lines = [
        "### Length extrapolation",
        "",
        "Held-out loss (nats/token) at k × the training "
        "length on the same tokens (`len<k>x`; `_tail`: last quarter of positions of each "
        "window); n/a: learned positions cannot address positions past the training length.",
        "",
        "| stratum | variant | n_params | val_loss | " + " | ".join(cols) + " |",
        "|---|---|---|---|" + "---|" * len(cols),
    ]
    for r in table.itertuples(index=False):
        d = r._asdict()
        lines.append(
            f"| {d['stratum']} | {d['arch']} | {d['n_params']:.3g} | {_f(d['loss'])} | "
            + " | ".join(_f(d[c]) for c in cols)
            + " |"
        )
    return lines


def _fig_multiplier(comps: list[StratumComparison]):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for c in comps:
        for a, rows in c.multipliers.groupby("variant", sort=False):
            (line,) = ax.plot(rows["flops"], rows["multiplier"], marker="o", label=f"{c.stratum}: {a}")
            ax.fill_between(rows["flops"], rows["lo"], rows["hi"], color=line.get_color(), alpha=0.2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="effective compute multiplier vs baseline",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_frontier(frame: pd.DataFrame, comps: list[StratumComparison]):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    from ..compare import with_arch

    df = with_arch(frame)
    for c in comps:
        sub = df[df["stratum"] == c.stratum]
        C = np.geomspace(c.flops_range[0], c.flops_range[1] * 100, 60)
        for a, g in sub.groupby("arch"):
            pts = ax.scatter(6 * g["n_params"] * g["tokens"], g["loss"], s=12, label=f"{c.stratum}: {a}")
            if c.joint is not None and a in c.joint.variants_:
                ax.plot(
                    C, optimal_loss(c.joint.params_of(c.joint.theta_, a), C), color=pts.get_facecolor()[0]
                )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="held-out loss (nats/token)",
        title="runs and joint-fit compute-optimal L*(C)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig_lengths(table: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ks = sorted(int(c[3:-1]) for c in table.columns if c.startswith("len") and c.endswith("x"))
    for (stratum, arch), g in table.groupby(["stratum", "arch"]):
        color = None
        for i, r in enumerate(g.sort_values("n_params").itertuples(index=False)):
            d = r._asdict()
            y = [d.get(f"len{k}x", np.nan) for k in ks]
            (line,) = ax.plot(
                ks,
                y,
                marker="o",
                color=color,
                alpha=0.4 + 0.6 * (i + 1) / len(g),
                label=f"{arch} ({stratum})" if i == len(g) - 1 else None,
            )
            color = line.get_color()
    ax.set(
        xscale="log",
        xlabel="evaluation length / training length",
        ylabel="held-out loss",
        title="length extrapolation (darker: larger model)",
    )
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def section_from(frame: pd.DataFrame, comps: list[StratumComparison], lengths: pd.DataFrame) -> dict | None:
    """The section `{"title", "markdown", "figures"}` for comparisons already fitted (None when
    the study holds one variant and no length metrics)."""
    has_lengths = not lengths.empty and any(
        c.startswith("len") and c != "len1x" and not c.startswith("len1x") for c in lengths.columns
    )
    if not comps and not has_lengths:
        return None
    lines = ["Variants are compared only within one objective and MoE setting."]
    figures = {}
    for c in comps:
        lines += ["", *_stratum_md(c)]
    if any(c.joint is not None for c in comps):
        figures["arch_compute_multiplier.png"] = _fig_multiplier([c for c in comps if c.joint])
        figures["arch_loss_vs_compute.png"] = _fig_frontier(frame, comps)
    if has_lengths:
        lines += ["", *_length_md(lengths)]
        figures["arch_length_extrapolation.png"] = _fig_lengths(lengths)
    return {"title": "Architecture comparison", "markdown": "\n".join(lines), "figures": figures}


def architecture_section(
    frame: pd.DataFrame, *, baseline: str | None = None, n_boot: int = 100, seed: int = 0
) -> dict | None:
    """Fit the comparison (analysis.compare) and render it: the section comparing a study's
    architectures (None when it holds one variant and no length metrics)."""
    comps = compare_architectures(frame, baseline=baseline, n_boot=n_boot, seed=seed)
    return section_from(frame, comps, length_table(frame))


section = architecture_section  # the name this module used before
