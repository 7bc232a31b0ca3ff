"""The MLflow contract: the names of the tags, params and metrics scalelab writes and reads.

One place for the layout docs/CONTRACTS.md describes ("MLflow layout"): the orchestrator writes
it, the trainer adds its own tags, analysis and users' scripts read it. Standard library only,
so any package may import it (`import trainer` loads neither torch nor MLflow).
"""

from __future__ import annotations

PREFIX = "scalelab."

# ---------------------------------------------------------------- tags of every scalelab run
ROLE = "scalelab.role"  # parent | point | trunk
STUDY = "scalelab.study"  # also an experiment tag
RUN_KEY = "scalelab.run_key"
OUTCOME = "scalelab.outcome"  # a RunState value: finished | diverged | failed | killed
FINGERPRINT = "scalelab.fingerprint"  # experiment tag: the study's recipe hash

# values of ROLE
ROLE_PARENT, ROLE_POINT, ROLE_TRUNK = "parent", "point", "trunk"

# ---------------------------------------------------------------- point runs
LABEL = "scalelab.label"  # e.g. L2-d64-E8k2
EXPERTS = "scalelab.experts"
ERROR = "scalelab.error"  # the last failure's traceback (removed once the run succeeds)
ATTEMPT = "scalelab.attempt"
NODE_ID = "scalelab.node_id"
REUSED_FROM = "scalelab.reused_from"  # source run id of a point copied from another study
REUSED_FROM_STUDY = "scalelab.reused_from_study"
RELOGGED_FROM_CHECKPOINT = "scalelab.relogged_from_checkpoint"
LEGACY_RUN_KEY = "scalelab.legacy_run_key"  # the key an older store gave the run
ORIGIN = "scalelab.origin"  # "adaptive" for points added by `run --adaptive`
ORIGIN_ADAPTIVE = "adaptive"
ORIGIN_VERIFY = "verify"  # points `scalelab verify` trained to test the answer (never fitted)
VERIFY_BUDGET = "scalelab.verify_budget"  # the IsoFLOP budget C a verify point tests
VERIFY_PLAN = "scalelab.verify."  # parent-run tag prefix: the verify plan per budget (JSON)
ROUND = "scalelab.round"  # the adaptive round (1-based) that added the point
# written by the trainer
DEVICE = "scalelab.device"  # e.g. cpu:1threads, cuda:NVIDIA H100 80GB HBM3
RESUMED_FROM_TOKENS = "scalelab.resumed_from_tokens"
CHECKPOINT_RECOVERY = "scalelab.checkpoint_recovery"

# ---------------------------------------------------------------- the parent run
ADAPTIVE_ROUND_PREFIX = "scalelab.adaptive.round."  # + n: that round's explicit runs as JSON
RUNS_IN_STATE_PREFIX = "scalelab.runs_"  # + state: how many runs ended in it


def adaptive_round_tag(n: int) -> str:
    return f"{ADAPTIVE_ROUND_PREFIX}{n}"


def runs_in_state_tag(state: str) -> str:
    return f"{RUNS_IN_STATE_PREFIX}{state}"


# ---------------------------------------------------------------- MLflow's own tags
PARENT_RUN_ID = "mlflow.parentRunId"
NOTE = "mlflow.note.content"

# ---------------------------------------------------------------- params and metrics
PARAM_RUN_KEY = "run_key"
# The point's accounting, also logged as single-step metrics (step 0): params are strings,
# metrics sort, filter (`metrics.n_params > 1e5`) and serve as chart axes in the MLflow UI.
POINT_METRICS = ("n_params", "n_params_active", "tokens", "flops")
VAL_LOSS = "val_loss"  # nats/token on held-out data; its last value is the run's loss
TRAIN_LOSS = "train_loss"


def tag_filter(tag: str, value: str, op: str = "=") -> str:
    """An MLflow search filter on one tag, e.g. tags.`scalelab.role` = 'point'."""
    return f"tags.`{tag}` {op} '{value}'"


POINT_FILTER = tag_filter(ROLE, ROLE_POINT)
PARENT_FILTER = tag_filter(ROLE, ROLE_PARENT)
CHILD_FILTER = tag_filter(ROLE, ROLE_PARENT, "!=")
