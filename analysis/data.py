"""Loading scaling-law points: from CSV/Parquet with column mapping, or from an MLflow study.

Everything downstream works on `Points`: a DataFrame with canonical columns
`n_params` (N, total parameters), `tokens` (D), `flops` (C) and `loss` (nats/token), plus
whatever else the source carried (every logged param for MLflow), and the bookkeeping the
report needs: what was excluded and why.

Bad input raises `InputError` (a ValueError naming the column/option and the fix); the CLI
turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CANONICAL = ("n_params", "tokens", "flops", "loss")

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

# params parsed as numbers when read from MLflow (everything else stays a string)
_NUMERIC_PARAMS = (
    "n_params",
    "n_params_active",
    "n_params_nonembedding",
    "tokens",
    "flops",
    "experts",
    "top_k",
    "n_layer",
    "d_model",
    "n_head",
    "seed",
    "d_ff",
    "d_expert",
    "granularity",
    "shared_experts",
    "vocab_size",
    "seq_len",
    "batch_size",
    "lr",
    "true_entropy",
    "flops_6n",
    "flops_kaplan",
    "unique_tokens",
    "epochs",
    "budget",
    "compressor_bpb",  # corpus studies: xz -9e on the validation text, bits per byte
    "bytes_per_token",
)
# the unit of a loss metric (default nats/token): val_bpb is bits per byte (corpus studies)
METRIC_UNITS = {"val_bpb": "bits/byte"}


class InputError(ValueError):
    """Input that cannot be fitted; the message names the column/option and the fix."""


@dataclass
class Points:
    """Fit-ready points plus data-quality bookkeeping.

    frame: one row per run, canonical columns n_params, tokens, flops, loss (+ extras).
    excluded: reason -> count of rows dropped before fitting (diverged, failed, outlier, ...).
    notes: human-readable data-quality notes for the report.
    """

    frame: pd.DataFrame
    source: str = ""
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    true_entropy: float | None = None
    dropped: pd.DataFrame | None = None  # the rows removed by an outlier policy
    loss_unit: str = "nats/token"  # bits/byte when the loss is val_bpb

    @property
    def N(self) -> np.ndarray:
        return self.frame["n_params"].to_numpy(float)

    @property
    def D(self) -> np.ndarray:
        return self.frame["tokens"].to_numpy(float)

    @property
    def C(self) -> np.ndarray:
        return self.frame["flops"].to_numpy(float)

    @property
    def loss(self) -> np.ndarray:
        return self.frame["loss"].to_numpy(float)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_excluded(self) -> int:
        return int(sum(self.excluded.values()))

    def drop_top_loss(self, k: int) -> Points:
        """Outlier policy: drop the k highest-loss points (Epoch's subset of Chinchilla's data
        is k=5). Recorded in `excluded` and `notes`; k=0 returns the points unchanged."""
        if k <= 0:
            return self
        if k >= len(self.frame):
            raise InputError(f"outlier policy drops {k} points but only {len(self.frame)} exist")
        order = np.argsort(self.frame["loss"].to_numpy(float), kind="stable")
        keep_idx = np.sort(order[:-k])
        drop = self.frame.iloc[np.sort(order[-k:])]
        ex = dict(self.excluded)
        ex["outlier (top-loss)"] = ex.get("outlier (top-loss)", 0) + k
        notes = self.notes + [
            f"outlier policy: dropped the {k} highest-loss point(s) (loss >= {drop['loss'].min():.4f})"
        ]
        return dataclasses.replace(
            self,
            frame=self.frame.iloc[keep_idx].reset_index(drop=True),
            excluded=ex,
            notes=notes,
            dropped=drop,
        )

    def subset(self, mask) -> Points:
        return dataclasses.replace(self, frame=self.frame[np.asarray(mask)].reset_index(drop=True))


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


# ----------------------------------------------------------------------------- MLflow
def _client(tracking_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(
            f"no MLflow experiment named {experiment!r} at this tracking URI "
            f"(check --experiment and --tracking-uri)"
        )
    return exp.experiment_id


def search_all_runs(client, experiment_id: str, filter_string: str = "", order_by=None):
    """Every run matching the filter, in pages of 50,000 (MLflow's maximum), with params, tags
    and latest metrics; `order_by` as for search_runs."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=50000,
            page_token=token,
            order_by=order_by,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _sql_point_runs(tracking_uri: str, experiment_id: str):
    """Point runs read straight from an MLflow SQL store: [(run_id, status, params, tags,
    metrics)]. Four set-based queries instead of ORM objects per run: 10,000 runs load in about
    a second where search_runs takes ~20 s. Same selection as search_runs (active runs, tag
    scalelab.role = point; latest metric values, NaN kept)."""
    import sqlalchemy as sa

    eng = sa.create_engine(tracking_uri)
    eid = int(experiment_id)
    base = (
        "FROM {t} x JOIN runs r ON x.run_uuid = r.run_uuid "
        "WHERE r.experiment_id = :eid AND r.lifecycle_stage = 'active'"
    )
    try:
        with eng.connect() as con:

            def q(sql):
                return con.execute(sa.text(sql), {"eid": eid}).fetchall()

            runs = q(
                "SELECT r.run_uuid, r.status "
                + base.format(t="tags")
                + " AND x.key = 'scalelab.role' AND x.value = 'point'"
            )
            kv = {
                t: q(
                    f"SELECT x.run_uuid, x.key, x.value{', x.is_nan' if t == 'latest_metrics' else ''} "
                    + base.format(t=t)
                )
                for t in ("params", "tags", "latest_metrics")
            }
    finally:
        eng.dispose()
    out: dict[str, Any] = {rid: (rid, status, {}, {}, {}) for rid, status in runs}
    for slot, t in ((2, "params"), (3, "tags"), (4, "latest_metrics")):
        for row in kv[t]:
            rec = out.get(row[0])
            if rec is not None:
                val = float("nan") if t == "latest_metrics" and row[3] else row[2]
                rec[slot][row[1]] = float(val) if t == "latest_metrics" else val
    return list(out.values())


def _point_runs(client, tracking_uri, experiment_id):
    uri = tracking_uri
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if str(uri).split(":", 1)[0].split("+", 1)[0] in _SQL_SCHEMES:
        try:
            return _sql_point_runs(uri, experiment_id)
        except Exception as e:  # noqa: BLE001 - schema drift or driver trouble: the API below works
            log.debug("direct SQL read of the store failed (%s); using the MLflow API", type(e).__name__)
    runs = search_all_runs(client, experiment_id, "tags.`scalelab.role` = 'point'")
    return [(r.info.run_id, r.info.status, r.data.params, r.data.tags, r.data.metrics) for r in runs]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def load_mlflow(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    include_failed: bool = False,
    loss_metric: str = "val_loss",
) -> Points:
    """Points from a scalelab study in MLflow (docs/CONTRACTS.md layout).

    From a SQL store, four set-based queries read params, tags and the LATEST value of every
    metric (no metric history); otherwise one batched search_runs in pages of 50,000. Child runs with tag scalelab.role=point are
    points; outcome from tag scalelab.outcome (else the run status). Runs not finished
    (diverged, failed, killed, still running) or without a final loss are excluded and counted.
    """
    client = _client(tracking_uri)
    eid = _experiment_id(client, experiment)
    runs = _point_runs(client, tracking_uri, eid)
    rows: list[dict[str, Any]] = []
    excluded: dict[str, int] = {}
    for run_id, status, params, tags, metrics in runs:
        outcome = tags.get("scalelab.outcome")
        if outcome is None:
            outcome = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(
                status, "unfinished"
            )
        if status in ("RUNNING", "SCHEDULED") and outcome == "finished":
            outcome = "unfinished"
        row = {k: (_num(v) if k in _NUMERIC_PARAMS else v) for k, v in params.items()}
        row["loss"] = metrics.get(loss_metric, np.nan)
        row.update({k: v for k, v in metrics.items() if k.startswith("val_loss_len")})
        row["run_id"] = run_id
        row["outcome"] = outcome
        row["run_key"] = tags.get("scalelab.run_key", row.get("run_key"))
        if "scalelab.round" in tags:  # adaptive points (scalelab run --adaptive)
            row["round"] = _num(tags["scalelab.round"])
        if outcome != "finished" and not include_failed:
            excluded[outcome] = excluded.get(outcome, 0) + 1
            continue
        if not (np.isfinite(row["loss"]) if isinstance(row["loss"], float) else False):
            excluded[f"no final {loss_metric}"] = excluded.get(f"no final {loss_metric}", 0) + 1
            continue
        rows.append(row)
    notes = [f"{len(runs)} point runs in experiment {experiment!r}; {len(rows)} used"]
    if not rows:
        raise InputError(
            f"experiment {experiment!r} has no finished point runs with a {loss_metric} "
            f"(runs seen: {len(runs)}, excluded: {excluded or 'none'})"
        )
    df = pd.DataFrame(rows)
    for col in ("n_params", "tokens", "flops"):
        if col not in df.columns:
            df[col] = np.nan
    if df["flops"].isna().any():
        df["flops"] = df["flops"].fillna(6.0 * df["n_params"] * df["tokens"])
    bad = ~np.isfinite(df[["n_params", "tokens", "flops", "loss"]].to_numpy(float)).all(axis=1) | (
        df[["n_params", "tokens", "flops", "loss"]].to_numpy(float) <= 0
    ).any(axis=1)
    if bad.any():
        excluded["missing/invalid n_params, tokens or loss"] = int(bad.sum())
        df = df[~bad].reset_index(drop=True)
    te = None
    if "true_entropy" in df.columns:
        v = pd.to_numeric(df["true_entropy"], errors="coerce").dropna().unique()
        if v.size == 1:
            te = float(v[0])
    cols = list(CANONICAL) + [c for c in df.columns if c not in CANONICAL]
    unit = METRIC_UNITS.get(loss_metric, "nats/token")
    return Points(
        df[cols],
        source=f"mlflow:{experiment}",
        excluded=excluded,
        notes=notes,
        true_entropy=te,
        loss_unit=unit,
    )


def load_curves(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    metric: str = "val_loss",
    run_ids=None,
    include_failed: bool = False,
) -> pd.DataFrame:
    """Loss curves for Approach 1: columns run_id, n_params, tokens (the metric step = tokens
    seen), flops (6·N·tokens scaled by the run's own flops/tokens ratio when logged), loss.

    Histories come from the store's bulk query when it has one (SQL stores: one query per 100
    runs); otherwise from per-run queries in a small thread pool.
    """
    pts = load_mlflow(experiment, tracking_uri, include_failed=include_failed)
    df = pts.frame
    if run_ids is not None:
        df = df[df["run_id"].isin(set(run_ids))]
    client = _client(tracking_uri)
    ids = df["run_id"].tolist()
    recs = []
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "get_metric_history_bulk"):
        for i in range(0, len(ids), 100):
            for m in store.get_metric_history_bulk(ids[i : i + 100], metric, max_results=10**8):
                recs.append((m.run_id, m.step, m.value))
    else:
        with ThreadPoolExecutor(8) as ex:
            for rid, hist in zip(ids, ex.map(lambda r: client.get_metric_history(r, metric), ids)):
                recs.extend((rid, m.step, m.value) for m in hist)
    cur = pd.DataFrame(recs, columns=["run_id", "tokens", "loss"])
    meta = df[["run_id", "n_params", "tokens", "flops"]].rename(
        columns={"tokens": "run_tokens", "flops": "run_flops"}
    )
    cur = cur.merge(meta, on="run_id", how="inner")
    cur = cur[cur["tokens"] > 0]
    cur["flops"] = cur["run_flops"] / cur["run_tokens"] * cur["tokens"]
    cur = cur.drop_duplicates(["run_id", "tokens"], keep="last")
    return (
        cur[["run_id", "n_params", "tokens", "flops", "loss"]]
        .sort_values(["run_id", "tokens"])
        .reset_index(drop=True)
    )
