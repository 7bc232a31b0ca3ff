"""The study's scaling-law view in the MLflow UI, as a saved view (no MLflow fork).

MLflow 3.x keeps named views as the experiment tag `mlflow.sharedViewState.<key>`, whose value
is JSON `{"name", "createdAt", "updatedAt", "state"}` with `state = "deflate;" +
base64(zlib(json))` (mlflow/server/js: `viewStateShareKey`, pako deflate). The state holds the
runs page's search facets (filter, order) and UI state (columns, charts, run visibility); the
page applies it when opened with `?viewStateShareKey=<key>`. Opened that way the point runs are
flat (ordering by a metric un-nests child runs), sorted by val_loss, every run shown.
"""

from __future__ import annotations

import base64
import json
import time
import zlib

from trainer import mlflow_contract as mc

VIEW_KEY = "scalelab-scaling-law"
VIEW_NAME = "Scaling law"
TAG_PREFIX = "mlflow.sharedViewState."
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # opens in "Model training", not GenAI, mode
TRAINING_KIND = "custom_model_development"
# (label, MLflow column key): N (active), N (total), D, C, MoE setting, result
COLUMNS = (
    ("N (active)", "metrics.`n_params_active`"),
    ("N (total)", "metrics.`n_params`"),
    ("D", "metrics.`tokens`"),
    ("C", "metrics.`flops`"),
    ("experts", "params.`experts`"),
    ("top_k", "params.`top_k`"),
    ("val_loss", "metrics.`val_loss`"),
    ("outcome", f"tags.`{mc.OUTCOME}`"),
)
POINT_FILTER = mc.POINT_FILTER
SECTION_ID = "scalelab-scaling-law-section"
MAX_RUNS_DRAWN = 1000


def _chart_base(uuid: str, chart_type: str) -> dict:
    return {
        "uuid": uuid,
        "type": chart_type,
        "runsCountToCompare": MAX_RUNS_DRAWN,
        "metricSectionId": SECTION_ID,
        "deleted": False,
        "isGenerated": False,
    }


def view_state() -> dict:
    """The runs page state of the scaling-law view (search facets + UI state)."""
    curves = {
        **_chart_base("scalelab-val-loss-vs-tokens", "LINE"),
        "displayName": "val_loss vs tokens (step)",
        "metricKey": "val_loss",
        "selectedMetricKeys": ["val_loss"],
        "xAxisKey": "step",
        "useGlobalXaxisKey": False,
        "xAxisScaleType": "log",
        "scaleType": "log",
        "lineSmoothness": 0,
        "useGlobalLineSmoothing": False,
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None},
    }
    final = {
        **_chart_base("scalelab-val-loss-vs-n", "SCATTER"),
        "displayName": "final val_loss vs N (active)",
        "xaxis": {"key": "n_params_active", "type": "METRIC", "scaleType": "log"},
        "yaxis": {"key": "val_loss", "type": "METRIC", "scaleType": "log"},
    }
    return {
        "searchFilter": POINT_FILTER,
        "orderByKey": "metrics.`val_loss`",
        "orderByAsc": True,
        # (a columnOrder would hide the columns it does not list, Duration among them)
        "selectedColumns": [key for _, key in COLUMNS],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [curves, final],
        "compareRunSections": [
            {
                "uuid": SECTION_ID,
                "name": VIEW_NAME,
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        "groupBy": None,
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def encode_state(state: dict) -> str:
    """MLflow's compressed form: "deflate;" + base64(zlib deflate of the JSON)."""
    raw = zlib.compress(json.dumps(state, separators=(",", ":")).encode())
    return "deflate;" + base64.b64encode(raw).decode()


def decode_state(text: str) -> dict:
    if not text.startswith("deflate;"):
        raise ValueError("not a compressed MLflow view state")
    return json.loads(zlib.decompress(base64.b64decode(text[len("deflate;") :])))


def view_tag(now_ms: int | None = None) -> tuple[str, str]:
    """(tag key, tag value) of the saved view."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = json.dumps(
        {"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": encode_state(view_state())}
    )
    return TAG_PREFIX + VIEW_KEY, value


def view_url(base_url: str, experiment_id: str) -> str:
    """The URL that opens the view in training mode on a server at `base_url`."""
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?"
        f"viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
    )


def ensure_view(c, experiment_id: str) -> None:
    """Write the view (and training mode) on the experiment unless it already has them; a view
    the user edited in the UI is kept."""
    tags = c.get_experiment(experiment_id).tags
    key, value = view_tag()
    if key not in tags:
        c.set_experiment_tag(experiment_id, key, value)
    if EXPERIMENT_KIND_TAG not in tags:
        c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def view_hint(tracking_uri: str, experiment_id: str, ui_command: str = "scalelab ui") -> str:
    """One line telling where the view opens: on the MLflow server itself when the store is one,
    else on the server `scalelab ui` starts (port 5000 by default)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"scaling-law view: {view_url(tracking_uri, experiment_id)}"
    return (
        f"scaling-law view: run `{ui_command}`, then open {view_url('http://127.0.0.1:5000', experiment_id)}"
    )
