"""Stateless evaluation metrics: classification, CMD's MulT-style F1, regression, aggregation.

Every function takes plain Python sequences, NumPy arrays or torch tensors (moved to CPU and
converted with :func:`numpy.asarray`), returns plain Python ``float``/``int``/``list``/``dict``
values (JSON-serialisable) and keeps no state. Classification metrics are computed from one
confusion matrix (:func:`confusion_matrix` is the "update", :func:`metrics_from_confusion` the
"compute"), so a stateful metric can sum confusion matrices over batches and reuse the same code.

Naming (DESIGN.md §6):

* **WA** (weighted accuracy) = overall accuracy; **UA** (unweighted accuracy) = mean per-class
  recall (balanced accuracy). This is the usual IEMOCAP convention. Rajan's thesis swaps the two
  names (its "WA" is our UA, its "UWA" our WA); compare its numbers with that mapping.
* **UAR / WAR** of binarised regression (thesis Ch.3) = our UA / WA on the two classes.
* **MulT-style per-class F1** (CMD, Kim & Kang 2022, spec §5.1): for each class ``k`` the binary task
  ``y == k`` vs ``y_hat == k`` scored with ``f1_score(..., average="weighted")``, i.e. the
  support-weighted mean of the positive- and negative-class F1. It is *not* the positive-class F1.

Example:
    >>> r = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    >>> r["wa"], r["ua"]
    (0.75, 0.75)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from emofuse.metrics.aggregate import aggregate, format_mean_std

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
    "weighted_f1_from_per_class",
]


# --------------------------------------------------------------------------------------------------
# input handling


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a list / array / torch tensor to a NumPy array (no copy when not needed)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert to an array ({e})") from None
    return arr


def _label_array(x: Any, name: str) -> np.ndarray:
    """A 1-D array of class labels (strings, integers or integral floats)."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        hint = " (take the argmax of the scores first)" if arr.ndim == 2 else ""
        raise ValueError(f"{name} must be 1-D class labels, got shape {tuple(arr.shape)}{hint}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} holds non-integer floats; pass class labels, not scores")
        arr = arr.astype(np.int64)
    return arr


def _check_lengths(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"length mismatch: {name_a} has {a.shape[0]} elements, {name_b} has {b.shape[0]}")


def _label_kind(values: Sequence[Hashable]) -> str:
    kinds = {"str" if isinstance(v, str) else "bool" if isinstance(v, bool) else "int" for v in values}
    if kinds - {"str", "int", "bool"} or len(kinds) > 1:
        raise ValueError(f"labels must all be strings or all integers, got a mix ({sorted(kinds)})")
    return kinds.pop()


def _label_list(labels: Any) -> list[Hashable]:
    """``labels`` as a list of Python scalars (NumPy / torch scalars unwrapped)."""
    if hasattr(labels, "detach"):
        labels = _to_numpy(labels, "labels")
    return [v.item() if isinstance(v, np.generic) else v for v in labels]


def _encode(
    y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None
) -> tuple[np.ndarray, np.ndarray, list[Hashable]]:
    """Map both label arrays to class indices in ``labels`` order.

    Returns:
        ``(t, p, labels)``: int64 index arrays of shape ``(N,)`` and the label order used.
    """
    t_arr = _label_array(y_true, "y_true")
    p_arr = _label_array(y_pred, "y_pred")
    _check_lengths(t_arr, p_arr, "y_true", "y_pred")
    t_list, p_list = t_arr.tolist(), p_arr.tolist()  # Python scalars: str / int / bool
    if labels is None:
        present = set(t_list) | set(p_list)
        _label_kind(list(present))
        label_list: list[Hashable] = sorted(present)
    else:
        label_list = _label_list(labels)
        if not label_list:
            raise ValueError("labels is empty")
        if len(set(label_list)) != len(label_list):
            raise ValueError(f"labels has duplicates: {label_list}")
    index = {lab: i for i, lab in enumerate(label_list)}
    out = []
    for name, values in (("y_true", t_list), ("y_pred", p_list)):
        unknown = sorted({v for v in values if v not in index}, key=repr)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(f"{name} holds {len(unknown)} label(s) not in labels {label_list}: {shown}")
        out.append(np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values)))
    return out[0], out[1], label_list


def _float_array(x: Any, name: str) -> np.ndarray:
    """A finite 1-D float64 array."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _float_array(y_true, "y_true")
    p = _float_array(y_pred, "y_pred")
    _check_lengths(t, p, "y_true", "y_pred")
    return t, p


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0 where ``den == 0`` (sklearn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------------------------------
# classification


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class, in ``labels`` order.

    Args:
        y_true: True labels, shape ``(N,)`` (strings or integers).
        y_pred: Predicted labels, shape ``(N,)``.
        labels: Class order; ``None`` uses the sorted union of both arrays.

    Returns:
        int64 array of shape ``(C, C)``.
    """
    return _confusion(y_true, y_pred, labels)[0]


def _confusion(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None) -> tuple[np.ndarray, list[Hashable]]:
    t, p, label_list = _encode(y_true, y_pred, labels)
    c = len(label_list)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c), label_list  # (C, C)


def _per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class counts and scores from a ``(C, C)`` confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)  # predicted count per class
    return {
        "tp": tp,
        "support": support,
        "predicted": predicted,
        "recall": _safe_div(tp, support),
        "precision": _safe_div(tp, predicted),
        "f1": _safe_div(2 * tp, support + predicted),  # = 2PR/(P+R); 0 when tp+fp+fn == 0
    }


def metrics_from_confusion(confusion: Any, labels: Sequence[Hashable]) -> dict[str, Any]:
    """All classification metrics of :func:`classification_metrics` from a confusion matrix.

    Args:
        confusion: ``(C, C)`` counts, rows = true, columns = predicted (e.g. summed over batches).
        labels: The ``C`` class labels in row order.

    Returns:
        The dict described in :func:`classification_metrics`.
    """
    cm = _to_numpy(confusion, "confusion")
    label_list = _label_list(labels)
    c = len(label_list)
    if cm.shape != (c, c):
        raise ValueError(f"confusion has shape {tuple(cm.shape)}, expected ({c}, {c}) for {c} labels")
    if np.any(cm < 0):
        raise ValueError("confusion holds negative counts")
    n = int(cm.sum())
    if n == 0:
        raise ValueError("confusion is empty (no samples)")
    s = _per_class(cm)
    present = s["support"] > 0
    return {
        "accuracy": float(np.trace(cm) / n),
        "wa": float(np.trace(cm) / n),
        "ua": float(np.mean(s["recall"][present])),
        "weighted_f1": float(np.sum(s["f1"] * s["support"]) / n),
        "macro_f1": float(np.mean(s["f1"])),
        "per_class_f1": {lab: float(v) for lab, v in zip(label_list, s["f1"], strict=True)},
        "per_class_recall": {lab: float(v) for lab, v in zip(label_list, s["recall"], strict=True)},
        "per_class_precision": {lab: float(v) for lab, v in zip(label_list, s["precision"], strict=True)},
        "confusion": np.asarray(cm, dtype=np.int64).tolist(),
        "labels": label_list,
        "support": {lab: int(v) for lab, v in zip(label_list, s["support"], strict=True)},
    }


def classification_metrics(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Accuracy, WA, UA, weighted / macro F1, per-class F1 and recall, and the confusion matrix.

    Conventions (all match scikit-learn with ``labels=labels`` and ``zero_division=0``):

    * ``wa`` = ``accuracy`` = overall accuracy.
    * ``ua`` = mean per-class recall over the classes of ``labels`` that occur in ``y_true``.
      Classes with zero support are left out of the mean (their recall is undefined), which is
      what :func:`sklearn.metrics.balanced_accuracy_score` does; with every class present it is
      the plain mean of ``per_class_recall``.
    * ``per_class_recall`` / ``per_class_precision`` / ``per_class_f1`` are 0.0 where undefined
      (no support / no predictions / neither).
    * ``weighted_f1`` weights per-class F1 by true support (``average="weighted"``);
      ``macro_f1`` is the plain mean over *all* of ``labels`` (``average="macro"``), so a class
      in ``labels`` that is absent from both arrays counts as F1 = 0.

    Args:
        y_true: True labels, shape ``(N,)``; strings or integers (list, array or tensor).
        y_pred: Predicted labels, shape ``(N,)``, same kind as ``y_true`` (argmax already taken).
        labels: Class order for the per-class values and the confusion matrix. ``None`` uses the
            sorted union of the labels in both arrays.

    Returns:
        Dict with float values ``accuracy``, ``wa``, ``ua``, ``weighted_f1``, ``macro_f1``; dicts
        label → float ``per_class_f1``, ``per_class_recall``, ``per_class_precision``; label → int
        ``support``; ``confusion`` (list of lists, rows = true, columns = predicted, in ``labels``
        order) and ``labels``. Everything is JSON-serialisable.

    Raises:
        ValueError: Empty input; lengths differ (both are named); a label of either array is not in
            ``labels``; labels mix strings and integers; ``y_pred`` is 2-D scores.

    Example:
        >>> y_true = ["neu", "neu", "neu", "hap", "hap", "sad"]
        >>> y_pred = ["neu", "neu", "hap", "hap", "neu", "sad"]
        >>> m = classification_metrics(y_true, y_pred, labels=["neu", "hap", "sad"])
        >>> round(m["wa"], 4), round(m["ua"], 4)  # (3/6, mean of 2/3, 1/2, 1/1)
        (0.6667, 0.7222)
        >>> m["confusion"]
        [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
        >>> m["per_class_f1"]["sad"], m["support"]["neu"]
        (1.0, 3)
    """
    cm, label_list = _confusion(y_true, y_pred, labels)
    return metrics_from_confusion(cm, label_list)


def _mult_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """MulT-style (support-weighted one-vs-rest) F1 per class from a ``(C, C)`` confusion matrix."""
    s = _per_class(cm)
    n = float(cm.sum())
    tp, pos, pred = s["tp"], s["support"], s["predicted"]
    neg = n - pos  # true "not k"
    tn = n - pos - pred + tp  # true "not k" and predicted "not k"
    f1_pos = _safe_div(2 * tp, pos + pred)
    f1_neg = _safe_div(2 * tn, neg + (n - pred))
    return (pos * f1_pos + neg * f1_neg) / n


def mult_f1(y_true: Any, y_pred: Any, labels: Sequence[Hashable]) -> dict[str, Any]:
    """CMD's per-class F1 in the MulT evaluation convention, and its macro average.

    For each class ``k`` this is ``sklearn.metrics.f1_score(y_true == k, y_pred == k,
    average="weighted")``: the F1 of "is k" and of "is not k", weighted by their true supports.
    A model that never predicts ``k``, at prevalence ``p``, scores ``(1 - p) * 2(1 - p) / (2 - p)``.

    Args:
        y_true: True labels, shape ``(N,)``.
        y_pred: Predicted labels, shape ``(N,)``.
        labels: The classes to score (CMD: the four emotions); also the key order.

    Returns:
        ``{"per_class": {label: f1}, "macro": mean of the per-class values}``.

    Example:
        >>> r = mult_f1([0, 0, 0, 1], [0, 0, 0, 0], labels=[0, 1])
        >>> round(r["per_class"][1], 4)  # never predicts 1: 0.75 * 2 * 0.75 / 1.75
        0.6429
    """
    cm, label_list = _confusion(y_true, y_pred, labels)
    per = _mult_f1_from_confusion(cm)
    return {"per_class": {lab: float(v) for lab, v in zip(label_list, per, strict=True)}, "macro": float(np.mean(per))}


def positive_class_f1(y_true: Any, y_pred: Any, labels: Sequence[Hashable]) -> dict[str, Any]:
    """Plain one-vs-rest positive-class F1 per class (CMD's secondary number) and its mean.

    Args:
        y_true: True labels, shape ``(N,)``.
        y_pred: Predicted labels, shape ``(N,)``.
        labels: The classes to score.

    Returns:
        ``{"per_class": {label: f1}, "macro": mean}``; ``macro`` equals the standard macro F1.
    """
    m = classification_metrics(y_true, y_pred, labels)
    return {"per_class": m["per_class_f1"], "macro": m["macro_f1"]}


def weighted_f1_from_per_class(per_class_f1: Mapping[Hashable, float], support: Mapping[Hashable, int]) -> float:
    """Support-weighted mean of per-class F1 values, e.g. to re-check a paper's weighted F1.

    Args:
        per_class_f1: Class → F1 (any scale: 0–1 or percent; the result has the same scale).
        support: Class → number of true samples. Must have exactly the classes of ``per_class_f1``.

    Returns:
        ``sum(f1[k] * support[k]) / sum(support)``.

    Example:
        >>> weighted_f1_from_per_class({"a": 0.5, "b": 1.0}, {"a": 1, "b": 3})
        0.875
    """
    missing = sorted(set(per_class_f1) - set(support), key=repr)
    extra = sorted(set(support) - set(per_class_f1), key=repr)
    if missing or extra:
        raise ValueError(f"classes differ: no support for {missing}, no F1 for {extra}")
    counts = np.array([support[k] for k in per_class_f1], dtype=np.float64)
    if np.any(counts < 0):
        raise ValueError("support holds negative counts")
    if counts.sum() == 0:
        raise ValueError("total support is 0")
    f1 = np.array([per_class_f1[k] for k in per_class_f1], dtype=np.float64)
    return float(np.sum(f1 * counts) / counts.sum())


# --------------------------------------------------------------------------------------------------
# regression


def pcc(y_true: Any, y_pred: Any) -> float:
    """Pearson correlation coefficient.

    ``PCC = cov(y, y_hat) / (std(y) * std(y_hat))`` (the ``ddof`` cancels).

    Args:
        y_true: Targets, shape ``(N,)``, finite.
        y_pred: Predictions, shape ``(N,)``, finite.

    Returns:
        PCC in ``[-1, 1]``. If either input is constant the correlation is undefined: the result is
        ``nan`` and a ``RuntimeWarning`` is issued (as ``scipy.stats.pearsonr`` does), so a collapsed
        model shows up in the numbers instead of stopping an evaluation.

    Example:
        >>> pcc([1, 2, 3], [2, 4, 7])
        0.9933992677987828
    """
    t, p = _pair(y_true, y_pred)
    dt, dp = t - t.mean(), p - p.mean()
    den = math.sqrt(float(np.sum(dt * dt)) * float(np.sum(dp * dp)))
    if den == 0.0:
        warnings.warn("pcc: an input is constant, the correlation is undefined (nan)", RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(np.clip(np.sum(dt * dp) / den, -1.0, 1.0))


def ccc(y_true: Any, y_pred: Any) -> float:
    """Concordance correlation coefficient (Lin 1989), with population (``ddof=0``) moments.

    ``CCC = 2 cov(y, y_hat) / (var(y) + var(y_hat) + (mean(y) - mean(y_hat))**2)``.

    Args:
        y_true: Targets, shape ``(N,)``, finite.
        y_pred: Predictions, shape ``(N,)``, finite.

    Returns:
        CCC in ``[-1, 1]``. A constant prediction of a varying target gives 0.0 (the formula is
        defined). The only undefined case, both inputs constant, gives 1.0 when they are equal
        (the denominator is 0 only then: perfect agreement).

    Example:
        >>> round(ccc([1, 2, 3], [2, 3, 4]), 6)  # 2(2/3) / (2/3 + 2/3 + 1) = 4/7
        0.571429
    """
    t, p = _pair(y_true, y_pred)
    mt, mp = t.mean(), p.mean()
    cov = float(np.mean((t - mt) * (p - mp)))
    den = float(t.var() + p.var() + (mt - mp) ** 2)
    if den == 0.0:
        return 1.0
    return float(2.0 * cov / den)


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error ``mean(|y - y_hat|)``.

    Args:
        y_true: Targets, shape ``(N,)``.
        y_pred: Predictions, shape ``(N,)``.

    Returns:
        The MAE.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def binarized_metrics(y_true_cont: Any, y_pred_cont: Any, threshold: float = 0.0) -> dict[str, Any]:
    """UAR, WAR and weighted F1 of continuous targets and predictions split at ``threshold`` (thesis Ch.3, 5).

    A value is "high" when ``>= threshold`` and "low" otherwise (the thesis: high conflict if the
    score is >= 0). UAR = mean of the per-class recalls of the classes present in the targets
    (our UA); WAR = overall accuracy (our WA). Note that Rajan's thesis uses "WA" for the *balanced*
    accuracy in Ch.4; UAR/WAR here follow its Ch.3 (and the usual) meaning. ``weighted_f1`` is the per-class
    F1 averaged with true-support weights (Ch.5's F̄1 of CMU-MOSI binary sentiment, Tables 5.4 / 5.6).

    Args:
        y_true_cont: Continuous targets, shape ``(N,)``.
        y_pred_cont: Continuous predictions, shape ``(N,)``. Any rescaling (the thesis min-max rescales
            test predictions first) is the caller's job.
        threshold: Decision threshold.

    Returns:
        ``{"uar", "war", "weighted_f1", "threshold", "labels": ["low", "high"], "confusion", "support",
        "per_class_recall"}``.

    Example:
        >>> r = binarized_metrics([-0.5, -0.2, 0.1, 0.7], [-0.1, 0.3, 0.2, 0.0])
        >>> r["war"], r["uar"]
        (0.75, 0.75)
    """
    t, p = _pair(y_true_cont, y_pred_cont)
    labels = ["low", "high"]
    tb = np.where(t >= threshold, "high", "low")
    pb = np.where(p >= threshold, "high", "low")
    m = classification_metrics(tb, pb, labels=labels)
    return {
        "uar": m["ua"],
        "war": m["wa"],
        "weighted_f1": m["weighted_f1"],
        "threshold": float(threshold),
        "labels": labels,
        "confusion": m["confusion"],
        "support": m["support"],
        "per_class_recall": m["per_class_recall"],
    }


def regression_metrics(
    y_true: Any,
    y_pred: Any,
    threshold: float = 0.0,
    rescale_to: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """PCC, CCC, MAE of continuous predictions plus UAR / WAR / weighted F1 of the scores binarised at ``threshold``.

    Args:
        y_true: Targets, shape ``(N,)``.
        y_pred: Predictions, shape ``(N,)``.
        threshold: Binarisation threshold for :func:`binarized_metrics` (the thesis: high conflict if ``>= 0``).
        rescale_to: ``(lo, hi)``: min-max rescale the predictions to this range *before binarising*
            (Rajan thesis Ch.3: to the training labels' range, using the predictions' own min and max,
            a transductive step). PCC is unchanged by it; CCC and MAE are computed on the raw
            predictions. ``None``: no rescaling.

    Returns:
        ``{"pcc", "ccc", "mae", "uar", "war", "weighted_f1", "n", "binarized": binarized_metrics(...)}``.

    Example:
        >>> m = regression_metrics([-0.5, -0.2, 0.1, 0.7], [-0.1, 0.3, 0.2, 0.0])
        >>> round(m["mae"], 3), m["war"], m["uar"]
        (0.425, 0.75, 0.75)
    """
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        raise ValueError("regression_metrics: no predictions")
    b = p
    if rescale_to is not None:
        lo, hi = float(rescale_to[0]), float(rescale_to[1])
        span = float(p.max() - p.min())
        b = np.full_like(p, (lo + hi) / 2) if span == 0.0 else lo + (p - p.min()) * (hi - lo) / span
    binar = binarized_metrics(t, b, threshold)
    return {
        "pcc": pcc(t, p),
        "ccc": ccc(t, p),
        "mae": mae(t, p),
        "uar": binar["uar"],
        "war": binar["war"],
        "weighted_f1": binar["weighted_f1"],
        "n": int(t.size),
        "binarized": binar,
    }
