"""scalelab analysis: scaling-law fits, uncertainty, validation, the answer and the study report.

Layout (fit first, render after):
    data/         Points from CSV/Parquet or an MLflow study
    laws/         the estimators: Approach 3 and its forms, Kaplan, IsoFLOP/envelope, MoE,
                  data-constrained; identifiability and convergence checks
    selection.py  choosing the Approach 3 form by cross-validation over compute
    answer.py     the answer (computed once, read by everything) and its headline
    verdict.py    good / rough / poor, why, and what would improve it
    verification.py  judging `scalelab verify` runs against the answer
    fitting.py    the law table behind `scalelab fit --law`
    report/       everything that renders: sections, figures, documents, fit's text output
    cli.py        `scalelab fit` / `scalelab report`

Never imports ray, torch or orchestrator; from trainer only the MLflow contract
(trainer/mlflow_contract.py: names, standard library only). Modules that moved into laws/ and report/
stay importable under their old names (analysis.chinchilla, analysis.report_sections, ...).
"""

import importlib
import importlib.abc
import importlib.util
import sys

from .answer import Answer, compute_answer, prepare_points
from .bootstrap import BootstrapResult, bootstrap_chinchilla, bootstrap_fit
from .compare import compare_architectures
from .data import InputError, Points, load_csv, load_curves, load_mlflow
from .groups import select_setting, setting_labels, split_by
from .laws.chinchilla import ChinchillaFit, check_convergence, compute_optimal, huber_objective, predict_loss
from .laws.constrained import DataConstrainedFit, data_constrained_loss
from .laws.forms import FormFit
from .laws.isoflop import EnvelopeFit, IsoFLOPFit, envelope_fit, isoflop_fit
from .laws.kaplan import PowerLawFit, fit_compute_frontier, fit_kaplan_d, fit_kaplan_n
from .laws.moe import (
    ClarkFit,
    KrajewskiFit,
    effective_dense_params,
    fit_clark,
    fit_krajewski,
    fit_moe_per_config,
)
from .result import FitResult, result_at
from .selection import select_form
from .validate import entropy_check, extrapolation_test, leave_one_out, residuals_by_decile

# old module path -> where it lives now
MOVED = {
    "chinchilla": "laws.chinchilla",
    "forms": "laws.forms",
    "kaplan": "laws.kaplan",
    "isoflop": "laws.isoflop",
    "moe": "laws.moe",
    "constrained": "laws.constrained",
    "report_doc": "report.doc",
    "report_plots": "report.plots",
    "report_sections": "report.sections",
    "compare_report": "report.compare",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import analysis.chinchilla` gives the module now at analysis.laws.chinchilla (the same
    object, so monkeypatching either name patches both)."""

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, short = fullname.rpartition(".")
        if pkg == __name__ and short in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}")
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # importlib set the alias' spec on the real module: undo


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name):
    # the report pulls in matplotlib: import it only when asked for
    if name in (
        "write_report",
        "log_report_to_mlflow",
        "ReportPaths",
        "ReportContext",
        "register_section",
        "SECTIONS",
    ):
        from . import report

        return getattr(report, name)
    if name in ("architecture_section", "form_selection_section"):
        from .report import compare, sections

        return (
            compare.architecture_section
            if name == "architecture_section"
            else sections.form_selection_section
        )
    raise AttributeError(name)


__all__ = [
    "Answer",
    "compute_answer",
    "prepare_points",
    "architecture_section",
    "compare_architectures",
    "ClarkFit",
    "DataConstrainedFit",
    "EnvelopeFit",
    "IsoFLOPFit",
    "KrajewskiFit",
    "data_constrained_loss",
    "effective_dense_params",
    "envelope_fit",
    "fit_clark",
    "fit_krajewski",
    "fit_moe_per_config",
    "isoflop_fit",
    "write_report",
    "log_report_to_mlflow",
    "ReportPaths",
    "ReportContext",
    "register_section",
    "SECTIONS",
    "FitResult",
    "result_at",
    "select_setting",
    "setting_labels",
    "split_by",
    "BootstrapResult",
    "ChinchillaFit",
    "InputError",
    "Points",
    "PowerLawFit",
    "bootstrap_chinchilla",
    "bootstrap_fit",
    "check_convergence",
    "compute_optimal",
    "entropy_check",
    "extrapolation_test",
    "fit_compute_frontier",
    "fit_kaplan_d",
    "fit_kaplan_n",
    "huber_objective",
    "leave_one_out",
    "load_csv",
    "load_curves",
    "load_mlflow",
    "predict_loss",
    "residuals_by_decile",
    "FormFit",
    "form_selection_section",
    "select_form",
]
