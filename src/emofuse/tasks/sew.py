"""SEW and SeqSEW objectives (Rajan thesis Ch. 5; spec ``rajan-thesis.md`` §4.2-4.3).

* :class:`SEWTask` (one stage): ``L = α·MSE(S_D1(m_sw), x_s) + β·MSE(S_D2(m_ss), x_s) + γ·(−DCCA_k(m_ss, m_sw))
  + L_pred`` with ``α = β = γ = 1``, ``k = 10``; each weight 0 is one Table 5.2 ablation (−S_D1, −S_D2, −CCA).
* :class:`SeqSEWTask` (stage 2, teacher frozen): ``L = L_p + α·(−DCCA(m_ss, m_sw)) + β·MAE(S_D(m_sw), x_s)``,
  ``r1 = r2 = 1e-3``. When teacher and student sequences are step-aligned (same length and mask: RECOLA
  frames, MOSI utterances) DCCA runs over the valid steps and the MAE per step. Otherwise (e.g. audio frames
  vs text tokens) ``align`` chooses: ``pooled`` (the ``auto`` default) runs both on the time-averaged codes and
  features, one row per utterance; ``resample`` puts the teacher's codes and features on the student's time
  axis (:func:`~emofuse.layers.alignment.resample_steps`, uniform alignment) and runs both per student step.
  Pooled DCCA sees one row per utterance: with a batch smaller than the code size (16 utterances, 100-d codes)
  any two code sets correlate perfectly, the term saturates and carries no signal; resampled, a batch gives
  one row per frame (hundreds), as the thesis' frame-aligned RECOLA setup does.

Rows whose stronger modality is absent (``batch["present"][strong]`` False) are left out of the
auxiliary terms. Both return the regression outputs (``preds``, ``targets``) so the engine scores PCC /
CCC / MAE / UAR / WAR, and their parts (``loss_pred``, ``loss_translation``, ``loss_autoencoder``, ``corr``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from emofuse.layers.alignment import resample_steps
from emofuse.layers.pooling import masked_mean
from emofuse.losses.dcca import dcca_correlation
from emofuse.tasks._registry import TaskSpec, register_task
from emofuse.tasks.base import TaskError
from emofuse.tasks.regression import RegressionLoss, RegressionTask

__all__ = ["SEWTask", "SeqSEWTask"]


def _rows(batch: dict[str, Any], modality: str, n: int, device: torch.device) -> Tensor:
    present = (batch.get("present") or {}).get(modality)
    return torch.ones(n, dtype=torch.bool, device=device) if present is None else present.to(device).bool()


class SEWTask(RegressionTask):
    """SEW: translation + auto-encoding + DCCA alignment + prediction, jointly.

    Args:
        model: A :class:`~emofuse.models.sew.SEW`.
        loss: Prediction loss (``mse``, the thesis).
        alpha: Weight of the translation MSE (S_D1).
        beta: Weight of the auto-encoder MSE (S_D2).
        gamma: Weight of the DCCA alignment.
        k: DCCA components (10).
        r1: DCCA ridge of the stronger code.
        r2: DCCA ridge of the weaker code.
        threshold: UAR / WAR binarisation threshold.
        rescale_to: See :class:`~emofuse.tasks.regression.RegressionTask`.
    """

    stage: ClassVar[str] = "sew"

    def __init__(
        self,
        model: Any,
        loss: RegressionLoss = "mse",
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        k: int | None = 10,
        r1: float = 1e-3,
        r2: float = 1e-3,
        threshold: float = 0.0,
        rescale_to: Any = None,
    ) -> None:
        super().__init__(model, loss, threshold, rescale_to)
        self.alpha, self.beta, self.gamma, self.k, self.r1, self.r2 = alpha, beta, gamma, k, r1, r2
        self.config.update(alpha=alpha, beta=beta, gamma=gamma, k=k, r1=r1, r2=r2)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "loss_pred", "loss_translation", "loss_autoencoder", "corr", "preds", "targets"}``."""
        out, preds, targets = self.predict_targets(batch)
        pred = self.prediction_loss(preds, targets)
        parts = {"loss_pred": pred.detach()}
        loss = pred
        ex = out.extras
        if "m_ss" in ex:
            rows = _rows(batch, getattr(self.model, "strong", ""), preds.shape[0], preds.device)
            x_s = ex["strong_input"][rows]
            if bool(rows.any()):
                tr = F.mse_loss(ex["translation"][rows], x_s)
                ae = F.mse_loss(ex["reconstruction"][rows], x_s)
                loss = loss + self.alpha * tr + self.beta * ae
                parts.update(loss_translation=tr.detach(), loss_autoencoder=ae.detach())
            if int(rows.sum()) >= 2 and self.gamma:
                corr = dcca_correlation(ex["m_ss"][rows], ex["m_sw"][rows], self.k, self.r1, self.r2)
                loss = loss - self.gamma * corr
                parts["corr"] = corr.detach()
        return {"loss": loss, **parts, "preds": preds.detach(), "targets": targets}


class SeqSEWTask(RegressionTask):
    """SeqSEW stage 2: the student's prediction loss plus DCCA alignment to the frozen teacher and translation.

    Args:
        model: A :class:`~emofuse.models.sew.SeqSEW` in ``phase="student"``.
        loss: Prediction loss L_p (``mse`` for regression).
        alpha: Weight of ``−DCCA`` (the thesis grid-searches [0.001, 1]; final values not reported).
        beta: Weight of the translation MAE.
        k: DCCA components (``None``: all).
        r1: DCCA ridge (1e-3).
        r2: DCCA ridge (1e-3).
        align: ``auto`` (``steps`` when aligned, else ``pooled``), ``steps`` (teacher and student sequences
            aligned step by step; an error otherwise), ``pooled`` (time-averaged) or ``resample`` (teacher on the
            student's time axis, uniform alignment).
        threshold: UAR / WAR binarisation threshold.
        rescale_to: See :class:`~emofuse.tasks.regression.RegressionTask`.
    """

    stage: ClassVar[str] = "seqsew"

    def __init__(
        self,
        model: Any,
        loss: RegressionLoss = "mse",
        alpha: float = 0.1,
        beta: float = 0.1,
        k: int | None = None,
        r1: float = 1e-3,
        r2: float = 1e-3,
        align: Literal["auto", "steps", "pooled", "resample"] = "auto",
        threshold: float = 0.0,
        rescale_to: Any = None,
    ) -> None:
        super().__init__(model, loss, threshold, rescale_to)
        if align not in ("auto", "steps", "pooled", "resample"):
            raise ValueError(f"align must be auto, steps, pooled or resample, got {align!r}")
        if getattr(model, "phase", "student") != "student":
            raise TaskError("SeqSEWTask trains the student: build the model with phase='student' (stage 2)")
        self.alpha, self.beta, self.k, self.r1, self.r2, self.align = alpha, beta, k, r1, r2, align
        self.config.update(alpha=alpha, beta=beta, k=k, r1=r1, r2=r2, align=align)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``{"loss", "loss_pred", "loss_translation", "corr", "preds", "targets"}``."""
        out, preds, targets = self.predict_targets(batch)
        pred = self.prediction_loss(preds, targets)
        parts = {"loss_pred": pred.detach()}
        loss = pred
        ex = out.extras
        if "m_ss" not in ex:
            return {"loss": loss, **parts, "preds": preds.detach(), "targets": targets}
        rows = _rows(batch, getattr(self.model, "strong", ""), ex["m_sw"].shape[0], preds.device)  # items (B,)
        m_sw, m_ss, tr, x_s = ex["m_sw"][rows], ex["m_ss"][rows], ex["translation"][rows], ex["strong_input"][rows]
        mask_w, mask_s = ex["mask_w"][rows], ex["mask_s"][rows]
        aligned = m_sw.shape[1] == m_ss.shape[1] and bool((mask_w == mask_s).all())
        if self.align == "steps" and not aligned:
            raise TaskError(
                f"align='steps' needs step-aligned sequences; student has {m_sw.shape[1]} steps, "
                f"teacher {m_ss.shape[1]}"
            )
        if self.align == "resample" and not aligned:  # teacher codes and features put on the student's steps
            m_ss, x_s = resample_steps(m_ss, mask_s, mask_w), resample_steps(x_s, mask_s, mask_w)
            aligned = True
        steps = aligned and self.align != "pooled"
        if steps:
            valid = mask_w  # (N, T)
            a_s, a_w = m_ss[valid], m_sw[valid]  # (n_valid, dim)
            t_loss = F.l1_loss(tr[valid], x_s[valid]) if bool(valid.any()) else None
        else:
            a_s, a_w = masked_mean(m_ss, mask_s), masked_mean(m_sw, mask_w)
            t_loss = F.l1_loss(masked_mean(tr, mask_w), masked_mean(x_s, mask_s)) if bool(rows.any()) else None
        if t_loss is not None:
            loss = loss + self.beta * t_loss
            parts["loss_translation"] = t_loss.detach()
        if a_s.shape[0] >= 2 and self.alpha:
            corr = dcca_correlation(a_s, a_w, self.k, self.r1, self.r2)
            loss = loss - self.alpha * corr
            parts["corr"] = corr.detach()
        return {"loss": loss, **parts, "preds": preds.detach(), "targets": targets}


def _build_sew(model: Any, options: dict[str, Any], train: Any, stage: str) -> SEWTask:
    return SEWTask(model, **options)


def _build_seqsew(model: Any, options: dict[str, Any], train: Any, stage: str) -> SeqSEWTask:
    return SeqSEWTask(model, **options)


register_task(TaskSpec("sew", _build_sew, target="regression"))
register_task(TaskSpec("seqsew", _build_seqsew, target="regression"))
