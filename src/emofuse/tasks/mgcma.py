"""The MGCMA objective: ``L = L_DA + L_IA + L_CE`` (Wang et al., spec ``mgcma.md`` §3.1).

* ``L_DA``: distribution-level symmetric InfoNCE on the utterance Gaussians of speech and text
  (:func:`~emofuse.losses.alignment.distribution_contrastive_loss`, ``Sim = −p·W₂² + q``, τ = 0.07), when the
  model's order contains DAM;
* ``L_IA``: instance-level CLIP-style InfoNCE on the pooled vectors at the IAM position
  (:func:`~emofuse.losses.alignment.instance_contrastive_loss`, L2-normalised by default, optionally after a
  per-modality linear projection head owned by this task), when the order contains IAM;
* ``L_CE``: cross-entropy of the classifier's logits.

All weights are 1 in the paper. The model (:class:`~emofuse.models.mgcma.MGCMA`) returns what the losses need in
``ModelOutput.extras``; a model whose order lacks a module simply contributes no term for it (Table II rows).

Example:
    >>> import torch
    >>> from emofuse.models.base import EmotionModel, ModelOutput
    >>> class Toy(EmotionModel):
    ...     def forward(self, batch):
    ...         z = {"audio": batch["x"], "text": batch["x"]}
    ...         return ModelOutput(logits=torch.zeros(2, 4), extras={"iam": z})
    >>> out = MGCMATask(Toy())({"x": torch.eye(2), "labels": torch.tensor([0, 3])})
    >>> round(float(out["ce"]), 4), round(float(out["ia"]), 4)  # ln 4; two orthogonal pairs at τ = 0.07
    (1.3863, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from emofuse.losses.alignment import (
    DEFAULT_P,
    DEFAULT_Q,
    DEFAULT_TEMPERATURE,
    DistributionContrastiveLoss,
    InstanceContrastiveLoss,
)
from emofuse.losses.classification import cross_entropy
from emofuse.models.base import EmotionModel
from emofuse.tasks._registry import TaskSpec, register_task
from emofuse.tasks.base import Task, TaskError

__all__ = ["MGCMATask"]

_PAIR = ("audio", "text")


class MGCMATask(Task):
    """Cross-entropy plus MGCMA's distribution- and instance-level alignment losses.

    Args:
        model: An :class:`~emofuse.models.mgcma.MGCMA` (or any model filling the same ``extras``).
        temperature: ``τ`` of both contrastive losses (0.07).
        p: Distance scale of ``Sim = −p·W + q`` (1/200, MAP).
        q: Similarity shift (4, MAP; cancels in the softmax).
        da_weight: Weight of ``L_DA`` (1).
        ia_weight: Weight of ``L_IA`` (1).
        ce_weight: Weight of ``L_CE`` (1).
        iam_normalize: L2-normalise the IAM vectors (cosine; ``False``: the paper's raw dot product).
        iam_projection: A per-modality ``Linear(D, D)`` head before ``L_IA`` (spec A7 option).
        learn_similarity: Learn ``p`` and ``q`` (A5 alternative).
        learn_temperature: Learn ``τ`` (A13 alternative; one per loss).
        class_weights: Optional per-class CE weights ``(C,)``.
        label_smoothing: CE label smoothing.

    Returns from :meth:`forward`:
        ``{"loss", "ce", "da"?, "ia"?, "logits", "probs", "labels"}`` (parts and outputs detached).
    """

    stage: ClassVar[str] = "mgcma"
    class_weights: Tensor | None
    #: Spec §3.2: Adam, 1e-5 for everything, batch 4, up to 100 epochs, constant learning rate.
    recommended: ClassVar[dict[str, Any]] = {
        "epochs": 100,
        "lr": 1e-5,
        "optimizer": "adam",
        "batch_size": 4,
        "scheduler": "none",
        "monitor": "val/loss",
        "mode": "min",
    }

    def __init__(
        self,
        model: EmotionModel,
        temperature: float = DEFAULT_TEMPERATURE,
        p: float = DEFAULT_P,
        q: float = DEFAULT_Q,
        da_weight: float = 1.0,
        ia_weight: float = 1.0,
        ce_weight: float = 1.0,
        iam_normalize: bool = True,
        iam_projection: bool = False,
        learn_similarity: bool = False,
        learn_temperature: bool = False,
        class_weights: Sequence[float] | Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(model)
        for name, w in (("da_weight", da_weight), ("ia_weight", ia_weight), ("ce_weight", ce_weight)):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        self.da_weight, self.ia_weight, self.ce_weight = float(da_weight), float(ia_weight), float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.da_loss = DistributionContrastiveLoss(p, q, temperature, learn_similarity, learn_temperature)
        self.ia_loss = InstanceContrastiveLoss(temperature, iam_normalize, learn_temperature)
        order = list(model.config.get("order", ["dam", "tam", "iam"]))
        dim = getattr(model, "dim", None)
        self.iam_proj: nn.ModuleDict | None = None
        if iam_projection and "iam" in order:
            if not isinstance(dim, int):
                raise ValueError("iam_projection needs a model with an integer 'dim' attribute (the IAM vector size)")
            self.iam_proj = nn.ModuleDict({m: nn.Linear(dim, dim) for m in _PAIR})
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        self.register_buffer("class_weights", weights)
        self.config = {
            "temperature": float(temperature),
            "p": float(p),
            "q": float(q),
            "da_weight": self.da_weight,
            "ia_weight": self.ia_weight,
            "ce_weight": self.ce_weight,
            "iam_normalize": iam_normalize,
            "iam_projection": iam_projection,
            "learn_similarity": learn_similarity,
            "learn_temperature": learn_temperature,
            "class_weights": None if weights is None else weights.tolist(),
            "label_smoothing": self.label_smoothing,
        }

    @staticmethod
    def _pair(extras: dict[str, Any], key: str) -> tuple[Tensor, Tensor]:
        value = extras[key]
        missing = [m for m in _PAIR if m not in value]
        if missing:
            raise TaskError(f"model output extras[{key!r}] lacks modality {missing}")
        return value["audio"], value["text"]

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Total loss and its parts on one labelled batch.

        Args:
            batch: Model inputs plus ``labels (B,)`` (``-100`` = ignored by the CE; the alignment losses use
                every pair).

        Returns:
            ``{"loss", "ce", "da"?, "ia"?, "logits" (B, C), "probs" (B, C), "labels" (B,)}``.
        """
        labels = self.require(batch, "labels", "class ids for the cross-entropy")
        out = self.model(batch)
        if out.logits is None:
            raise TaskError(f"{type(self.model).__name__} returned no logits")
        labels = labels.to(out.logits.device).long()
        if self.class_weights is not None and self.class_weights.numel() != out.logits.shape[-1]:
            raise TaskError(
                f"class_weights has {self.class_weights.numel()} entries for {out.logits.shape[-1]} classes"
            )
        ce = cross_entropy(out.logits, labels, self.class_weights, self.label_smoothing)
        loss = self.ce_weight * ce
        parts: dict[str, Tensor] = {"ce": ce.detach()}
        if "dist_mu" in out.extras:
            mu_a, mu_t = self._pair(out.extras, "dist_mu")
            sigma_a, sigma_t = self._pair(out.extras, "dist_sigma")
            da = self.da_loss(mu_a, sigma_a, mu_t, sigma_t)
            loss = loss + self.da_weight * da
            parts["da"] = da.detach()
        if "iam" in out.extras:
            z_a, z_t = self._pair(out.extras, "iam")
            if self.iam_proj is not None:
                z_a, z_t = self.iam_proj["audio"](z_a), self.iam_proj["text"](z_t)
            ia = self.ia_loss(z_a, z_t)
            loss = loss + self.ia_weight * ia
            parts["ia"] = ia.detach()
        probs = out.probs if out.probs is not None else out.logits.float().softmax(-1)
        return {"loss": loss, **parts, "logits": out.logits.detach(), "probs": probs.detach(), "labels": labels}


def _build_mgcma(model: EmotionModel, options: dict[str, Any], train: Any, stage: str) -> MGCMATask:
    return MGCMATask(model, **options)


register_task(TaskSpec("mgcma", _build_mgcma))
