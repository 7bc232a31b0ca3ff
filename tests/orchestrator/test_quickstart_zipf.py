"""The quickstart on its zipf source scales like text: the full study, fitted (slow: the whole
quickstart, a few minutes on 2 cores). Measured numbers are in the PR notes."""

from __future__ import annotations

from pathlib import Path

from orchestrator import load_study
from trainer import true_entropy

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def test_quickstart_source_is_zipf_with_a_known_entropy():
    cfg = load_study(str(QUICKSTART))
    assert cfg.data.source == "zipf"
    assert 0.3 < true_entropy(cfg.data) < 3.0
