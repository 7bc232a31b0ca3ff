"""`scalelab fit`'s text output: the contract dict (analysis/cli.py) as lines for a terminal."""

from __future__ import annotations

import math

from ..families import nickname


def _num(v, spec: str = ".4g") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_fit(res: dict, stream) -> None:
    """The fit result: the reason first when it failed; else parameters with intervals, the form
    and its scores, compute-optimal rows, held-out runs as a table, notes."""
    w = stream.write
    p = res.get("params") or {}
    if not res.get("success", True):  # the reason first; no "= nan" lines
        w(f"fit failed: {res['message']}\n")
        w(f"law: {res['law']}   points: {res['n_points']}   source: {res['source']}\n")
        if res["excluded"]:
            w("excluded: " + ", ".join(f"{k}: {v}" for k, v in res["excluded"].items()) + "\n")
        for note in res.get("notes", []):
            w(f"note: {note}\n")
        _tail(res, w)
        return
    w(f"law: {res['law']}   points: {res['n_points']}   source: {res['source']}\n")
    if res["excluded"]:
        w("excluded: " + ", ".join(f"{k}: {v}" for k, v in res["excluded"].items()) + "\n")
    for note in res.get("notes", []):
        w(f"note: {note}\n")
    if res.get("form"):
        w(f"form: {res['form']}   ({res.get('selection', {}).get('reason', '')})\n")
        scores = res.get("form_scores") or {}
        w(
            "form scores (CV error over compute): "
            + "; ".join(f"{k} {v:.3%}" if not isinstance(v, str) else f"{k}: {v}" for k, v in scores.items())
            + "\n"
        )
    for k, v in p.items():
        ci = res["ci95"].get(k)
        bound = (res.get("one_sided") or {}).get(k)
        ci_txt = f"   95% CI [{_num(ci[0], '.6g')}, {_num(ci[1], '.6g')}]" if ci else ""
        w(f"  {k:>8} = {v:.6g}" + (f"   ({bound})" if bound else ci_txt) + "\n")
    w(
        f"objective: {res['objective']:.6g}   converged: {res['converged']}   identifiable: {res['identifiable']}\n"
    )
    w(f"message: {res['message']}\n")
    if res["exponents"].get("a") is not None:
        w(
            "exponents: "
            + ", ".join(f"{k}={v:.4f}" for k, v in res["exponents"].items() if v is not None)
            + "\n"
        )
    for r in res["compute_optimal"]:
        if r["n_params"] is not None:
            key = f"{r['flops']:.3g}"
            ci = res["ci95"].get(f"N_opt@{key}")
            ci_txt = f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""
            w(
                f"  C={key}: N_opt={r['n_params']:.4g}{ci_txt}  D_opt={r['tokens']:.4g}  "
                f"D/N={r['tokens_per_param']:.2f}  loss={r['loss']:.4f}\n"
            )
        else:
            w(f"  C={r['flops']:.3g}: frontier loss={r['loss']:.4f}\n")
    _tail(res, w)


def _tail(res, w) -> None:
    h = res.get("holdout")
    if h and h["n_test"] and res.get("success", True):
        w(
            f"holdout: fit on {h['n_train']} runs with C <= {h['flops']:.3g}, tested on {h['n_test']} above: "
            f"mean |rel. error| {h['mean_abs_rel_error']:.3%}, max {h['max_abs_rel_error']:.3%}"
            + (f"; {h['coverage']:.0%} inside their 95% interval" if h.get("coverage") is not None else "")
            + "\n"
        )
        w(
            f"  {'name':<18} {'N':>10} {'D':>10} {'C':>10} {'loss':>8} {'predicted':>9} {'rel.err':>8}  95% interval\n"
        )
        for r in h.get("points", []):
            lo, hi = r["ci95"]
            w(
                f"  {str(r['name'] or '-')[:18]:<18} {r['n_params']:10.4g} {r['tokens']:10.4g} {r['flops']:10.4g} "
                f"{r['loss']:8.4f} {r['predicted']:9.4f} {r['rel_error']:+8.2%}  [{_num(lo)}, {_num(hi)}]"
                + ("" if r.get("inside") is None else ("" if r["inside"] else "  outside"))
                + "\n"
            )
    if res.get("elapsed_s") is not None:
        w(f"elapsed: {res['elapsed_s']:.2f} s\n")


def print_families(summary: dict, stream) -> None:
    """The text form of `families_summary` (scalelab fit --group-by arch)."""
    for stratum, c in summary.items():
        stream.write(f"\n== families ({stratum}), baseline {nickname(c['baseline'])} ==\n{c['note']}\n")
        for v, law in c["laws"].items():
            r = law["approach3"]
            p, ci = r["params"], r.get("ci95", {})
            txt = " ".join(
                f"{q}={p.get(q, math.nan):.3g} [{ci.get(q, (math.nan, math.nan))[0]:.3g}, "
                f"{ci.get(q, (math.nan, math.nan))[1]:.3g}]"
                for q in ("E", "alpha", "beta", "gamma")
            )
            stream.write(f"  {nickname(v)}: {txt}\n")
        for d in c["deltas"]:
            stream.write(
                f"  delta {d['quantity']} {nickname(d['variant'])}: {d['delta']:+.3g} [{d['lo']:.3g}, {d['hi']:.3g}]\n"
            )
        for m in c["multipliers"]:
            stream.write(
                f"  multiplier ({m['kind']}) {nickname(m['variant'])} at C={m['flops']:.3g}: "
                f"{m['multiplier']:.3g} [{m['lo']:.3g}, {m['hi']:.3g}]\n"
            )
        for note in c.get("notes", []):
            stream.write(f"  note: {note}\n")
