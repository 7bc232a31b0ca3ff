"""Issue 12.4 / 12.2 / 10.2: the report leads with the answer, sections are small functions
returning dicts, unidentifiable laws take one line, and the parent run carries the headline."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.cli import run_report
from analysis.data import Points, load_mlflow
from analysis.report import SECTIONS, register_section, write_report
from analysis.report.doc import tick_label
from analysis.report.sections import answer_section

from .test_data_cli import _make_store


def _sections(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def test_report_leads_with_the_answer_and_logs_the_headline(tmp_path, capsys):
    uri, parent_id = _make_store(tmp_path)  # a real SQLite store: 14 finished dense runs
    out = tmp_path / "rep"
    assert run_report("study1", uri, out, budgets=[1e17, 1e19], n_bootstrap=20, grid="coarse") == 0
    printed = capsys.readouterr().out  # the verdict, on the terminal
    assert "verdict at 1e17 FLOPs" in printed and "verdict at 1e19 FLOPs" in printed
    md = (out / "summary.md").read_text()
    assert _sections(md)[0] == "Answer: compute-optimal allocation"
    answer = md.split("\n## ")[1]
    assert "![" not in answer and md.index("## Answer") < md.index("![")
    # each budget with its decades beyond the largest finished run, and 95% intervals
    cmax = load_mlflow("study1", uri).frame["flops"].max()
    for C in (1e17, 1e19):
        assert f"| {C:.0e} | {math.log10(C / cmax):+.2f} |".replace("e+", "e") in answer
    assert "N_opt [95% CI]" in answer and "Verdict:" in answer and "CV error" in answer
    assert "| Approach 3 |" in answer
    # one voice: the form the answer names is the one the selection section chose
    form = md.split("**Chosen form: ")[1].split(".**")[0]
    assert f"Approach 3, {form} form" in answer and f"({form} form)" in md
    assert "\\~ C^a" in md and " ~C" not in md.replace("\\~", "")  # no strikethrough
    assert "training_curves.png" in md and "landscape.png" in md and "fitted_vs_observed.png" in md
    page = (out / "report.html").read_text()
    assert page.index("<h2>Answer") < page.index("<img")
    run = MlflowClient(tracking_uri=uri).get_run(parent_id)
    m, p = run.data.metrics, run.data.params
    assert m["fit.alpha"] == pytest.approx(0.35, abs=0.01)
    assert m["opt.1e19.n_params.ci95_lo"] <= m["opt.1e19.n_params"] <= m["opt.1e19.n_params.ci95_hi"]
    assert m["opt.1e19.decades_beyond"] == pytest.approx(math.log10(1e19 / cmax))
    assert {"fit.E", "fit.beta", "fit.a", "fit.b", "opt.1e17.tokens", "opt.1e17.loss"} <= set(m)
    assert p["fit.setting"] == "dense" and p["fit.budgets"] == "1e17,1e19" and p["fit.form"] == form
    assert p["fit.approach"] == "Approach 3" and float(p["fit.alpha"]) == pytest.approx(
        m["fit.alpha"], rel=1e-3
    )
    # a rerun keeps working although MLflow params are immutable
    assert run_report("study1", uri, out, budgets=[1e17, 1e19], n_bootstrap=0, grid="coarse") == 0


def test_unidentifiable_laws_take_one_line_and_draw_nothing(tmp_path):
    D = np.logspace(9, 11, 12)
    df = pd.DataFrame({"n_params": 1e8, "tokens": D, "flops": 6e8 * D, "loss": 2 + 1e3 / D**0.3})
    paths = write_report(Points(df, source="one size"), tmp_path / "r", n_bootstrap=0, grid="coarse")
    md = paths.markdown.read_text()
    assert _sections(md)[0] == "Answer: compute-optimal allocation"
    assert "No approach is identified" in md
    a3 = md.split("## Chinchilla Approach 3")[1].split("\n## ")[0]
    assert "single model size" in a3 and len(a3.strip().splitlines()) == 3  # title tail, blank, line
    # only L(D) is identified (12 token counts): it is the one figure drawn
    assert {f.name for f in (tmp_path / "r").glob("*.png")} == {"kaplan.png"}
    assert paths.html.read_text().count("<img") == 1


def test_sections_are_dicts_and_others_can_be_added(tmp_path):
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(6, 8, 4), 4)
    D = np.tile(np.logspace(8, 10, 4), 4)
    df = pd.DataFrame(
        {
            "n_params": N,
            "tokens": D,
            "flops": 6 * N * D,
            "loss": (1.8 + 400 / N**0.34 + 1500 / D**0.3) * np.exp(rng.normal(0, 1e-3, 16)),
        }
    )
    fig, ax = plt.subplots()
    ax.loglog([1e10, 3e12], [2, 3])

    def compare(ctx):
        return {
            "title": "Compare",
            "markdown": f"| points |\n|---|\n| {len(ctx.base)} |",
            "figures": {"cmp.png": fig},
        }

    paths = write_report(
        Points(df),
        tmp_path / "r",
        n_bootstrap=0,
        grid="coarse",
        sections=[answer_section, compare, lambda ctx: None],
    )
    md = paths.markdown.read_text()
    assert _sections(md) == ["Answer: compute-optimal allocation", "Compare"]
    assert "| 16 |" in md and "![cmp](cmp.png)" in md
    assert "<td>16</td>" in paths.html.read_text() and "cmp" in paths.figures
    n = len(SECTIONS)
    try:
        assert register_section(compare) is compare and SECTIONS[-1] is compare
        register_section(compare)
        assert len(SECTIONS) == n + 1
    finally:
        SECTIONS.remove(compare)


@pytest.mark.parametrize(
    "value,text", [(1e10, "1e10"), (3e12, "3e12"), (3.6, "3.6"), (250.0, "250"), (0.5, "0.5"), (2e-5, "2e-5")]
)
def test_log_ticks_read_as_numbers(value, text):
    assert tick_label(value) == text
