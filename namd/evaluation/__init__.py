"""Table 1: diagnosis metrics per seed, significance against NAMD, image quality, and the table itself.

image_metrics (torch, lpips, pytorch-fid) is not imported here, so the diagnosis metrics and
significance tests load without the deep-learning stack.
"""

from namd.evaluation.metrics import (
    EvaluationInputError,
    check_complete,
    diagnosis_metrics,
    summarise,
    validate_probs,
)
from namd.evaluation.significance import (
    DeLongResult,
    bootstrap_auroc_ci,
    compare_rows,
    delong_test,
    fast_delong,
    holm_adjust,
)
from namd.evaluation.table import RowResult, build_table1, row_result, to_csv, to_latex

__all__ = [
    "DeLongResult",
    "EvaluationInputError",
    "RowResult",
    "bootstrap_auroc_ci",
    "build_table1",
    "check_complete",
    "compare_rows",
    "delong_test",
    "diagnosis_metrics",
    "fast_delong",
    "holm_adjust",
    "row_result",
    "summarise",
    "to_csv",
    "to_latex",
    "validate_probs",
]
