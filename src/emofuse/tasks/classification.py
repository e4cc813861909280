"""Supervised utterance classification (CMD Stage 2, Kim & Kang 2022 Algorithm 3; and every baseline).

CMD fine-tunes the distilled student end to end with a cross-entropy on the **averaged per-modality
probabilities** ``ŷ = (softmax(F(p_a)/κ) + softmax(F(p_t)/κ)) / 2`` (spec ``cmd.md`` §3.2). The model
does the averaging and returns ``probs = ŷ`` and ``logits = log ŷ`` (the
:class:`~emofuse.models.base.ModelOutput` contract); this task only applies the loss.

Example:
    >>> import torch
    >>> from emofuse.models.base import EmotionModel, ModelOutput
    >>> class Toy(EmotionModel):
    ...     def forward(self, batch):
    ...         return ModelOutput(logits=batch["x"], probs=batch["x"].softmax(-1))
    >>> out = ClassificationTask(Toy())({"x": torch.zeros(2, 4), "labels": torch.tensor([0, 3])})
    >>> round(float(out["loss"]), 4)  # ln 4
    1.3863
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from emofuse.losses.classification import cross_entropy, prob_average_ce, prob_average_ce_from_logits
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.tasks._registry import TaskSpec, register_task
from emofuse.tasks.base import Task, TaskError

__all__ = ["ClassificationTask"]

LossName = Literal["prob_average_ce", "ce"]


class ClassificationTask(Task):
    """Cross-entropy on the model's fused prediction.

    Args:
        model: Any :class:`~emofuse.models.base.EmotionModel` returning ``logits`` and/or ``probs``.
        loss: ``"prob_average_ce"`` (CMD, default) or ``"ce"``:

            * ``"prob_average_ce"``: ``−mean_i log ŷ_{i,y_i}`` on the fused probabilities ``probs``,
              computed in the most stable form that reproduces them (a small ``κ`` saturates the
              float32 softmax, and a clamped ``log 0`` has no gradient):

              1. from ``modality_logits`` and the model's ``temperature`` attribute,
                 ``log ŷ = logsumexp_m log_softmax(l_m/κ) − log M``
                 (:func:`~emofuse.losses.classification.prob_average_ce_from_logits`), if that
                 reproduces ``probs`` (checked every batch, so a model with another fusion is safe);
              2. else ``log_softmax(logits)`` when ``logits`` are finite (equal to ``log probs`` under
                 the ``ModelOutput`` contract, ``probs = softmax(logits)``);
              3. else ``log(clamp(probs, eps))`` (:func:`~emofuse.losses.classification.prob_average_ce`).
            * ``"ce"``: softmax cross-entropy on ``logits`` (baselines that fuse logits or features).

            For a model that honours the contract both give the same value; they differ in which
            output they require.
        class_weights: Optional per-class weights ``(C,)`` (weighted mean, as ``F.nll_loss``).
        label_smoothing: For ``"ce"`` only.
        eps: Clamp for ``log`` of probabilities.
        l2: Ridge penalty ``l2 / 2 · Σ ||W||²`` over the model's trainable weight matrices (biases and other
            1-d parameters excluded), added to the loss: a probe trained with it is an L2-regularised
            logistic regression (scikit-learn's ``C`` is ``1 / (l2 · n_train)``).

    Returns from :meth:`forward`:
        ``{"loss", "logits" (B, C), "probs" (B, C), "labels" (B,)}``; ``logits``/``probs`` detached.
        Labels equal to ``-100`` are ignored.
    """

    stage: ClassVar[str] = "finetune"
    class_weights: Tensor | None
    #: Spec §3.5 [R]: Stage-1 settings reused (Adam, 1e-4, 10 + 40 epochs), best validation loss.
    recommended: ClassVar[dict[str, Any]] = {
        "epochs": 50,
        "warmup_epochs": 10,
        "lr": 1e-4,
        "decay_per_epoch": 0.9,
        "optimizer": "adam",
        "max_samples": 1_280_000,
        "monitor": "val/loss",
        "mode": "min",
    }

    def __init__(
        self,
        model: EmotionModel,
        loss: LossName = "prob_average_ce",
        class_weights: Sequence[float] | Tensor | None = None,
        label_smoothing: float = 0.0,
        eps: float = 1e-12,
        l2: float = 0.0,
    ) -> None:
        super().__init__(model)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        if loss not in ("prob_average_ce", "ce"):
            raise ValueError(f"loss must be 'prob_average_ce' or 'ce', got {loss!r}")
        if label_smoothing and loss != "ce":
            raise ValueError("label_smoothing is only supported with loss='ce'")
        self.loss_name: LossName = loss
        self.label_smoothing = float(label_smoothing)
        self.eps = eps
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        self.register_buffer("class_weights", weights)
        self.config = {
            "loss": loss,
            "class_weights": None if weights is None else weights.tolist(),
            "label_smoothing": self.label_smoothing,
            "eps": eps,
            "l2": self.l2,
        }

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Loss on one labelled batch.

        Args:
            batch: Model inputs plus ``labels`` ``(B,)`` (class ids; ``-100`` = ignore).

        Returns:
            ``{"loss": scalar, "logits": (B, C), "probs": (B, C), "labels": (B,)}``.
        """
        labels = self.require(batch, "labels", "class ids for the classification loss")
        out = self.model(batch)
        logits, probs = out.logits, out.probs
        if logits is None and probs is None:
            raise TaskError(f"{type(self.model).__name__} returned neither logits nor probs")
        labels = labels.to(device=(logits if logits is not None else probs).device).long()
        weights = self.class_weights
        if weights is not None:
            n_classes = (logits if logits is not None else probs).shape[-1]
            if weights.numel() != n_classes:
                raise TaskError(f"class_weights has {weights.numel()} entries for {n_classes} classes")
        if self.loss_name == "ce":
            if logits is None:
                raise TaskError(f"loss='ce' needs logits, but {type(self.model).__name__} returned only probs")
            loss = cross_entropy(logits, labels, weights, self.label_smoothing)
        elif (stable := self._from_modality_logits(out, labels, weights)) is not None:
            loss = stable
        elif logits is not None and bool(torch.isfinite(logits).all()):
            # log_softmax(log ŷ) = log ŷ: the same loss as on probs, without the clamp (one "modality")
            loss = prob_average_ce_from_logits(logits[None], labels, 1.0, weights)
        else:
            loss = prob_average_ce(probs if probs is not None else logits.softmax(-1), labels, weights, self.eps)
        if self.l2:  # ridge penalty on the trainable weight matrices (not biases): logistic regression's L2
            weights_sq = [p.pow(2).sum() for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
            loss = loss + 0.5 * self.l2 * torch.stack(weights_sq).sum() if weights_sq else loss
        if probs is None:
            probs = logits.float().softmax(-1)
        if logits is None:
            logits = probs.float().clamp_min(self.eps).log()
        return {"loss": loss, "logits": logits.detach(), "probs": probs.detach(), "labels": labels}

    def _from_modality_logits(self, out: ModelOutput, labels: Tensor, weights: Tensor | None) -> Tensor | None:
        """Loss from per-modality logits at the model's temperature, if they reproduce ``out.probs``."""
        kappa = getattr(self.model, "temperature", None)
        if not out.modality_logits or out.probs is None or not isinstance(kappa, (int, float)) or kappa <= 0:
            return None
        stacked = torch.stack(list(out.modality_logits.values()))  # (M, B, C)
        if stacked.shape[1:] != out.probs.shape:
            return None
        with torch.no_grad():
            probs = (stacked.float() / kappa).softmax(-1).mean(0)
            if not torch.allclose(probs, out.probs.float(), rtol=1e-4, atol=1e-6):
                return None
        return prob_average_ce_from_logits(stacked, labels, float(kappa), weights)


def _build_classify(model: EmotionModel, options: dict[str, Any], train: Any, stage: str) -> ClassificationTask:
    return ClassificationTask(model, **options)


def _build_finetune_encoder(model: EmotionModel, options: dict[str, Any], train: Any, stage: str) -> ClassificationTask:
    """End to end on raw input; the model declares its encoder's layers (``encoder_layer_ids``)."""
    if not model.encoder_layer_ids():
        raise ValueError(
            f"stage {stage!r}: finetune_encoder needs a model that fine-tunes an encoder "
            f"(finetuned_encoder), not {model.model_name!r}"
        )
    return ClassificationTask(model, **{"loss": "ce", **options})


register_task(TaskSpec("classify", _build_classify))
register_task(TaskSpec("finetune", _build_classify))
register_task(
    TaskSpec(
        "finetune_encoder",
        _build_finetune_encoder,
        raw_inputs=True,
        default_monitor=("val/ua", "max"),
        global_monitor_wins=True,
    )  # fmt: skip
)
