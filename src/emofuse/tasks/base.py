"""The :class:`Task` base class: a model plus the objective it is trained with.

A task owns everything only training needs (STYLE.md §3.5, after timm ``task/`` and pyannote's
Model/Task split): losses, frozen teachers, projection heads, loss weights. The model stays
ignorant of how it is trained and returns a :class:`~emofuse.models.base.ModelOutput`; the task's
:meth:`Task.forward` returns a dict with ``loss`` and each of its parts. Tasks import models, losses
and metrics, never Lightning: the training engine (``emofuse.training``) wraps them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["Task", "TaskError"]


class TaskError(ValueError):
    """A batch or model output does not fit the task (missing key, misaligned lengths). Names the cause."""


class Task(nn.Module):
    """Base class of training objectives.

    Subclasses set :attr:`stage`, store their constructor arguments in :attr:`config`, and implement
    :meth:`forward`.

    Args:
        model: The model being trained; reachable as :attr:`model`.

    Attributes:
        stage: Short name of the objective (``"distill"``, ``"finetune"``, ...), used in logs and
            checkpoint names.
        monitor: Logged value the training engine selects checkpoints on (e.g. ``"val/loss"``).
        monitor_mode: ``"min"`` or ``"max"`` for :attr:`monitor`.
        recommended: Paper settings for the training engine (epochs, warm-up, learning rate, ...);
            hints only, the engine's configuration decides.
    """

    stage: ClassVar[str] = "task"
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    recommended: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: EmotionModel) -> None:
        super().__init__()
        self.model = model
        self.config: dict[str, Any] = {}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Compute the objective on one batch.

        Args:
            batch: The shared batch dict (``ids``, ``labels``, ``audio``, ``text``, ``teacher``,
                ``features``, ``num_samples``; see :mod:`emofuse.pipeline.dataset`).

        Returns:
            ``{"loss": scalar, <part>: scalar or tensor, ...}``; ``loss`` is what the engine
            back-propagates.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def predict(self, batch: dict[str, Any]) -> ModelOutput:
        """Run the model alone (no loss, no teacher)."""
        return self.model(batch)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser should update (everything with ``requires_grad``)."""
        return (p for p in self.parameters() if p.requires_grad)

    @staticmethod
    def require(batch: Mapping[str, Any], key: str, why: str) -> Any:
        """``batch[key]``, or a :class:`TaskError` naming the key, what needs it, and the keys present."""
        try:
            return batch[key]
        except KeyError:
            raise TaskError(f"batch has no {key!r} ({why}); batch keys: {sorted(batch)}") from None

    def extra_repr(self) -> str:
        """Stage and monitor shown in the module repr."""
        return f"stage={self.stage!r}, monitor={self.monitor!r} ({self.monitor_mode})"
