"""`scalelab fit` and `scalelab report`, as functions the orchestrator's CLI wires in.

    add_fit_arguments(parser)   # --csv/--experiment, column mapping, --law, --form, ...
    run_fit(args) -> int        # 0 ok; 1 the fit ran but did not converge; 2 bad input or
                                # a fit the data cannot identify
    run_report(experiment, tracking_uri, out_dir, ...) -> int

`python -m analysis.cli fit ...` / `python -m analysis.cli report ...` work standalone.

JSON contract (--json): stdout is ONE object
  {"law", "n_points", "params", "objective", "converged", "ci95": {name: [lo, hi]},
   "compute_optimal": [{"flops", "n_params", "tokens", "tokens_per_param", "loss"}],
   "exponents": {"a", "b"}, ...extra keys: identifiable, success, message, excluded, source,
   notes, bootstrap, and with --group-by: "groups": {label: {...the same contract...}}}
--law chinchilla adds "form" (the form used: chosen by --form auto, the default, or given),
"form_scores" ({form: cross-validated error, or why it has none}), "selection" and
"approaches" (cross-checks); with --holdout-flops C, "holdout": {"flops", "n_train",
"n_test", "errors", "mean_abs_rel_error", "max_abs_rel_error", "points": [{"name",
"n_params", "tokens", "flops", "loss", "predicted", "rel_error", "ci95", "inside"}],
"coverage"}. The top level is one setting's fit (dense points by default, `--experts K` for
an MoE setting, in active parameters); points of other settings are counted in `excluded`
with the reason, and the notes say which setting was fitted (see analysis/groups.py).
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

from .answer import default_budgets, prepare_points
from .compressor import compressor_notes
from .data import InputError, load_csv, load_mlflow
from .families import families_block
from .fitting import LAWS, FitOptions, base_law_from_file, fit_law, parse_base_law
from .groups import in_active_params, split_by

__all__ = ["add_fit_arguments", "default_budgets", "main", "parse_budgets", "run_fit", "run_report"]


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
    parser.add_argument(
        "--law",
        choices=tuple(LAWS),
        default="chinchilla",
        help="; ".join(f"{k}: bootstrap over {v.bootstrap}" for k, v in LAWS.items()),
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        metavar="K",
        help="bootstrap resamples for 95%% intervals (0: none; default: 200, the report's, for "
        "--form auto or --holdout-flops, else 0)",
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
        'param) separately; JSON key "groups": {label: {...}}',
    )
    add_form_arguments(parser)
    return parser


def add_form_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--form / --fixed-e / --holdout-flops / --resample (Approach 3), the constrained law's
    columns and base law, --dropna."""
    from .laws.forms import FORMS

    parser.add_argument(
        "--form",
        type=str.lower,
        choices=("auto", *FORMS),
        default="auto",
        help="Approach 3 form: auto (default: chosen by cross-validation over compute, as the "
        "report does), free (5 parameters), tied (alpha = beta), fixed-e (E given by --fixed-e or "
        "the corpus' known entropy), gadre (Gadre et al. 2024 over-training law)",
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
        help="fit on runs with compute <= C; predict each run above it, with a 95%% interval",
    )
    parser.add_argument(
        "--resample",
        choices=("runs", "sizes"),
        default="runs",
        help="bootstrap unit for --law chinchilla: runs (default) or whole model sizes",
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
    base = parser.add_mutually_exclusive_group()
    base.add_argument(
        "--base-law",
        default=None,
        metavar="E=..,A=..,B=..,alpha=..,beta=..",
        help="--law constrained: fix the base law L(N, D) instead of fitting it",
    )
    base.add_argument(
        "--base-from",
        default=None,
        metavar="FIT.json",
        help="--law constrained: the base law from a `scalelab fit --json` output",
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
    if args.csv:
        pts = load_csv(
            args.csv,
            n_col=args.n_col,
            d_col=args.d_col,
            c_col=args.c_col,
            loss_col=args.loss_col or (args.metric if args.metric != "val_loss" else None),
            include_failed=args.include_diverged,
            need=LAWS[law].needs,
            dropna=getattr(args, "dropna", False),
        )
    else:
        pts = load_mlflow(
            args.experiment, args.tracking_uri, include_failed=args.include_diverged, loss_metric=args.metric
        )
    if args.drop_top_loss < 0:
        raise InputError("--drop-top-loss must be >= 0")
    return pts.drop_top_loss(args.drop_top_loss)


def fit_options(args) -> FitOptions:
    """The flags as FitOptions, validated (bad values are InputError naming the flag)."""
    if args.bootstrap is not None and args.bootstrap < 0:
        raise InputError("--bootstrap must be >= 0")
    base = None
    if getattr(args, "base_law", None):
        base = parse_base_law(args.base_law)
    elif getattr(args, "base_from", None):
        base = base_law_from_file(args.base_from)
    return FitOptions(
        bootstrap=args.bootstrap,
        budgets=parse_budgets(args.budgets),
        seed=args.seed,
        form=getattr(args, "form", "auto") or "auto",
        fixed_e=getattr(args, "fixed_e", None),
        holdout_flops=getattr(args, "holdout_flops", None),
        unique_col=getattr(args, "unique_col", None),
        epochs_col=getattr(args, "epochs_col", None),
        base_law=base,
        resample=getattr(args, "resample", "runs"),
    )


def fit_groups(points, law: str, column: str, opts: FitOptions, *, reuse=None) -> dict:
    """{label: contract dict} with one fit per group of `--group-by column`. `reuse` is
    (Points, dict): a fit already made on exactly one group's points."""
    out = {}
    for label, grp in split_by(points, column).items():
        grp = in_active_params(grp)
        if reuse is not None and _same_points(grp, reuse[0]):
            out[label] = {**reuse[1], "notes": list(grp.notes), "excluded": dict(grp.excluded)}
            continue
        out[label] = fit_law(grp.collapse_duplicates(), law, opts)
    return out


def _same_points(a, b) -> bool:
    fa, fb = a.frame, b.frame
    if "run_id" not in fa or "run_id" not in fb or len(fa) != len(fb):
        return False
    return set(fa["run_id"]) == set(fb["run_id"]) and np.allclose(
        np.sort(fa["n_params"].to_numpy(float)), np.sort(fb["n_params"].to_numpy(float))
    )


def exit_status(res: dict) -> int:
    """2: the data cannot identify the fit (and it is unusable); 1: fitted but not converged
    or unusable; 0: usable (a parameter reported as a one-sided bound is usable)."""
    if not res["identifiable"] and not res["success"]:
        return 2
    if not (res["converged"] and res["success"]):
        return 1
    return 0


def run_fit(args) -> int:
    """Run `scalelab fit`; prints the result; returns the exit status (see `exit_status`)."""
    from .report.text import print_families, print_fit

    t0 = time.perf_counter()
    try:
        opts = fit_options(args)
        pts = _load(args, args.law)
        sel = prepare_points(pts, experts=getattr(args, "experts", None))
        res = fit_law(sel, args.law, opts)
        if getattr(args, "group_by", None):
            res["groups"] = fit_groups(pts, args.law, args.group_by, opts, reuse=(sel, res))
        if getattr(args, "group_by", None) == "arch":  # families: exponents, not raw losses
            res.update(families_block(pts.frame, n_boot=opts.bootstrap or 100, seed=opts.seed))
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
    status = exit_status(res)
    if status == 2:
        print(f"scalelab fit: error: {res['message']}", file=sys.stderr)
    elif status == 1:
        print(f"scalelab fit: warning: {res['message']}", file=sys.stderr)
    if args.json:
        print(json.dumps(_jsonable(res)))
    else:
        print_fit(res, sys.stdout)
        for label, g in res.get("groups", {}).items():
            sys.stdout.write(f"\n== group {label} ==\n")
            print_fit(g, sys.stdout)
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
    n_bootstrap: int | None = None,
    grid: str = "full",
    study_file: str | None = None,
    metric: str = "val_loss",
) -> int:
    """Build the HTML + Markdown report for a study (or for `points` given directly), print its
    verdict, and log it to the study's MLflow parent run. Returns the exit status (0 ok, 2 bad
    input). metric: the run metric reported (val_bpb, bits per byte, for corpus studies)."""
    from .answer import ANSWER_RESAMPLES
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
            except Exception as exc:  # noqa: BLE001 - curves are optional (a figure only)
                points.notes.append(f"loss curves unavailable: {exc}")
        paths = write_report(
            points,
            out_dir,
            true_entropy=true_entropy,
            budgets=budgets,
            curves=curves,
            n_bootstrap=ANSWER_RESAMPLES if n_bootstrap is None else n_bootstrap,
            grid=grid,
            title=experiment,
            study_file=study_file,
        )
    except InputError as exc:
        print(f"scalelab report: error: {exc}", file=sys.stderr)
        return 2
    for line in paths.results.get("verdict_lines", []):
        print(line)
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
