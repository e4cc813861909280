"""Linear-probe baseline: a frozen encoder's sequence, mean + std pooled over valid steps, one linear layer.

The probe reads frozen features from ``batch["features"][modality]`` (cached teacher states, MFCC, ...). With
``encoder=`` it also holds that registered encoder, frozen, and runs it on ``batch[modality]`` (the dict its
``preprocess`` returns) when the batch carries no cached features.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.layers.pooling import mean_std_pool
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["LinearProbe", "mean_std_pool"]


class LinearProbe(EmotionModel):
    """Mean + std pooling of one modality's frozen features, then ``Linear(2 D, C)``.

    Args:
        modality: ``"audio"`` or ``"text"``.
        input_dim: Feature size ``D`` (taken from the encoder when ``encoder`` is given).
        num_classes: Output logits ``C``.
        dropout: Dropout before the linear layer (0: a plain linear probe).
        encoder: Registered encoder name to hold frozen, for batches without cached features.
        allow_random: Let that encoder fall back to random init (tests only).
    """

    def __init__(
        self,
        modality: str = "text",
        input_dim: int = 768,
        num_classes: int = 4,
        dropout: float = 0.0,
        encoder: str | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        if modality not in ("audio", "text"):
            raise ValueError(f"modality must be 'audio' or 'text', got {modality!r}")
        self.encoder: nn.Module | None = None
        if encoder is not None:
            from emofuse.encoders import create_encoder

            enc = create_encoder(encoder, frozen=True, allow_random=allow_random)
            if enc.modality != modality:
                raise ValueError(f"encoder {encoder!r} is a {enc.modality} encoder, not {modality}")
            input_dim = enc.output_dim
            self.encoder = enc
        self.config: dict[str, Any] = dict(
            modality=modality,
            input_dim=input_dim,
            num_classes=num_classes,
            dropout=dropout,
            encoder=encoder,
            allow_random=allow_random,
        )
        self.modalities = (modality,)  # type: ignore[misc]  # instance-level: this model's variant
        self.modality = modality
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * input_dim, num_classes)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LinearProbe:
        """Rebuild from :attr:`config` (the state dict then restores the weights)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**config)

    def branch_parameters(self) -> dict[str, int]:
        """Parameters of the (frozen) encoder, when held, and of the linear head."""
        counts = {"head": sum(p.numel() for p in self.head.parameters())}
        if self.encoder is not None:
            counts = {"encoder": sum(p.numel() for p in self.encoder.parameters()), **counts}
        return counts

    def _features(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        feats = batch.get("features") or {}
        if self.modality in feats:
            return feats[self.modality], feats.get(f"{self.modality}_mask")
        if self.encoder is None or self.modality not in batch:
            raise KeyError(
                f"probe needs batch['features'][{self.modality!r}] (or encoder= and batch[{self.modality!r}])"
            )
        with torch.no_grad():
            out = self.encoder(**batch[self.modality])
        return out.hidden, out.mask

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Classify one modality.

        Args:
            batch: ``features[<modality>] (B, T, D)`` and ``features[<modality>_mask] (B, T)``.

        Returns:
            ``logits (B, C)``, ``probs``, ``pooled[<modality>] (B, 2 D)``, ``masks``.
        """
        x, mask = self._features(batch)
        mask = mask.bool() if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        pooled = mean_std_pool(x, mask)  # (B, 2 D)
        logits = self.head(self.drop(pooled))  # (B, C)
        m = self.modality
        return ModelOutput(
            logits=logits,
            probs=logits.softmax(-1),
            modality_logits={m: logits},
            masks={m: mask},
            pooled={m: pooled},
        )


@register_model
def probe(**kwargs: Any) -> LinearProbe:
    """Linear probe on frozen features (defaults: text, 768-d, 4 classes)."""
    return LinearProbe(**{**dict(modality="text", input_dim=768, num_classes=4), **kwargs})
