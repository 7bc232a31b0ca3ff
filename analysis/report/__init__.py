"""The study report: report.html (plots embedded) + summary.md, led by the answer.

Fit first, render after: `build_context` (context.py) fits the answer and every other law into
a ReportContext; each function of SECTIONS (sections.py, sections_more.py, or registered by
another module with `register_section`) reads it and returns a plain dict `{"title",
"markdown", "figures"}`; doc.py writes both documents and the PNGs; headline.json carries the
parent run's metrics and params (analysis.answer.headline). log_report_to_mlflow logs the files
on the study's parent run and the headline numbers as its metrics and params.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..answer import headline
from ..data import Points
from . import sections as S
from . import sections_more as M
from .compressor import compressor_section
from .context import ReportContext, build_context
from .doc import esc, section, write_documents
from .mlflow_log import log_headline, log_report_to_mlflow

Section = Callable[[ReportContext], "dict | None"]

__all__ = [
    "SECTIONS",
    "ReportContext",
    "ReportPaths",
    "build_context",
    "log_headline",
    "log_report_to_mlflow",
    "register_section",
    "write_report",
]


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    results: dict = field(default_factory=dict)


SECTIONS: list[Section] = [
    S.answer_section,
    M.tested_section,
    S.data_section,
    S.approach3_section,
    S.forms_section,
    S.landscape_section,
    S.kaplan_section,
    S.approach2_section,
    S.approach1_section,
    S.compute_optimal_section,
    M.validation_section,
    M.settings_section,
    M.moe_section,
    M.constrained_section,
    compressor_section,
    M.architecture_section,
    M.families_section,
    M.planner_section,
]


def register_section(fn: Section) -> Section:
    """Append a section function (e.g. analysis.compare's) to every report; usable as a decorator."""
    if fn not in SECTIONS:
        SECTIONS.append(fn)
    return fn


def _run(fn: Section, ctx: ReportContext) -> dict | None:
    try:
        return fn(ctx)
    except Exception as exc:  # noqa: BLE001 - a broken section is reported in the report, not fatal to it
        name = getattr(fn, "__name__", "section")
        return section(name, [esc(f"This section failed: {type(exc).__name__}: {exc}")])


def write_report(
    points: Points,
    out_dir,
    *,
    true_entropy=None,
    budgets=None,
    curves=None,
    n_bootstrap: int = 200,
    seed: int = 0,
    title: str | None = None,
    grid="full",
    sections: list[Section] | None = None,
    study_file: str | None = None,
) -> ReportPaths:
    """Fit everything the data supports and write report.html + summary.md (+ PNGs,
    headline.json) to out_dir. title: the study's name (default: the points' source); grid:
    Approach 3 start grid ("full": 4500 starts for the free form, or "coarse"); study_file: the
    study YAML the verdict's next steps name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = build_context(
        points,
        budgets=budgets,
        curves=curves,
        true_entropy=true_entropy,
        n_bootstrap=n_bootstrap,
        seed=seed,
        grid="coarse" if grid == "coarse" else "full",
        study_file=study_file,
    )
    from . import plots

    plots.UNIT[0] = points.loss_unit  # axis labels in the loss's unit (bits/byte: val_bpb)
    try:
        secs = [s for s in (_run(fn, ctx) for fn in (sections or SECTIONS)) if s]
    finally:
        plots.UNIT[0] = "nats/token"
    name = title or points.source.removeprefix("mlflow:") or "study"
    hp, mp, figs = write_documents(out, name, secs)
    head = headline(ctx.answer)
    (out / "headline.json").write_text(json.dumps(head, indent=1), encoding="utf-8")
    ctx.results["headline"] = head
    ctx.results["verdict_lines"] = [f"verdict at {v.line()}" for v in ctx.answer.verdicts]
    return ReportPaths(hp, mp, figs, ctx.results)
