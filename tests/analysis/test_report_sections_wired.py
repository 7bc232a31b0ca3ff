"""The report runs the sections other modules contribute (architecture comparison, law-form
selection, the planner's interval-vs-FLOPs chart): a study on several architectures gets them."""

from __future__ import annotations

from analysis.data import Points
from analysis.report import write_report
from tests.analysis.test_compare import LAWS, synthetic


def test_a_multi_architecture_report_has_the_comparison_forms_and_planner_sections(tmp_path):
    frame = synthetic(LAWS)
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    paths = write_report(
        Points(frame, source="synthetic"), tmp_path, n_bootstrap=10, grid="coarse", budgets=[1e19, 1e21]
    )
    md = paths.markdown.read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert titles[0].startswith("Answer")  # the answer still leads
    for title in (
        "Architecture comparison",
        "Law form selection",
        "Uncertainty of the compute-optimal answer vs compute spent",
    ):
        assert title in titles, titles
    arch = md.split("## Architecture comparison", 1)[1]
    assert "Effective compute multiplier" in arch and "rope-swiglu-pre-clm" in arch
    assert "This section failed" not in md


def test_a_figure_that_cannot_be_drawn_is_named_not_fatal(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.report.doc import write_documents

    fig, ax = plt.subplots()
    ax.scatter([1e3], [np.inf])  # only non-finite data: empty limits around 0
    ax.set_xlim(-1, 1)
    ax.set_xscale("log")  # ... on a log axis: matplotlib cannot place ticks
    ok, _ = plt.subplots()
    html_path, md_path, figs = write_documents(
        tmp_path, "t", [{"title": "S", "markdown": "text", "figures": {"bad.png": fig, "ok.png": ok}}]
    )
    md = md_path.read_text()
    assert "Figure bad.png could not be drawn" in md and "text" in md
    assert set(figs) == {"ok"} and (tmp_path / "ok.png").exists() and not (tmp_path / "bad.png").exists()
