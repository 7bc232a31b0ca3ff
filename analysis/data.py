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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

CANONICAL = ("n_params", "tokens", "flops", "loss")

# column names recognised when no mapping is given (first match wins, case-insensitive)
_ALIASES = {
    "n": ("n_params", "n", "model size", "params", "parameters", "model_size"),
    "d": ("tokens", "d", "training tokens", "training_tokens", "data"),
    "c": ("flops", "c", "training flop", "training flops", "training_flop", "compute"),
    "loss": ("loss", "val_loss", "final_loss", "l"),
}
_OPTION = {"n": "--n-col", "d": "--d-col", "c": "--c-col", "loss": "--loss-col"}

# params parsed as numbers when read from MLflow (everything else stays a string)
_NUMERIC_PARAMS = ("n_params", "n_params_active", "n_params_nonembedding", "tokens", "flops",
                   "experts", "top_k", "n_layer", "d_model", "n_head", "seed", "d_ff", "d_expert",
                   "granularity", "shared_experts", "vocab_size", "seq_len", "batch_size", "lr",
                   "true_entropy", "flops_6n", "flops_kaplan", "unique_tokens", "epochs")


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
    dropped: pd.DataFrame | None = None   # the rows removed by an outlier policy

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

    def drop_top_loss(self, k: int) -> "Points":
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
        notes = self.notes + [f"outlier policy: dropped the {k} highest-loss point(s) "
                              f"(loss >= {drop['loss'].min():.4f})"]
        return dataclasses.replace(self, frame=self.frame.iloc[keep_idx].reset_index(drop=True),
                                   excluded=ex, notes=notes, dropped=drop)

    def subset(self, mask) -> "Points":
        return dataclasses.replace(self, frame=self.frame[np.asarray(mask)].reset_index(drop=True))


# ----------------------------------------------------------------------------- tables
def _find(columns, key, given):
    if given is not None:
        if given not in columns:
            raise InputError(f"column {given!r} (from {_OPTION[key]}) is not in the file; "
                             f"columns are: {', '.join(map(str, columns))}")
        return given
    low = {str(c).strip().lower(): c for c in columns}
    for alias in _ALIASES[key]:
        if alias in low:
            return low[alias]
    return None


def from_frame(df: pd.DataFrame, *, n_col=None, d_col=None, c_col=None, loss_col=None,
               source: str = "table", status_col: str | None = None,
               include_failed: bool = False, need=("n", "d", "loss")) -> Points:
    """Map a table's columns onto (n_params, tokens, flops, loss) and validate.

    D = C/(6N) when only C is given; C = 6ND when only D is given. Non-positive or NaN values
    are an InputError (naming the column and rows), never silently dropped. If the table has a
    status/outcome column, rows not 'finished' are excluded unless include_failed.
    """
    cols = list(df.columns)
    nc = _find(cols, "n", n_col)
    dc = _find(cols, "d", d_col)
    cc = _find(cols, "c", c_col)
    lc = _find(cols, "loss", loss_col)
    need = set(need)
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
        raise InputError("missing column(s): " + "; ".join(missing)
                         + f". Columns found: {', '.join(map(str, cols))}")
    df = df.copy()
    excluded: dict[str, int] = {}
    notes: list[str] = []
    st = status_col or next((c for c in cols if str(c).lower() in ("status", "outcome")), None)
    if st is not None and not include_failed:
        ok = df[st].astype(str).str.lower().isin(["finished", "ok", "success"])
        for reason, cnt in df.loc[~ok, st].astype(str).str.lower().value_counts().items():
            excluded[reason] = int(cnt)
        df = df[ok]
    out = pd.DataFrame(index=df.index)
    for canon, col in (("n_params", nc), ("tokens", dc), ("flops", cc), ("loss", lc)):
        if col is None:
            continue
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(vals) | (vals <= 0)
        if bad.any():
            rows = np.flatnonzero(bad)[:10].tolist()
            raise InputError(f"column {col!r} ({canon}) has {int(bad.sum())} non-positive, NaN or "
                             f"non-numeric value(s) (rows {rows}); fix or remove those rows")
        out[canon] = vals
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


def load_csv(path, *, n_col=None, d_col=None, c_col=None, loss_col=None,
             include_failed: bool = False, need=("n", "d", "loss")) -> Points:
    """Points from a CSV or Parquet file (by extension). See `from_frame` for the mapping."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p} (check the --csv path)")
    try:
        df = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as exc:  # unreadable file is bad input, not a crash
        raise InputError(f"cannot read {p}: {exc}") from exc
    if df.empty:
        raise InputError(f"{p} has no rows")
    return from_frame(df, n_col=n_col, d_col=d_col, c_col=c_col, loss_col=loss_col,
                      source=str(p), include_failed=include_failed, need=need)


# ----------------------------------------------------------------------------- MLflow
def _client(tracking_uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(f"no MLflow experiment named {experiment!r} at this tracking URI "
                         f"(check --experiment and --tracking-uri)")
    return exp.experiment_id


def search_all_runs(client, experiment_id: str, filter_string: str = ""):
    """Every run matching the filter, paged 1000 at a time (params, tags, latest metrics)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def load_mlflow(experiment: str, tracking_uri: str | None = None, *,
                include_failed: bool = False, loss_metric: str = "val_loss") -> Points:
    """Points from a scalelab study in MLflow (docs/CONTRACTS.md layout).

    One batched search (paged, 1000 runs per page) returns params, tags and the LATEST value of
    every metric, so no metric history is fetched. Child runs with tag scalelab.role=point are
    points; outcome from tag scalelab.outcome (else the run status). Runs not finished
    (diverged, failed, killed, still running) or without a final loss are excluded and counted.
    """
    client = _client(tracking_uri)
    eid = _experiment_id(client, experiment)
    runs = search_all_runs(client, eid, "tags.`scalelab.role` = 'point'")
    rows, excluded = [], {}
    for r in runs:
        tags = r.data.tags
        outcome = tags.get("scalelab.outcome")
        if outcome is None:
            outcome = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(
                r.info.status, "unfinished")
        if r.info.status in ("RUNNING", "SCHEDULED") and outcome == "finished":
            outcome = "unfinished"
        row = {k: (_num(v) if k in _NUMERIC_PARAMS else v) for k, v in r.data.params.items()}
        row["loss"] = r.data.metrics.get(loss_metric, np.nan)
        row.update({k: v for k, v in r.data.metrics.items() if k.startswith("val_loss_len")})
        row["run_id"] = r.info.run_id
        row["outcome"] = outcome
        row["run_key"] = tags.get("scalelab.run_key", row.get("run_key"))
        if outcome != "finished" and not include_failed:
            excluded[outcome] = excluded.get(outcome, 0) + 1
            continue
        if not (np.isfinite(row["loss"]) if isinstance(row["loss"], float) else False):
            excluded[f"no final {loss_metric}"] = excluded.get(f"no final {loss_metric}", 0) + 1
            continue
        rows.append(row)
    notes = [f"{len(runs)} point runs in experiment {experiment!r}; {len(rows)} used"]
    if not rows:
        raise InputError(f"experiment {experiment!r} has no finished point runs with a {loss_metric} "
                         f"(runs seen: {len(runs)}, excluded: {excluded or 'none'})")
    df = pd.DataFrame(rows)
    for col in ("n_params", "tokens", "flops"):
        if col not in df.columns:
            df[col] = np.nan
    if df["flops"].isna().any():
        df["flops"] = df["flops"].fillna(6.0 * df["n_params"] * df["tokens"])
    bad = ~np.isfinite(df[["n_params", "tokens", "flops", "loss"]].to_numpy(float)).all(axis=1) | \
        (df[["n_params", "tokens", "flops", "loss"]].to_numpy(float) <= 0).any(axis=1)
    if bad.any():
        excluded["missing/invalid n_params, tokens or loss"] = int(bad.sum())
        df = df[~bad].reset_index(drop=True)
    te = None
    if "true_entropy" in df.columns:
        v = pd.to_numeric(df["true_entropy"], errors="coerce").dropna().unique()
        if v.size == 1:
            te = float(v[0])
    cols = list(CANONICAL) + [c for c in df.columns if c not in CANONICAL]
    return Points(df[cols], source=f"mlflow:{experiment}", excluded=excluded, notes=notes,
                  true_entropy=te)


def load_curves(experiment: str, tracking_uri: str | None = None, *, metric: str = "val_loss",
                run_ids=None, include_failed: bool = False) -> pd.DataFrame:
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
            for m in store.get_metric_history_bulk(ids[i:i + 100], metric, max_results=10**8):
                recs.append((m.run_id, m.step, m.value))
    else:
        with ThreadPoolExecutor(8) as ex:
            for rid, hist in zip(ids, ex.map(lambda r: client.get_metric_history(r, metric), ids)):
                recs.extend((rid, m.step, m.value) for m in hist)
    cur = pd.DataFrame(recs, columns=["run_id", "tokens", "loss"])
    meta = df[["run_id", "n_params", "tokens", "flops"]].rename(
        columns={"tokens": "run_tokens", "flops": "run_flops"})
    cur = cur.merge(meta, on="run_id", how="inner")
    cur = cur[cur["tokens"] > 0]
    cur["flops"] = cur["run_flops"] / cur["run_tokens"] * cur["tokens"]
    cur = cur.drop_duplicates(["run_id", "tokens"], keep="last")
    return cur[["run_id", "n_params", "tokens", "flops", "loss"]].sort_values(
        ["run_id", "tokens"]).reset_index(drop=True)
