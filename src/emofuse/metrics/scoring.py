"""One scoring path for validation (the training engine's epoch metrics) and evaluation (test / ``evaluate``).

:func:`score_classes` and :func:`score_values` compute the full metrics of gathered predictions;
:func:`scalar_summary` picks the scalar values a logger or a checkpoint monitor reads (``val/ua``, ``val/ccc``, ...)
from the same result, so a validation score and a test score of the same predictions can never disagree.
Callers drop unlabelled rows first (their ignore label); rows without a finite target are dropped here.

Example:
    >>> import numpy as np
    >>> m = score_classes([0, 1, 1, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]), ["a", "b"])
    >>> m["wa"], scalar_summary(m)["ua"]
    (0.75, 0.75)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emofuse.metrics.functional import classification_metrics, mult_f1, regression_metrics

__all__ = ["MIN_REGRESSION_ROWS", "scalar_summary", "score_classes", "score_values"]

#: Fewest rows with a target for regression metrics (PCC and CCC are undefined below two).
MIN_REGRESSION_ROWS = 2
_CLASS_SCALARS = ("wa", "ua", "macro_f1", "weighted_f1")
_VALUE_SCALARS = ("pcc", "ccc", "mae", "uar", "war", "weighted_f1")


def score_classes(labels: Sequence[int], probs: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Classification metrics plus CMD's MulT-style F1 of labelled predictions.

    Args:
        labels: Class ids of the labelled rows ``(N,)``.
        probs: Their class probabilities ``(N, C)`` (argmax = the prediction).
        classes: Class names (index = class id).

    Returns:
        :func:`~emofuse.metrics.classification_metrics` with ``mult_f1``; ``{}`` without rows.
    """
    y_ids = [int(i) for i in labels]
    if not y_ids:
        return {}
    p_ids = np.asarray(probs).argmax(-1).tolist()
    y = [classes[i] for i in y_ids]
    p = [classes[i] for i in p_ids]
    metrics = classification_metrics(y, p, labels=list(classes))
    metrics["mult_f1"] = mult_f1(y, p, labels=list(classes))
    return metrics


def score_values(
    targets: Any, preds: Any, threshold: float = 0.0, rescale_to: tuple[float, float] | None = None
) -> list[dict[str, Any]]:
    """Regression metrics of each target column (PCC, CCC, MAE, UAR / WAR of the binarised scores).

    Args:
        targets: ``(N, K)`` (NaN = no target for that row).
        preds: ``(N, K)`` predictions.
        threshold: Binarisation threshold.
        rescale_to: Range the predictions are rescaled to before binarising.

    Returns:
        One dict per column; ``{}`` for a column with fewer than :data:`MIN_REGRESSION_ROWS` targets.
    """
    t, p = np.asarray(targets, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    t, p = (t[:, None] if t.ndim == 1 else t), (p[:, None] if p.ndim == 1 else p)
    out: list[dict[str, Any]] = []
    for k in range(p.shape[-1]):
        keep = np.isfinite(t[:, k])
        if int(keep.sum()) < MIN_REGRESSION_ROWS:
            out.append({})
            continue
        out.append(regression_metrics(t[keep, k], p[keep, k], threshold, rescale_to))
    return out


def scalar_summary(metrics: dict[str, Any] | list[dict[str, Any]]) -> dict[str, float]:
    """The scalar values to log and monitor.

    Classification: WA, UA, macro / weighted F1 and ``mult_f1`` (its macro); regression: the mean of each scalar
    over the scored target columns.
    """
    if isinstance(metrics, dict):
        if not metrics:
            return {}
        out = {k: float(metrics[k]) for k in _CLASS_SCALARS if k in metrics}
        if isinstance(metrics.get("mult_f1"), dict):
            out["mult_f1"] = float(metrics["mult_f1"]["macro"])
        return out
    scored = [m for m in metrics if m]
    if not scored:
        return {}
    return {k: sum(float(m[k]) for m in scored) / len(scored) for k in _VALUE_SCALARS}
