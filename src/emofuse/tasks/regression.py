"""Continuous-label regression (valence, arousal, conflict level): MSE, 1 − PCC or 1 − CCC.

The model returns ``ModelOutput.values`` ``(B, K)`` (or, for a classifier built with
``num_classes = K``, its ``logits``); the batch carries ``targets`` ``(B,)`` or ``(B, K)`` with ``NaN``
where an utterance has no target (those rows are left out of the loss). Rajan's ConflictNET trains with
``1 − PCC`` over each mini-batch (thesis Eq. 3.3); SeqSEW / RECOLA use CCC.

Example:
    >>> import torch
    >>> from emofuse.models.base import EmotionModel, ModelOutput
    >>> class Toy(EmotionModel):
    ...     def forward(self, batch):
    ...         return ModelOutput(values=batch["x"])
    >>> batch = {"x": torch.tensor([[0.0], [1.0], [3.0]]), "targets": torch.tensor([0.0, 2.0, float("nan")])}
    >>> out = RegressionTask(Toy(), loss="mse")(batch)
    >>> float(out["loss"]), out["preds"].shape
    (0.5, torch.Size([3, 1]))
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor

from emofuse.losses.classification import concordance_loss, pcc_loss
from emofuse.models.base import ModelOutput
from emofuse.tasks._registry import TaskSpec, register_task
from emofuse.tasks.base import Task, TaskError

__all__ = ["REGRESSION_TASKS", "RegressionTask"]

#: Stage task names whose runs are scored as regression (PCC / CCC / MAE / UAR / WAR).
REGRESSION_TASKS = ("regress", "sew", "seqsew")

RegressionLoss = Literal["mse", "pcc", "ccc", "mae", "bce"]
REGRESSION_LOSSES: tuple[str, ...] = get_args(RegressionLoss)


class RegressionTask(Task):
    """Regression of continuous targets.

    Args:
        model: A model returning ``values`` ``(B, K)`` (or ``logits`` ``(B, K)``).
        loss: ``"mse"``, ``"pcc"`` (``1 − PCC``, ConflictNET), ``"ccc"`` (``1 − CCC``), ``"mae"`` or ``"bce"``
            (binary cross-entropy of probabilities in [0, 1] against 0/1 targets: SeqSEW's sigmoid output on
            CMU-MOSI binary sentiment, with ``threshold: 0.5`` the reported UAR / WAR are balanced and plain
            accuracy).
        threshold: Binarisation threshold of the UAR / WAR the training engine reports.
        rescale_to: ``(lo, hi)``: min-max rescale test predictions to this range before binarising (thesis
            Ch.3 post-processing); ``"train"``: to the range of the fold's training targets, as the thesis
            (resolved by the runner; validation metrics are then not rescaled); ``None``: off.

    Returns from :meth:`forward`:
        ``{"loss", "preds" (B, K) detached, "targets" (B, K)}``.
    """

    stage: ClassVar[str] = "regress"
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"

    def __init__(
        self,
        model: Any,
        loss: RegressionLoss = "mse",
        threshold: float = 0.0,
        rescale_to: tuple[float, float] | list[float] | str | None = None,
    ) -> None:
        super().__init__(model)
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        if rescale_to is not None and rescale_to != "train":
            if isinstance(rescale_to, str) or len(rescale_to) != 2 or float(rescale_to[0]) >= float(rescale_to[1]):
                raise ValueError(f"rescale_to must be (lo, hi) with lo < hi, or 'train', got {rescale_to!r}")
        self.loss_name = loss
        self.threshold = float(threshold)
        self.rescale_to: tuple[float, float] | str | None = (
            rescale_to
            if rescale_to is None or isinstance(rescale_to, str)
            else (float(rescale_to[0]), float(rescale_to[1]))
        )
        self.config = {"loss": loss, "threshold": self.threshold, "rescale_to": self.rescale_to}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Loss on one batch.

        Args:
            batch: Model inputs plus ``targets`` ``(B,)`` or ``(B, K)`` (``NaN`` = no target).

        Returns:
            ``{"loss": scalar, "preds": (B, K), "targets": (B, K)}``.
        """
        out, preds, targets = self.predict_targets(batch)
        return {"loss": self.prediction_loss(preds, targets), "preds": preds.detach(), "targets": targets}

    def predict_targets(self, batch: dict[str, Any]) -> tuple[ModelOutput, Tensor, Tensor]:
        """Run the model; returns its output, predictions ``(B, K)`` and targets ``(B, K)``."""
        targets = self.require(batch, "targets", "continuous targets (set data.target in the config)")
        out = self.model(batch)
        preds = out.values if out.values is not None else out.logits
        if preds is None:
            raise TaskError(f"{type(self.model).__name__} returned neither values nor logits to regress")
        if preds.ndim == 1:
            preds = preds[:, None]
        targets = targets.to(device=preds.device, dtype=preds.dtype)
        if targets.ndim == 1:
            targets = targets[:, None]
        if targets.shape != preds.shape:
            raise TaskError(f"targets {tuple(targets.shape)} do not match predictions {tuple(preds.shape)}")
        return out, preds, targets

    def prediction_loss(self, preds: Tensor, targets: Tensor) -> Tensor:
        """The configured loss over the rows with a finite target (0 with a valid graph when there is none)."""
        keep = torch.isfinite(targets).all(-1)  # (B,)
        if not bool(keep.any()):
            return preds.sum() * 0.0  # a batch without targets: no signal, but a valid graph
        p, t = preds[keep], targets[keep]
        if self.loss_name == "mse":
            return torch.nn.functional.mse_loss(p, t)
        if self.loss_name == "mae":
            return torch.nn.functional.l1_loss(p, t)
        if self.loss_name == "bce":
            if bool(((t != 0) & (t != 1)).any()):
                raise TaskError(f"loss 'bce' needs 0/1 targets, got values {sorted(set(t.flatten().tolist()))[:5]}")
            return torch.nn.functional.binary_cross_entropy(p.clamp(1e-7, 1 - 1e-7), t)
        if self.loss_name == "pcc":
            return pcc_loss(p, t)
        return concordance_loss(p, t)


def _build_regress(model: Any, options: dict[str, Any], train: Any, stage: str) -> RegressionTask:
    return RegressionTask(model, **options)


register_task(TaskSpec("regress", _build_regress, target="regression"))
