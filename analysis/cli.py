"""`scalelab fit` and `scalelab report`, as functions the lead's orchestrator/cli.py wires in.

    add_fit_arguments(parser)   # --csv/--experiment, column mapping, --law, --bootstrap, ...
    run_fit(args) -> int        # 0 ok; 1 the fit ran but did not converge; 2 bad input
    run_report(experiment, tracking_uri, out_dir, ...) -> int

`python -m analysis.cli fit ...` / `python -m analysis.cli report ...` work standalone.

JSON contract (--json): stdout is ONE object
  {"law", "n_points", "params", "objective", "converged", "ci95": {name: [lo, hi]},
   "compute_optimal": [{"flops", "n_params", "tokens", "tokens_per_param", "loss"}],
   "exponents": {"a", "b"}, ...extra keys: identifiable, success, message, excluded, source,
   notes, bootstrap, and with --group-by: "groups": {label: {...the same contract...}};
   with --group-by arch over several model families/objectives also "families"
   (analysis.families.families_summary: per-family laws, deltas, multipliers, allocations)}
The top level is one setting's fit (dense points by default, `--experts K` for an MoE
setting, in active parameters); points of other settings are counted in `excluded` with the
reason, and the notes say which setting was fitted (see analysis/groups.py).
Chinchilla params are E, A, B, alpha, beta; exponents a, b are those of N_opt ~ C^a and
D_opt ~ C^b. For the single-variable laws (kaplan-n, kaplan-d, compute) params are E, x_c,
alpha (L = E + (x_c/x)^alpha); exponents.a is the loss exponent -alpha (L - E ~ x^a) and
exponents.b is null; compute_optimal is empty for kaplan-n/kaplan-d and gives only the
predicted frontier loss for `compute`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd

from .compressor import compressor_notes
from .data import InputError, load_csv, load_mlflow
from .families import families_block, print_families
from .groups import in_active_params, select_setting, split_by
from .result import FitResult, optimal_rows, result_at

LAWS = ("chinchilla", "kaplan-n", "kaplan-d", "compute", "constrained")


def add_fit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", metavar="FILE", help="CSV or Parquet file of points")
    src.add_argument("--experiment", metavar="NAME", help="MLflow experiment (= study name)")
    parser.add_argument("--tracking-uri", metavar="URI", default=None, help="MLflow tracking URI")
    parser.add_argument("--n-col", default=None, help="column with N (total parameters)")
    parser.add_argument("--d-col", default=None, help="column with D (training tokens)")
    parser.add_argument("--c-col", default=None, help="column with C (training FLOPs); D = C/(6N) if no D")
    parser.add_argument("--loss-col", default=None, help="column with the final loss (nats/token)")
    parser.add_argument(
        "--metric",
        default="val_loss",
        metavar="NAME",
        help="--experiment: the run metric to fit (default val_loss, nats/token; val_bpb: bits "
        "per byte, corpus studies); --csv: the loss column when --loss-col is not given",
    )
    parser.add_argument("--law", choices=LAWS, default="chinchilla")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="K",
        help="bootstrap resamples over runs for 95%% intervals (0: none)",
    )
    parser.add_argument(
        "--budgets",
        default=None,
        metavar="C1,C2",
        help="compute budgets in FLOPs, e.g. 1e21,1e24 (default: 1x, 10x, 100x the largest run)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--include-diverged",
        action="store_true",
        help="keep diverged/failed/unfinished runs (excluded by default)",
    )
    parser.add_argument(
        "--drop-top-loss",
        type=int,
        default=0,
        metavar="K",
        help="outlier policy: drop the K highest-loss points (Epoch's Chinchilla subset: 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--experts",
        type=int,
        default=None,
        metavar="K",
        help="fit the MoE setting with K experts (default: the dense points; settings are never pooled)",
    )
    parser.add_argument(
        "--group-by",
        default=None,
        metavar="COLUMN",
        help="also fit each group of COLUMN (experts: MoE setting, arch, or any "
        'param) separately; JSON key "groups": {label: {...}}; arch over several model '
        'families/objectives also compares them (JSON key "families")',
    )
    add_form_arguments(parser)
    return parser


def add_form_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--form / --fixed-e / --holdout-flops (Approach 3 law forms, analysis/forms.py)."""
    from .forms import FORMS

    parser.add_argument(
        "--form",
        type=str.lower,
        choices=FORMS,
        default="free",
        help="Approach 3 form: free (5 parameters), tied (alpha = beta), fixed-e "
        "(E given by --fixed-e), gadre (Gadre et al. 2024 over-training law)",
    )
    parser.add_argument(
        "--fixed-e",
        type=float,
        default=None,
        metavar="E",
        help="irreducible loss for --form fixed-e (nats/token)",
    )
    parser.add_argument(
        "--holdout-flops",
        type=float,
        default=None,
        metavar="C",
        help="fit on runs with compute <= C, report relative errors on the runs above",
    )
    parser.add_argument(
        "--unique-col",
        default=None,
        metavar="NAME",
        help="--law constrained: column with the unique tokens U_D",
    )
    parser.add_argument(
        "--epochs-col",
        default=None,
        metavar="NAME",
        help="--law constrained: column with epochs over the data (U_D = D/epochs)",
    )
    parser.add_argument(
        "--dropna",
        action="store_true",
        help="drop rows with missing/non-numeric/non-positive N, D, C or loss "
        "(counted in `excluded`) instead of failing",
    )
    return parser


def parse_budgets(text):
    if text is None:
        return None
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--budgets {text!r}: expected comma-separated FLOP counts like 1e21,1e24") from None
    if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
        raise InputError(f"--budgets {text!r}: budgets must be positive finite numbers, e.g. 1e21,1e24")
    return vals


def default_budgets(C):
    """1x, 10x and 100x the largest compute in the data, rounded to one significant figure."""
    cmax = float(np.nanmax(C))
    return [float(f"{cmax * k:.0e}") for k in (1, 10, 100)]


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _fit_chinchilla(points, budgets, bootstrap: int, seed: int) -> FitResult:
    from .bootstrap import bootstrap_chinchilla
    from .chinchilla import ChinchillaFit

    frame = points.frame
    budgets = budgets or default_budgets(frame["flops"])
    fit = ChinchillaFit().fit(points.N, points.D, points.loss)
    res = result_at(fit, budgets)
    if bootstrap and res.success:
        b = bootstrap_chinchilla(
            points.N,
            points.D,
            points.loss,
            n_resamples=bootstrap,
            seed=seed,
            budgets=budgets,
            full_fit=fit,
            groups=frame["run_id"] if "run_id" in frame else None,
        )
        res = res.with_(
            ci95=dict(b.ci),
            extra={
                **res.extra,
                "bootstrap": {"n_resamples": b.n_resamples, "n_failed": b.n_failed, "seed": seed},
            },
        )
    return res


def _fit_one_variable(points, law: str, budgets, bootstrap: int, seed: int) -> FitResult:
    from .bootstrap import bootstrap_fit
    from .kaplan import PowerLawFit, frontier_points, kaplan_per_variable

    frame = points.frame
    var = {"kaplan-n": "N", "kaplan-d": "D", "compute": "C"}[law]
    xcol = {"N": "n_params", "D": "tokens", "C": "flops"}[var]
    sel = frame[np.isfinite(frame[xcol].to_numpy(float))]
    sel = frontier_points(sel) if law == "compute" else kaplan_per_variable(sel, var)

    def fitf(f):
        return PowerLawFit(variable=var).fit(f[xcol], f["loss"]).result_

    res = fitf(sel)
    kind = "frontier" if law == "compute" else "best-per-" + var
    res = res.with_(message=res.message + f" (fitted on {len(sel)} {kind} points of {len(frame)})")
    if law == "compute" and res.success:
        C = np.asarray(budgets or default_budgets(frame["flops"]), float)
        fit = PowerLawFit(variable=var).fit(sel[xcol], sel["loss"])
        nan = np.full(C.size, np.nan)
        res = res.with_(
            compute_optimal=optimal_rows(
                pd.DataFrame(
                    {
                        "flops": C,
                        "n_params": nan,
                        "tokens": nan,
                        "tokens_per_param": nan,
                        "loss": fit.predict(C),
                    }
                )
            )
        )
    if bootstrap and res.success:

        def stats(f):
            r = fitf(f)
            return {**r.params, "exponent": r.exponents["a"]} if r.success else {}

        b = bootstrap_fit(stats, sel.reset_index(drop=True), n_resamples=bootstrap, seed=seed)
        res = res.with_(
            ci95=dict(b.ci),
            extra={
                **res.extra,
                "bootstrap": {"n_resamples": b.n_resamples, "n_failed": b.n_failed, "seed": seed},
            },
        )
    return res


def fit_result(points, law: str, *, bootstrap: int = 0, budgets=None, seed: int = 0) -> FitResult:
    """Fit one law to Points (one setting: see analysis.groups) and return its FitResult."""
    if law == "chinchilla":
        return _fit_chinchilla(points, budgets, bootstrap, seed)
    return _fit_one_variable(points, law, budgets, bootstrap, seed)


def fit_law(
    points,
    law: str,
    *,
    bootstrap: int = 0,
    budgets=None,
    seed: int = 0,
    form: str = "free",
    fixed_e=None,
    holdout_flops=None,
    unique_col=None,
    epochs_col=None,
) -> dict:
    """Fit one law to Points and return the contract dict (see module docstring)."""
    if law != "chinchilla" and (form != "free" or holdout_flops is not None):
        raise InputError(f"--form and --holdout-flops apply to --law chinchilla, not --law {law}")
    if law == "constrained":
        return fit_constrained_law(
            points, unique_col=unique_col, epochs_col=epochs_col, bootstrap=bootstrap, seed=seed
        )
    if law == "chinchilla" and (form != "free" or holdout_flops is not None):
        return fit_form_law(
            points, form, fixed_e=fixed_e, holdout_flops=holdout_flops, budgets=budgets, bootstrap=bootstrap
        )
    out = {
        "law": law,
        "source": points.source,
        "excluded": dict(points.excluded),
        "notes": list(points.notes),
    }
    out.update(fit_result(points, law, bootstrap=bootstrap, budgets=budgets, seed=seed).to_dict())
    return out


def fit_groups(points, law: str, column: str, *, reuse=None, **kw) -> dict:
    """{label: contract dict} with one fit per group of `--group-by column`. `reuse` is
    (Points, dict): a fit already made on exactly one group's points."""
    out = {}
    for label, grp in split_by(points, column).items():
        grp = in_active_params(grp)
        if reuse is not None and _same_points(grp, reuse[0]):
            out[label] = {**reuse[1], "notes": list(grp.notes), "excluded": dict(grp.excluded)}
            continue
        out[label] = fit_law(grp, law, **kw)
    return out


def _same_points(a, b) -> bool:
    fa, fb = a.frame, b.frame
    if "run_id" not in fa or "run_id" not in fb or len(fa) != len(fb):
        return False
    return set(fa["run_id"]) == set(fb["run_id"]) and np.allclose(
        np.sort(fa["n_params"].to_numpy(float)), np.sort(fb["n_params"].to_numpy(float))
    )


def fit_form_law(points, form, *, fixed_e=None, holdout_flops=None, budgets=None, bootstrap=0) -> dict:
    """Approach 3 under a law form (analysis/forms.py), optionally fitted below
    `holdout_flops` with relative errors on the runs above it in `holdout`."""
    from .forms import FormFit, fit_with_holdout

    frame = points.frame
    if form == "fixed-e" and fixed_e is None:
        raise InputError("--form fixed-e needs --fixed-e VALUE (the irreducible loss, nats/token)")
    if fixed_e is not None and not (math.isfinite(fixed_e) and fixed_e > 0):
        raise InputError(f"--fixed-e {fixed_e}: must be a positive number of nats/token")
    if holdout_flops is not None:
        if not (math.isfinite(holdout_flops) and holdout_flops > 0):
            raise InputError(f"--holdout-flops {holdout_flops}: must be a positive FLOP count, e.g. 1e20")
        fit, holdout = fit_with_holdout(
            form, points.N, points.D, points.loss, points.C, holdout_flops, fixed_E=fixed_e
        )
        if holdout["n_test"] == 0:
            raise InputError(
                f"--holdout-flops {holdout_flops:g}: no run has more compute "
                f"(largest: {float(np.max(points.C)):.3g}); choose a smaller C"
            )
    else:
        fit, holdout = FormFit(form, fixed_E=fixed_e).fit(points.N, points.D, points.loss), None
    r = fit.result_
    budgets = budgets or default_budgets(frame["flops"])
    out = {
        "law": "chinchilla",
        "source": points.source,
        "excluded": dict(points.excluded),
        "notes": list(points.notes),
        **r.to_dict(),
        "compute_optimal": (compute_optimal_rows(fit.params_, budgets) if r.success else []),
    }
    if holdout is not None:
        out["holdout"] = holdout
        out["n_points"] = holdout["n_train"]
    if bootstrap:
        out["notes"].append("--bootstrap applies to --form free without --holdout-flops; skipped")
    return out


def fit_constrained_law(points, *, unique_col=None, epochs_col=None, bootstrap=0, seed=0) -> dict:
    """Muennighoff et al.'s data-constrained law: R_D*, R_N* on all runs (analysis/constrained.py)."""
    from .constrained import DataConstrainedFit
    from .data import find_column

    frame = points.frame
    cols = list(frame.columns)
    uc = find_column(cols, unique_col, "--unique-col", ("unique_tokens", "unique_data", "u_d"))
    ec = None if uc is not None else find_column(cols, epochs_col, "--epochs-col", ("epochs", "n_epochs"))
    if uc is None and ec is None:
        raise InputError(
            "--law constrained needs the unique tokens per run: pass --unique-col NAME "
            "(U_D) or --epochs-col NAME (U_D = D/epochs)"
        )
    src = uc if uc is not None else ec
    vals = pd.to_numeric(frame[src], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(vals) & (vals > 0)):
        raise InputError(f"column {src!r} has missing or non-positive values; fix them or pass --dropna")
    U = vals if uc is not None else frame["tokens"].to_numpy(float) / vals
    df = pd.DataFrame({"n_params": points.N, "tokens": points.D, "unique_tokens": U, "loss": points.loss})
    fit = DataConstrainedFit(n_bootstrap=bootstrap, seed=seed).fit(df)
    out = {
        "source": points.source,
        "excluded": dict(points.excluded),
        "notes": list(points.notes)
        + [f"unique tokens from column {src!r}" + (" (U_D = D/epochs)" if uc is None else "")],
        **fit.result_.to_dict(),
        "compute_optimal": [],
        "exponents": {"a": None, "b": None},
    }
    if bootstrap:
        out["bootstrap"] = {"n_resamples": bootstrap, "seed": seed}
    return out


def compute_optimal_rows(params, budgets):
    from .chinchilla import compute_optimal

    return compute_optimal({k: params[k] for k in ("E", "A", "B", "alpha", "beta")}, budgets).to_dict(
        "records"
    )


def kaplan_d_warning(points, max_sizes: int = 2) -> str | None:
    """kaplan-d fits L(D) on the best run per D, which is a data law only when N does not
    limit the loss; across many model sizes it mixes size and data effects."""
    N = points.N[np.isfinite(points.N)]
    sizes = np.unique(np.round(np.log(N), 6)).size if N.size else 0
    if sizes <= max_sizes:
        return None
    return (
        f"kaplan-d: the runs span {sizes} model sizes (N {N.min():.3g} to {N.max():.3g}); "
        f"L(D) is a data law only when N is large enough not to limit the loss. Fit the "
        f"largest size alone, or use --law chinchilla for L(N, D)"
    )


def _load(args, law):
    need = {
        "chinchilla": ("n", "d"),
        "kaplan-n": ("n",),
        "kaplan-d": ("d",),
        "compute": ("c",),
        "constrained": ("n", "d"),
    }[law]
    if args.csv:
        pts = load_csv(
            args.csv,
            n_col=args.n_col,
            d_col=args.d_col,
            c_col=args.c_col,
            loss_col=args.loss_col or (args.metric if args.metric != "val_loss" else None),
            include_failed=args.include_diverged,
            need=need,
            dropna=getattr(args, "dropna", False),
        )
    else:
        pts = load_mlflow(
            args.experiment, args.tracking_uri, include_failed=args.include_diverged, loss_metric=args.metric
        )
    if args.drop_top_loss < 0:
        raise InputError("--drop-top-loss must be >= 0")
    return pts.drop_top_loss(args.drop_top_loss)


def _print_text(res, stream):
    p = res.get("params") or {}
    w = stream.write
    if not res.get("success", True):  # the reason first; no "= nan" lines
        w(f"fit failed: {res['message']}\n")
        w(f"law: {res['law']}   points: {res['n_points']}   source: {res['source']}\n")
        if res["excluded"]:
            w("excluded: " + ", ".join(f"{k}: {v}" for k, v in res["excluded"].items()) + "\n")
        _print_tail(res, w)
        return
    w(f"law: {res['law']}   points: {res['n_points']}   source: {res['source']}\n")
    if res["excluded"]:
        w("excluded: " + ", ".join(f"{k}: {v}" for k, v in res["excluded"].items()) + "\n")
    for note in res.get("notes", []):
        w(f"note: {note}\n")
    for k, v in p.items():
        ci = res["ci95"].get(k)
        w(f"  {k:>6} = {v:.6g}" + (f"   95% CI [{ci[0]:.6g}, {ci[1]:.6g}]" if ci else "") + "\n")
    w(f"objective: {res['objective']:.6g}   converged: {res['converged']}\n")
    w(f"message: {res['message']}\n")
    if res["exponents"].get("a") is not None:
        w(
            "exponents: "
            + ", ".join(f"{k}={v:.4f}" for k, v in res["exponents"].items() if v is not None)
            + "\n"
        )
    for r in res["compute_optimal"]:
        if r["n_params"] is not None:
            w(
                f"  C={r['flops']:.3g}: N_opt={r['n_params']:.4g}  D_opt={r['tokens']:.4g}  "
                f"D/N={r['tokens_per_param']:.2f}  loss={r['loss']:.4f}\n"
            )
        else:
            w(f"  C={r['flops']:.3g}: frontier loss={r['loss']:.4f}\n")
    _print_tail(res, w)


def _print_tail(res, w):
    if res.get("holdout") and res["holdout"]["n_test"] and res.get("success", True):
        h = res["holdout"]
        w(
            f"holdout: fit on {h['n_train']} runs with C <= {h['flops']:.3g}, tested on {h['n_test']} above: "
            f"mean |rel. error| {h['mean_abs_rel_error']:.3%}, max {h['max_abs_rel_error']:.3%}\n"
        )
    for n in res.get("notes") or []:
        w(f"note: {n}\n")
    if res.get("elapsed_s") is not None:
        w(f"elapsed: {res['elapsed_s']:.2f} s\n")


def run_fit(args) -> int:
    """Run `scalelab fit`; prints the result; returns the exit status (0, 1 not converged, 2 bad input)."""
    t0 = time.perf_counter()
    try:
        budgets = parse_budgets(args.budgets)
        if args.bootstrap < 0:
            raise InputError("--bootstrap must be >= 0")
        pts = _load(args, args.law)
        sel = select_setting(pts, experts=getattr(args, "experts", None))
        sel = in_active_params(sel)
        kw = dict(
            bootstrap=args.bootstrap,
            budgets=budgets,
            seed=args.seed,
            form=getattr(args, "form", "free"),
            fixed_e=getattr(args, "fixed_e", None),
            holdout_flops=getattr(args, "holdout_flops", None),
            unique_col=getattr(args, "unique_col", None),
            epochs_col=getattr(args, "epochs_col", None),
        )
        res = fit_law(sel, args.law, **kw)
        if getattr(args, "group_by", None):
            res["groups"] = fit_groups(pts, args.law, args.group_by, reuse=(sel, res), **kw)
        if getattr(args, "group_by", None) == "arch":  # families: exponents, not raw losses
            res.update(families_block(pts.frame, n_boot=args.bootstrap or 100, seed=args.seed))
    except InputError as exc:
        print(f"scalelab fit: error: {exc}", file=sys.stderr)
        return 2
    res["elapsed_s"] = time.perf_counter() - t0
    res["metric"], res["loss_unit"] = args.metric, pts.loss_unit
    res.setdefault("notes", []).extend(compressor_notes(pts))
    warn = kaplan_d_warning(pts) if args.law == "kaplan-d" else None
    if warn:
        res.setdefault("notes", []).append(warn)
        print(f"scalelab fit: warning: {warn}", file=sys.stderr)
    status = 0
    if not res["identifiable"]:
        print(f"scalelab fit: error: {res['message']}", file=sys.stderr)
        status = 2
    elif not (res["converged"] and res["success"]):
        print(f"scalelab fit: warning: {res['message']}", file=sys.stderr)
        status = 1
    if args.json:
        print(json.dumps(_jsonable(res)))
    else:
        _print_text(res, sys.stdout)
        for label, g in res.get("groups", {}).items():
            sys.stdout.write(f"\n== group {label} ==\n")
            _print_text(g, sys.stdout)
        print_families(res.get("families") or {}, sys.stdout)
    return status


def run_report(
    experiment=None,
    tracking_uri=None,
    out_dir="report",
    *,
    points=None,
    true_entropy=None,
    budgets=None,
    log_to_mlflow: bool = True,
    drop_top_loss: int = 0,
    include_failed: bool = False,
    n_bootstrap: int = 200,
    grid: str = "hoffmann",
    metric: str = "val_loss",
) -> int:
    """Build the HTML + Markdown report for a study (or for `points` given directly) and log it
    to the study's MLflow parent run. Returns the exit status (0 ok, 2 bad input). metric: the
    run metric reported (val_bpb, bits per byte, for corpus studies)."""
    from .report import log_report_to_mlflow, write_report

    try:
        if points is None:
            points = load_mlflow(experiment, tracking_uri, include_failed=include_failed, loss_metric=metric)
        points = points.drop_top_loss(drop_top_loss)
        curves = None
        if experiment is not None:
            try:
                from .data import load_curves

                curves = load_curves(experiment, tracking_uri, metric=metric)
            except Exception as exc:  # noqa: BLE001 - curves are optional (Approach 1 only)
                points.notes.append(f"loss curves unavailable: {exc}")
        paths = write_report(
            points,
            out_dir,
            true_entropy=true_entropy,
            budgets=budgets,
            curves=curves,
            n_bootstrap=n_bootstrap,
            grid=grid,
        )
    except InputError as exc:
        print(f"scalelab report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {paths.html}\nsummary: {paths.markdown}")
    if log_to_mlflow and experiment is not None:
        try:
            rid = log_report_to_mlflow(out_dir, experiment, tracking_uri)
            print(f"logged to MLflow parent run {rid}")
        except Exception as exc:  # noqa: BLE001 - the files are written; logging is extra
            print(f"scalelab report: warning: could not log to MLflow: {exc}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_fit_arguments(sub.add_parser("fit", help="fit a scaling law"))
    rp = sub.add_parser("report", help="write the HTML/Markdown report")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment")
    src.add_argument("--csv")
    rp.add_argument("--tracking-uri", default=None)
    rp.add_argument("--out", required=True)
    rp.add_argument("--budgets", default=None)
    rp.add_argument("--true-entropy", type=float, default=None)
    rp.add_argument("--drop-top-loss", type=int, default=0)
    rp.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "fit":
        return run_fit(args)
    try:
        budgets = parse_budgets(args.budgets)
        pts = load_csv(args.csv) if args.csv else None
    except InputError as exc:
        print(f"scalelab report: error: {exc}", file=sys.stderr)
        return 2
    return run_report(
        args.experiment,
        args.tracking_uri,
        args.out,
        points=pts,
        true_entropy=args.true_entropy,
        budgets=budgets,
        log_to_mlflow=not args.no_mlflow,
        drop_top_loss=args.drop_top_loss,
    )


if __name__ == "__main__":
    sys.exit(main())
