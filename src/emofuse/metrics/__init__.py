"""Evaluation metrics: WA/UA, F1 variants, CMD's MulT-style F1, PCC/CCC/MAE (+ binarised UAR/WAR), mean ± std.

The functional API lives in :mod:`emofuse.metrics.functional` and is re-exported here.
"""

from emofuse.metrics.functional import (
    aggregate,
    binarized_metrics,
    ccc,
    classification_metrics,
    confusion_matrix,
    format_mean_std,
    mae,
    metrics_from_confusion,
    mult_f1,
    pcc,
    positive_class_f1,
    regression_metrics,
    weighted_f1_from_per_class,
)

__all__ = [
    "aggregate",
    "binarized_metrics",
    "ccc",
    "classification_metrics",
    "confusion_matrix",
    "format_mean_std",
    "mae",
    "metrics_from_confusion",
    "mult_f1",
    "pcc",
    "positive_class_f1",
    "regression_metrics",
    "weighted_f1_from_per_class",
]
