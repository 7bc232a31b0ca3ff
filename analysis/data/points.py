"""Points: the fit-ready table every law reads, and the error type for bad input.

`Points.frame` has the canonical columns `n_params` (N, total parameters), `tokens` (D),
`flops` (C) and `loss` (nats/token), plus whatever else the source carried; `excluded` and
`notes` say what was left out before fitting and why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

CANONICAL = ("n_params", "tokens", "flops", "loss")

# params parsed as numbers when read from MLflow (everything else stays a string)
NUMERIC_PARAMS = (
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
    loss_unit: str = "nats/token"  # bits/byte when the loss is val_bpb (METRIC_UNITS)

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

    def collapse_duplicates(self) -> Points:
        """Identical rows (same N, D, C and loss) are one run listed twice: kept once, counted
        in `excluded`. Repeated (N, D) with different losses are replicates (e.g. seeds): kept,
        each its own run, and said in `notes`."""
        f = self.frame
        dup = f.duplicated(subset=list(CANONICAL), keep="first").to_numpy()
        pts = self
        if dup.any():
            ex = dict(self.excluded)
            ex["duplicate row (identical N, D, C, loss)"] = int(dup.sum())
            pts = dataclasses.replace(
                self,
                frame=f[~dup].reset_index(drop=True),
                excluded=ex,
                notes=self.notes
                + [f"{int(dup.sum())} identical row(s) collapsed: a run listed twice counts once"],
            )
        reps = pts.frame.groupby(["n_params", "tokens"]).size()
        reps = reps[reps > 1]
        if len(reps):
            pts = dataclasses.replace(
                pts,
                notes=pts.notes
                + [
                    f"{len(reps)} (N, D) pair(s) have replicate runs with different losses "
                    f"({int(reps.sum())} runs, e.g. seeds): each is kept as its own run"
                ],
            )
        return pts

    def subset(self, mask) -> Points:
        return dataclasses.replace(self, frame=self.frame[np.asarray(mask)].reset_index(drop=True))
