"""What every emotion model returns, and the base class it derives from.

Models never compute a loss (STYLE.md §3.5): they return a :class:`ModelOutput` holding logits,
class probabilities and the per-modality sequences the losses of a task need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["EmotionModel", "ModelOutput"]


@dataclass
class ModelOutput:
    """Output of every emotion model.

    Attributes:
        logits: Fused class scores ``(B, C)`` (for models that fuse probabilities, the log of the
            fused probabilities), or ``None`` for models without a classifier (e.g. a student during
            distillation).
        probs: Fused class probabilities ``(B, C)``, or ``None``.
        values: Continuous predictions ``(B, K)`` of regression models (valence, arousal, conflict
            level, ...), or ``None`` for classifiers.
        modality_logits: Per-modality class scores ``{"audio": (B, C), "text": (B, C)}``.
        hidden: Per-modality contextual sequences ``{"audio": (B, T_a, d), ...}``.
        masks: Per-modality valid-step masks ``{"audio": (B, T_a) bool, ...}``.
        pooled: Per-modality utterance vectors ``{"audio": (B, d), ...}``.
        extras: Anything else a task may need (attention maps, distribution parameters, ...).
    """

    logits: Tensor | None = None
    probs: Tensor | None = None
    values: Tensor | None = None
    modality_logits: dict[str, Tensor] = field(default_factory=dict)
    hidden: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    pooled: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class EmotionModel(nn.Module):
    """Base class of registered models.

    Subclasses set :attr:`modalities`, keep the constructor keyword arguments in
    :attr:`config` (so a checkpoint can rebuild the model without the YAML), and implement
    ``forward(batch: dict[str, Tensor]) -> ModelOutput``.
    """

    #: Modalities the model consumes, e.g. ``("audio", "text")``.
    modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.model_name: str = type(self).__name__

    def branch_parameters(self) -> dict[str, int]:
        """Parameter count per top-level branch (child module), for ``emofuse models``."""
        return {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total (or trainable) parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
