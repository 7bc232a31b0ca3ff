"""The study's scaling-law view in the MLflow UI, as a saved view (no MLflow fork).

MLflow 3.x keeps named views as the experiment tag `mlflow.sharedViewState.<key>`, whose value
is JSON `{"name", "createdAt", "updatedAt", "state"}` with `state = "deflate;" +
base64(zlib(json))` (mlflow/server/js: `viewStateShareKey`, pako deflate). The state holds the
runs page's search facets (filter, order) and UI state (columns, charts, run visibility); the
page applies it when opened with `?viewStateShareKey=<key>`. Opened that way the point runs are
flat (ordering by a metric un-nests child runs), sorted by val_loss, every run shown.

MLflow's scatter charts have linear axes only (the view's scaleType is ignored), so point runs
also log `log10_<name>` metrics (LOG10_METRICS: log10_n_params, log10_n_params_active,
log10_tokens, log10_flops at creation, log10_val_loss with every val_loss) and the scatters
plot those: a power law is a straight line. Each point run carries the run tag
`mlflow.runColor` (the colour MLflow draws it in): one colour per N (active), by half-octave
of N, so runs of one size share a colour in every chart. MLflow 3.17 has no per-run line style
(its dash styles go to the metrics of one chart), so D is not encoded by line style.

A second view, "Fit results" (FIT_VIEW_KEY), shows the study's parent run, where `scalelab
report` logs the fit (fit.alpha, fit.E, ... and params fit.approach, fit.verdict): opened on
MLflow's compare-experiments page (`compare_url`) it is one table of every study's fit.
"""

from __future__ import annotations

import base64
import json
import math
import time
import zlib
from collections.abc import Mapping

from trainer import mlflow_contract as mc

VIEW_KEY = "scalelab-scaling-law"
VIEW_NAME = "Scaling law"
FIT_VIEW_KEY = "scalelab-fit-results"
FIT_VIEW_NAME = "Fit results"
VIEW_VERSION = 2  # a view scalelab wrote with an older version is rewritten (never a user's own)
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
PARENT_FILTER = mc.PARENT_FILTER
# The fit `scalelab report` logs on the parent run (analysis.answer.headline).
FIT_COLUMNS = (
    ("alpha", "metrics.`fit.alpha`"),
    ("beta", "metrics.`fit.beta`"),
    ("E", "metrics.`fit.E`"),
    ("A", "metrics.`fit.A`"),
    ("B", "metrics.`fit.B`"),
    ("a (N_opt ∝ C^a)", "metrics.`fit.a`"),
    ("b (D_opt ∝ C^b)", "metrics.`fit.b`"),
    ("approach", "params.`fit.approach`"),
    ("verdict", "params.`fit.verdict`"),
    ("points", "params.`fit.n_points`"),
)
SECTION_ID = "scalelab-scaling-law-section"
MAX_RUNS_DRAWN = 1000
LOG10_METRICS = ("n_params", "n_params_active", "tokens", "flops", "val_loss")
RUN_COLOR_TAG = "mlflow.runColor"
# MLflow's own run colours, in hue order: neighbouring half-octaves of N get neighbouring hues,
# so colour reads as size; 12 half-octaves (a factor 64 in N) before a colour repeats.
RUN_COLORS = (
    "#c83243",
    "#de7921",
    "#a6630c",
    "#facb66",
    "#308613",
    "#04867d",
    "#137dae",
    "#0e538b",
    "#434a93",
    "#8a63bf",
    "#b45091",
    "#5f7281",
)


def log10_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """`log10_<name>` of each LOG10_METRICS value that is a positive finite number."""
    out = {}
    for k in LOG10_METRICS:
        v = values.get(k)
        if v is not None and math.isfinite(float(v)) and float(v) > 0:
            out[f"log10_{k}"] = math.log10(float(v))
    return out


def run_color(n_params_active: float) -> str:
    """The colour of a point run of this N (active): one per half-octave of N."""
    return RUN_COLORS[round(2 * math.log2(max(float(n_params_active), 1.0))) % len(RUN_COLORS)]


def _chart_base(uuid: str, chart_type: str) -> dict:
    return {
        "uuid": uuid,
        "type": chart_type,
        "runsCountToCompare": MAX_RUNS_DRAWN,
        "metricSectionId": SECTION_ID,
        "deleted": False,
        "isGenerated": False,
    }


def _scatter(uuid: str, name: str, x: str) -> dict:
    """Final log10 val_loss against log10 of `x`: MLflow's scatter axes are linear."""
    return {
        **_chart_base(uuid, "SCATTER"),
        "displayName": name,
        "xaxis": {"key": f"log10_{x}", "type": "METRIC", "scaleType": "linear"},
        "yaxis": {"key": "log10_val_loss", "type": "METRIC", "scaleType": "linear"},
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
    final = _scatter("scalelab-val-loss-vs-n", "log10 final val_loss vs log10 N (active)", "n_params_active")
    compute = _scatter("scalelab-val-loss-vs-c", "log10 final val_loss vs log10 C (FLOPs)", "flops")
    return {
        # (a columnOrder would hide the columns it does not list, Duration among them)
        **_table_state(POINT_FILTER, COLUMNS),
        "orderByKey": "metrics.`val_loss`",
        "orderByAsc": True,
        "compareRunCharts": [curves, final, compute],
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
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def fit_view_state() -> dict:
    """The runs page state of the fit-results view: the parent run with the fit's columns."""
    return {
        **_table_state(PARENT_FILTER, FIT_COLUMNS),
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "compareRunCharts": [],
        "compareRunSections": [],
    }


def _table_state(search_filter: str, columns) -> dict:
    return {
        "searchFilter": search_filter,
        "selectedColumns": [key for _, key in columns],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        "groupBy": None,
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
    }


def encode_state(state: dict) -> str:
    """MLflow's compressed form: "deflate;" + base64(zlib deflate of the JSON)."""
    raw = zlib.compress(json.dumps(state, separators=(",", ":")).encode())
    return "deflate;" + base64.b64encode(raw).decode()


def decode_state(text: str) -> dict:
    if not text.startswith("deflate;"):
        raise ValueError("not a compressed MLflow view state")
    return json.loads(zlib.decompress(base64.b64decode(text[len("deflate;") :])))


def view_tag(now_ms: int | None = None, key: str = VIEW_KEY) -> tuple[str, str]:
    """(tag key, tag value) of a saved view (VIEW_KEY or FIT_VIEW_KEY)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    name, state = (VIEW_NAME, view_state()) if key == VIEW_KEY else (FIT_VIEW_NAME, fit_view_state())
    envelope = {
        "name": name,
        "createdAt": now_ms,
        "updatedAt": now_ms,
        "state": encode_state(state),
        "scalelabViewVersion": VIEW_VERSION,
    }
    return TAG_PREFIX + key, json.dumps(envelope)


def view_url(base_url: str, experiment_id: str, key: str = VIEW_KEY) -> str:
    """The URL that opens a view in training mode on a server at `base_url`."""
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?"
        f"viewStateShareKey={key}&workflowType=machine_learning"
    )


def compare_url(base_url: str, experiment_ids) -> str:
    """MLflow's compare-experiments runs table with the fit-results view: one row per study."""
    from urllib.parse import quote

    ids = quote(json.dumps(sorted(str(i) for i in experiment_ids), separators=(",", ":")), safe="")
    return (
        f"{base_url.rstrip('/')}/#/compare-experiments/s?experiments={ids}"
        f"&viewStateShareKey={FIT_VIEW_KEY}&workflowType=machine_learning"
    )


def _outdated(value: str | None) -> bool:
    """A view tag to (re)write: absent, or written by an older scalelab."""
    if value is None:
        return True
    try:
        version = json.loads(value).get("scalelabViewVersion", 1)
    except (ValueError, AttributeError):
        return False  # not ours to replace
    return isinstance(version, int) and version < VIEW_VERSION


def ensure_view(c, experiment_id: str) -> None:
    """Write the views (and training mode) on the experiment unless it has them at this
    version; a view scalelab wrote before is upgraded."""
    tags = c.get_experiment(experiment_id).tags
    for view in (VIEW_KEY, FIT_VIEW_KEY):
        key, value = view_tag(key=view)
        if _outdated(tags.get(key)):
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
