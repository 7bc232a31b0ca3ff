"""Points from tables: CSV/Parquet files and DataFrames, with column mapping.

Column flags match case-insensitively; without flags common export names are guessed (W&B's
`val/loss`, MLflow's `metrics.val_loss`, TensorBoard's `eval/loss`). Bad input raises
`InputError` naming the column/option and the fix; the CLI turns it into exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .points import CANONICAL, InputError, Points

# column names recognised when no mapping is given (first match wins). Names are compared
# after `_norm`: lower case, export prefixes (params., metrics., config., summary., hparams/)
# removed and separators (/ . - space) turned into "_", so W&B's `val/loss`, MLflow's
# `metrics.val_loss` and TensorBoard's `eval/loss` all match. Validation losses come before
# a bare `loss`, which in experiment-tracker exports is usually the training loss.
_ALIASES = {
    "n": (
        "n_params",
        "n",
        "model_size",
        "params",
        "parameters",
        "num_params",
        "n_parameters",
        "num_parameters",
        "param_count",
        "total_params",
        "model_params",
        "nparams",
    ),
    "d": (
        "tokens",
        "d",
        "training_tokens",
        "train_tokens",
        "data",
        "num_tokens",
        "n_tokens",
        "tokens_seen",
        "total_tokens",
        "trained_tokens",
    ),
    "c": (
        "flops",
        "c",
        "training_flop",
        "training_flops",
        "train_flops",
        "compute",
        "total_flops",
        "train_flop",
        "flops_6n",
    ),
    "loss": (
        "val_loss",
        "eval_loss",
        "validation_loss",
        "valid_loss",
        "val_loss_final",
        "eval_val_loss",
        "loss",
        "final_loss",
        "l",
        "test_loss",
    ),
}
# a run-state column (W&B `State`, MLflow `Status`, scalelab `outcome`): rows not finished are
# excluded unless include_failed
_STATUS_NAMES = ("status", "state", "outcome", "run_state", "run_status")
_FINISHED = ("finished", "ok", "success", "succeeded", "completed", "complete")
_PREFIXES = ("params.", "metrics.", "config.", "summary.", "hparams/", "hparams.", "tags.")
_OPTION = {"n": "--n-col", "d": "--d-col", "c": "--c-col", "loss": "--loss-col"}


# ----------------------------------------------------------------------------- tables
def _norm(name) -> str:
    """Column name as compared by the guesser and by the --*-col flags (case-insensitive)."""
    t = str(name).strip().lower()
    for pre in _PREFIXES:
        if t.startswith(pre):
            t = t[len(pre) :]
            break
    for sep in ("/", ".", "-", " "):
        t = t.replace(sep, "_")
    return t


def _find(columns, key, given):
    if given is not None:
        if given in columns:
            return given
        hits = [c for c in columns if str(c).strip().lower() == str(given).strip().lower()]
        if not hits:
            hits = [c for c in columns if _norm(c) == _norm(given)]
        if len(hits) == 1:
            return hits[0]
        why = "matches several columns" if hits else "is not in the file"
        raise InputError(
            f"column {given!r} (from {_OPTION[key]}) {why}; columns are: {', '.join(map(str, columns))}"
        )
    low = {}
    for c in columns:
        low.setdefault(_norm(c), c)
    for alias in _ALIASES[key]:
        if alias in low:
            return low[alias]
    return None


def _filter_status(df, cols, status_col, include_failed, excluded, notes):
    """Keep finished runs when the table has a run-state column (W&B State, MLflow Status)."""
    st = status_col or next((c for c in cols if _norm(c) in _STATUS_NAMES), None)
    if st is None:
        return df
    ok = df[st].astype(str).str.strip().str.lower().isin(_FINISHED)
    if include_failed or ok.all():
        return df
    counts = df.loc[~ok, st].astype(str).str.strip().str.lower().value_counts()
    for reason, cnt in counts.items():
        excluded[reason] = excluded.get(reason, 0) + int(cnt)
    notes.append(
        f"excluded {int((~ok).sum())} run(s) whose {st!r} is not finished ("
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
        + "); pass --include-diverged to keep them"
    )
    return df[ok]


def _numeric(df, mapping, dropna, excluded, notes):
    """The mapped columns as positive floats; bad rows are an InputError, or dropped with
    a count when dropna."""
    vals = {canon: pd.to_numeric(df[col], errors="coerce").to_numpy(float) for canon, col in mapping.items()}
    bad = np.zeros(len(df), dtype=bool)
    for v in vals.values():
        bad |= ~np.isfinite(v) | (v <= 0)
    if bad.any() and dropna:
        excluded["missing or invalid value (--dropna)"] = int(bad.sum())
        notes.append(
            f"--dropna: dropped {int(bad.sum())} row(s) with a missing, non-numeric or "
            f"non-positive value in {', '.join(map(repr, mapping.values()))}"
        )
        return df[~bad], {k: v[~bad] for k, v in vals.items()}
    for canon, col in mapping.items():
        b = ~np.isfinite(vals[canon]) | (vals[canon] <= 0)
        if b.any():
            rows = np.flatnonzero(b)[:10].tolist()
            raise InputError(
                f"column {col!r} ({canon}) has {int(b.sum())} non-positive, NaN or "
                f"non-numeric value(s) (rows {rows}); fix or remove those rows, "
                f"or pass --dropna to drop them"
            )
    return df, vals


def _missing(need, nc, dc, cc, lc, cols):
    missing = []
    if lc is None:
        missing.append("loss (pass --loss-col NAME)")
    if "n" in need and nc is None:
        missing.append("model size N (pass --n-col NAME)")
    if "d" in need and dc is None and (cc is None or nc is None):
        missing.append("tokens D or compute C (pass --d-col NAME or --c-col NAME; D = C/(6N))")
    if "c" in need and cc is None and (dc is None or nc is None):
        missing.append("compute C, or N and D (pass --c-col NAME, or --n-col and --d-col; C = 6ND)")
    if missing:
        raise InputError(
            "missing column(s): " + "; ".join(missing) + f". Columns found: {', '.join(map(str, cols))}"
        )


def find_column(columns, given, flag: str, guesses=()):
    """A column by its --*-col flag (case-insensitive, export prefixes ignored) or, without a
    flag, by the first of `guesses` present. None when neither finds one."""
    if given is None:
        low = {_norm(c): c for c in columns}
        return next((low[g] for g in guesses if g in low), None)
    hits = (
        [c for c in columns if c == given]
        or [c for c in columns if str(c).strip().lower() == str(given).strip().lower()]
        or [c for c in columns if _norm(c) == _norm(given)]
    )
    if len(hits) != 1:
        raise InputError(
            f"column {given!r} (from {flag}) "
            f"{'matches several columns' if hits else 'is not in the file'}; "
            f"columns are: {', '.join(map(str, columns))}"
        )
    return hits[0]


def from_frame(
    df: pd.DataFrame,
    *,
    n_col=None,
    d_col=None,
    c_col=None,
    loss_col=None,
    source: str = "table",
    status_col: str | None = None,
    include_failed: bool = False,
    need=("n", "d", "loss"),
    dropna: bool = False,
) -> Points:
    """Map a table's columns onto (n_params, tokens, flops, loss) and validate.

    Column flags match case-insensitively; without flags, common export names are guessed
    (see _ALIASES) and the columns taken are named in `notes`. D = C/(6N) when only C is
    given; C = 6ND when only D is given. Missing, non-numeric or non-positive values are an
    InputError naming the column and rows, or dropped and counted when dropna. If the table
    has a run-state column (status/state/outcome), rows not finished are excluded (counted)
    unless include_failed.
    """
    cols = list(df.columns)
    nc, dc, cc, lc = (
        _find(cols, k, g) for k, g in (("n", n_col), ("d", d_col), ("c", c_col), ("loss", loss_col))
    )
    _missing(set(need), nc, dc, cc, lc, cols)
    excluded: dict[str, int] = {}
    taken = {k: c for k, c in (("N", nc), ("D", dc), ("C", cc), ("loss", lc)) if c is not None}
    notes: list[str] = ["columns taken: " + ", ".join(f"{k} <- {c!r}" for k, c in taken.items())]
    df = _filter_status(df.copy(), cols, status_col, include_failed, excluded, notes)
    mapping = {
        canon: col
        for canon, col in (("n_params", nc), ("tokens", dc), ("flops", cc), ("loss", lc))
        if col is not None
    }
    df, vals = _numeric(df, mapping, dropna, excluded, notes)
    if len(df) == 0:
        raise InputError(
            f"no rows left to fit (excluded: {excluded}); check the status column "
            f"or the values, or pass --include-diverged"
        )
    out = pd.DataFrame(vals, index=df.index)
    for canon in CANONICAL:
        if canon not in out.columns:
            out[canon] = np.nan
    if dc is None and cc is not None and nc is not None:
        out["tokens"] = out["flops"] / (6.0 * out["n_params"])
        notes.append("D derived from compute as C/(6N)")
    if cc is None and dc is not None and nc is not None:
        out["flops"] = 6.0 * out["n_params"] * out["tokens"]
        notes.append("C derived as 6ND")
    used = {nc, dc, cc, lc}
    for c in cols:
        if c not in used and c not in out.columns:
            out[c] = df[c].to_numpy()
    out = out[list(CANONICAL) + [c for c in out.columns if c not in CANONICAL]].reset_index(drop=True)
    te = None
    if "true_entropy" in out.columns:
        v = pd.to_numeric(out["true_entropy"], errors="coerce").dropna().unique()
        if v.size == 1:
            te = float(v[0])
    return Points(out, source=source, excluded=excluded, notes=notes, true_entropy=te)


def sniff_delimiter(path) -> str:
    """',' ';' or tab: whichever splits the header line into the most fields, if the next
    lines agree (W&B and spreadsheet exports in many locales use ';' or tab)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        lines = [ln for ln in (fh.readline() for _ in range(5)) if ln.strip()]
    if not lines:
        return ","
    best = max((",", ";", "\t"), key=lambda d: (lines[0].count(d), d == ","))
    counts = {ln.count(best) for ln in lines}
    return best if lines[0].count(best) > 0 and len(counts) == 1 else ","


def load_csv(
    path,
    *,
    n_col=None,
    d_col=None,
    c_col=None,
    loss_col=None,
    include_failed: bool = False,
    need=("n", "d", "loss"),
    dropna: bool = False,
) -> Points:
    """Points from a CSV (comma, semicolon or tab: detected) or Parquet file (by extension).
    See `from_frame` for the mapping."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p} (check the --csv path)")
    try:
        sep = None
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            sep = sniff_delimiter(p)
            df = pd.read_csv(p, sep=sep)
    except Exception as exc:  # unreadable file is bad input, not a crash
        raise InputError(f"cannot read {p}: {exc}") from exc
    if df.empty:
        raise InputError(f"{p} has no rows")
    pts = from_frame(
        df,
        n_col=n_col,
        d_col=d_col,
        c_col=c_col,
        loss_col=loss_col,
        source=str(p),
        include_failed=include_failed,
        need=need,
        dropna=dropna,
    )
    if sep not in (None, ","):
        pts.notes.insert(0, f"delimiter {'tab' if sep == chr(9) else repr(sep)} detected")
    return pts
