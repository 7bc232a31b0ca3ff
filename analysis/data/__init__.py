"""Loading scaling-law points: from CSV/Parquet with column mapping, or from an MLflow study.

Everything downstream works on `Points` (points.py): a DataFrame with canonical columns
`n_params` (N, total parameters), `tokens` (D), `flops` (C) and `loss` (nats/token), plus
whatever else the source carried (every logged param for MLflow), and the bookkeeping the
report needs: what was excluded and why. tables.py reads files and DataFrames, store.py a
scalelab study in MLflow.

Bad input raises `InputError` (a ValueError naming the column/option and the fix); the CLI
turns it into exit status 2.
"""

from .points import CANONICAL, NUMERIC_PARAMS, InputError, Points
from .store import (
    _client,
    _experiment_id,
    _point_runs,
    _sql_point_runs,
    load_curves,
    load_mlflow,
    search_all_runs,
)
from .tables import find_column, from_frame, load_csv, sniff_delimiter

__all__ = [
    "CANONICAL",
    "NUMERIC_PARAMS",
    "InputError",
    "Points",
    "_client",
    "_experiment_id",
    "_point_runs",
    "_sql_point_runs",
    "find_column",
    "from_frame",
    "load_csv",
    "load_curves",
    "load_mlflow",
    "search_all_runs",
    "sniff_delimiter",
]
