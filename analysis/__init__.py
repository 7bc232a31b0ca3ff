"""scalelab analysis: scaling-law fits, uncertainty, validation and the study report.

Never imports ray, torch, trainer or orchestrator.
"""

from .bootstrap import BootstrapResult, bootstrap_chinchilla, bootstrap_fit
from .chinchilla import ChinchillaFit, check_convergence, compute_optimal, huber_objective, predict_loss
from .compare import architecture_section, compare_architectures
from .constrained import DataConstrainedFit, data_constrained_loss
from .data import InputError, Points, load_csv, load_curves, load_mlflow
from .forms import FormFit, form_selection_section, select_form
from .groups import select_setting, setting_labels, split_by
from .isoflop import EnvelopeFit, IsoFLOPFit, envelope_fit, isoflop_fit
from .kaplan import PowerLawFit, fit_compute_frontier, fit_kaplan_d, fit_kaplan_n
from .moe import ClarkFit, KrajewskiFit, effective_dense_params, fit_clark, fit_krajewski, fit_moe_per_config
from .result import FitResult, result_at
from .validate import entropy_check, extrapolation_test, leave_one_out, residuals_by_decile


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
    raise AttributeError(name)


__all__ = [
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
