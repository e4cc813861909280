"""Linear-probe baseline: a frozen encoder's sequence, mean + std pooled over valid steps, one linear layer.

The probe reads frozen features from ``batch["features"][modality]`` (cached teacher states, MFCC, ...). With
``encoder=`` it also holds that registered encoder, frozen, and runs it on ``batch[modality]`` (the dict its
``preprocess`` returns) when the batch carries no cached features.

**Per-layer statistics.** With ``pooling="none"`` the features are already one vector per utterance, e.g. a
Whisper encoder's ``output="layer_stats"`` (``num_layers`` blocks ``[mean_l | std_l]``, cached once for every
layer). ``layers`` then picks what the linear layer sees: every block concatenated (``None``), one block (an
index), or a learned softmax-weighted sum of the blocks (``"weighted"``, the SUPERB practice). Pair it with
``encoders.standardize`` (z-scoring with the training split's statistics), weight decay (the L2 penalty of a
logistic regression) and selection on validation UA: that is a multinomial logistic regression trained by the
toolkit, matched against scikit-learn's by the tests and the real-data benchmark.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.layers.pooling import LayerSelector, masked_mean, mean_std_pool
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["POOLINGS", "LinearProbe", "mean_std_pool"]

POOLINGS = ("mean_std", "none")


class LinearProbe(EmotionModel):
    """Mean + std pooling of one modality's frozen features, then ``Linear(2 D, C)``.

    Args:
        modality: ``"audio"`` or ``"text"``.
        input_dim: Feature size ``D`` (taken from the encoder when ``encoder`` is given).
        num_classes: Output logits ``C``.
        dropout: Dropout before the linear layer (0: a plain linear probe).
        encoder: Registered encoder name to hold frozen, for batches without cached features.
        allow_random: Let that encoder fall back to random init (tests only).
        pooling: ``"mean_std"`` (pool the frames) or ``"none"`` (the features are one vector per utterance;
            steps are averaged if there are several).
        layers: With ``num_layers`` blocks in the vector: ``None`` = all concatenated, an index = that block,
            ``"weighted"`` = a learned softmax-weighted sum of the blocks.
        num_layers: Blocks (hidden states) in each feature vector; ``input_dim`` must be a multiple of it.
    """

    export_limit = None  # exported with encoder features in (emofuse.inference.export_features)

    def __init__(
        self,
        modality: str = "text",
        input_dim: int = 768,
        num_classes: int = 4,
        dropout: float = 0.0,
        encoder: str | None = None,
        allow_random: bool = False,
        pooling: str = "mean_std",
        layers: int | str | None = None,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        if modality not in ("audio", "text"):
            raise ValueError(f"modality must be 'audio' or 'text', got {modality!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if layers is not None and num_layers is None:
            raise ValueError(f"layers={layers!r} needs num_layers (the blocks in each feature vector)")
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
            pooling=pooling,
            layers=layers,
            num_layers=num_layers,
        )
        self.modalities = (modality,)  # type: ignore[misc]  # instance-level: this model's variant
        self.input_kind = "raw" if encoder is not None else "features"  # type: ignore[misc]  # holds its encoder
        self.modality = modality
        self.pooling = pooling
        self.num_layers = num_layers
        self.selector: LayerSelector | None = None
        width = 2 * input_dim if pooling == "mean_std" else input_dim
        if num_layers is not None:
            if num_layers < 1 or width % num_layers:
                raise ValueError(f"num_layers={num_layers} does not divide the {width}-d feature vector into blocks")
            if layers is not None:
                self.selector = LayerSelector(num_layers, layers)
                width //= num_layers
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

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
            ``logits (B, C)``, ``probs``, ``pooled[<modality>] (B, F)`` (what the linear layer reads), ``masks``.
        """
        x, mask = self._features(batch)
        mask = mask.bool() if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        pooled = mean_std_pool(x, mask) if self.pooling == "mean_std" else masked_mean(x, mask)  # (B, F)
        if self.selector is not None:
            assert self.num_layers is not None
            blocks = pooled.unflatten(-1, (self.num_layers, -1)).unsqueeze(2)  # (B, L, 1, F / L)
            pooled = self.selector(list(blocks.unbind(1))).squeeze(1)  # (B, F / L)
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
