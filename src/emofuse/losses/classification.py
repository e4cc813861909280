"""Classification and regression losses.

:func:`prob_average_ce` is CMD's Stage-2 loss (Kim & Kang 2022, Algorithm 3; spec ``cmd.md`` §3.2):
cross-entropy on the *average of per-modality probabilities* ``ŷ = (ŷ_audio + ŷ_text)/2`` with
``ŷ_m = softmax(F(p_m)/κ)``, not on averaged logits. :func:`prob_average_ce_from_logits` computes the
same loss in log space, which stays finite and keeps its gradient when ``κ`` is small (κ = 0.01
multiplies logits by 100, so float32 softmax saturates to exact 0/1).

:func:`pcc_loss` and :func:`concordance_loss` (``1 − PCC`` / ``1 − CCC``) are for dimensional
(valence/arousal) regression.

Example:
    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    >>> round(float(prob_average_ce(probs, torch.tensor([0, 1]))), 4)  # (ln 2 + ln 4/3) / 2
    0.4904
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IGNORE_INDEX",
    "ProbAverageCELoss",
    "concordance_loss",
    "cross_entropy",
    "pcc_loss",
    "prob_average_ce",
    "prob_average_ce_from_logits",
]

#: Label value ignored by every loss here (same as PyTorch's ``cross_entropy`` default).
IGNORE_INDEX = -100


def prob_average_ce(
    probs: Tensor,
    labels: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-12,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy on already averaged class probabilities (Algorithm 3).

    The paper writes ``L = −1/(n·c) Σ_i Σ_j y_ij log ŷ_ij`` with one-hot ``y``. The ``1/c`` is a
    constant scale, so this returns the **mean over samples** ``−1/n Σ_i log ŷ_{i,y_i}`` (the same
    convention as :func:`torch.nn.functional.cross_entropy`); multiply by ``1/c`` to get the
    paper's number.

    Args:
        probs: Averaged probabilities ``ŷ`` ``(B, C)``; rows sum to 1.
        labels: Class ids ``(B,)``; entries equal to ``ignore_index`` are skipped.
        weight: Optional class weights ``(C,)``; the mean is then weighted as in ``F.nll_loss``.
        eps: ``ŷ`` is clamped to ``[eps, 1]`` before the log, so ``log 0`` cannot occur. The clamp has
            no gradient: prefer :func:`prob_average_ce_from_logits` when logits are available.
        ignore_index: Label value to skip.

    Returns:
        Scalar loss (0 with a gradient path if every label is ignored).
    """
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"prob_average_ce: expected probs (B, C) and labels (B,), got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    log_probs = torch.log(probs.float().clamp(min=eps, max=1.0))
    return _nll(log_probs, labels, weight, ignore_index)


def prob_average_ce_from_logits(
    modality_logits: Sequence[Tensor] | Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """:func:`prob_average_ce` computed stably from per-modality logits.

    ``log ŷ = logsumexp_m log_softmax(l_m / κ) − log M`` equals ``log(mean_m softmax(l_m / κ))``
    exactly, without underflow.

    Args:
        modality_logits: ``M`` tensors ``(B, C)`` (or one ``(M, B, C)`` tensor) of raw logits ``F(p_m)``.
        labels: Class ids ``(B,)``.
        temperature: ``κ`` dividing the logits before the softmax.
        weight: Optional class weights ``(C,)``.
        ignore_index: Label value to skip.

    Returns:
        Scalar loss.
    """
    stacked = modality_logits if isinstance(modality_logits, Tensor) else torch.stack(list(modality_logits))
    if stacked.dim() != 3:
        raise ValueError(f"prob_average_ce_from_logits: expected M logits of shape (B, C), got {tuple(stacked.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p = F.log_softmax(stacked.float() / temperature, dim=-1)  # (M, B, C)
    log_avg = torch.logsumexp(log_p, dim=0) - math.log(stacked.shape[0])  # (B, C)
    return _nll(log_avg, labels, weight, ignore_index)


def _nll(log_probs: Tensor, labels: Tensor, weight: Tensor | None, ignore_index: int) -> Tensor:
    labels = labels.long()
    if bool((labels == ignore_index).all()):
        return log_probs.sum() * 0.0
    w = weight.to(log_probs) if weight is not None else None
    return F.nll_loss(log_probs, labels, weight=w, ignore_index=ignore_index)


def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Softmax cross-entropy on logits ``(B, C)`` (thin wrapper over ``F.cross_entropy``, float32 math).

    Returns 0 with a gradient path when every label is ``ignore_index`` (``F.cross_entropy`` gives NaN).
    """
    labels = labels.long()
    if bool((labels == ignore_index).all()):
        return logits.sum() * 0.0
    w = weight.to(device=logits.device, dtype=torch.float32) if weight is not None else None
    return F.cross_entropy(logits.float(), labels, weight=w, label_smoothing=label_smoothing, ignore_index=ignore_index)


def _flat_pair(pred: Tensor, target: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
    return pred.float(), target.float()


def pcc_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 − PCC`` (Pearson correlation), averaged over output dimensions.

    Args:
        pred: Predictions ``(B,)`` or ``(B, K)``.
        target: Targets, same shape.
        eps: Stabiliser for constant vectors.

    Returns:
        Scalar in ``[0, 2]``.
    """
    p, t = _flat_pair(pred, target, "pcc_loss")
    pc, tc = p - p.mean(0), t - t.mean(0)
    r = (pc * tc).sum(0) / (pc.pow(2).sum(0).sqrt() * tc.pow(2).sum(0).sqrt() + eps)
    return 1.0 - r.mean()


def concordance_loss(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 − CCC`` (Lin's concordance correlation), averaged over output dimensions.

    ``CCC = 2 cov(p, t) / (var p + var t + (mean p − mean t)²)`` with population (biased) moments.

    Args:
        pred: Predictions ``(B,)`` or ``(B, K)``.
        target: Targets, same shape.
        eps: Stabiliser.

    Returns:
        Scalar in ``[0, 2]``.
    """
    p, t = _flat_pair(pred, target, "concordance_loss")
    pm, tm = p.mean(0), t.mean(0)
    cov = ((p - pm) * (t - tm)).mean(0)
    ccc = 2 * cov / (p.var(0, unbiased=False) + t.var(0, unbiased=False) + (pm - tm).pow(2) + eps)
    return 1.0 - ccc.mean()


class ProbAverageCELoss(nn.Module):
    """Module wrapper of :func:`prob_average_ce` with optional class weights (kept as a buffer)."""

    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, eps: float = 1e-12) -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.eps = eps

    def forward(self, probs: Tensor, labels: Tensor) -> Tensor:
        """Loss for averaged probabilities ``(B, C)`` and labels ``(B,)``."""
        return prob_average_ce(probs, labels, self.weight, self.eps)
