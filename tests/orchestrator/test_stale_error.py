"""A run that finishes after a failed attempt (e.g. one that met a corrupt checkpoint) keeps no
stale `scalelab.error` tag in MLflow."""

from __future__ import annotations

from orchestrator.run.worker import clear_stale_error
from orchestrator.store import tracking


def test_success_clears_a_stale_error_tag(store):
    c = tracking.client(store.tracking_uri)
    exp = c.create_experiment("stale-error")
    run_id = c.create_run(exp).info.run_id
    c.set_tag(run_id, "scalelab.error", "checkpoint ckpt.pt is corrupt")
    c.set_tag(run_id, "scalelab.role", "point")
    clear_stale_error(c, run_id)
    tags = c.get_run(run_id).data.tags
    assert "scalelab.error" not in tags and tags["scalelab.role"] == "point"
    clear_stale_error(c, run_id)  # nothing to clear: no error raised
    assert "scalelab.error" not in c.get_run(run_id).data.tags
