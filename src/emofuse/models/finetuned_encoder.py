"""A pretrained encoder fine-tuned end to end with a pooling head: raw waveform or text in, emotion out.

The SUPERB / EmoBox recipe for one modality: a registered encoder (Whisper tiny.en / base, MiniLM, MPNet,
wav2vec 2.0, or any same-family Hugging Face checkpoint a user has locally, via ``weights_dir``) reads the raw
input (``batch[m]``, the output of the encoder's own ``preprocess``), one hidden layer (the last, a given index,
or a learned softmax-weighted sum of all of them: ``layer``) is pooled over valid steps (``mean``, ``mean_std``
or ``first``), and a small head classifies it::

    batch[m] ─► encoder (trainable, minus the frozen front-end / first K blocks) ─► hidden (B, T, D), mask (B, T)
             ─► pool (B, D) or (B, 2 D) ─► dropout ─► [Linear ─► ReLU ─► dropout] ─► Linear ─► logits (B, C)

The model computes no loss (STYLE.md §3.5): the ``finetune_encoder`` stage trains it with
:class:`~emofuse.tasks.classification.ClassificationTask`. It declares what the training engine needs to fine-tune
it well: :meth:`encoder_layer_ids` (the depth of every encoder parameter, for a separate encoder learning rate with
layer-wise decay, ``optim.encoder_lr`` / ``optim.layer_decay``) and :meth:`input_encoders` (its own encoder
preprocesses training, evaluation and prediction batches). A checkpoint of this model is also a fine-tuned encoder:
``create_encoder(name, checkpoint=...)`` (:mod:`emofuse.encoders.finetuned`) loads its encoder weights for feature
extraction (CM-RoBERTa's COSMIC step).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from emofuse.config.schema import register_model_options
from emofuse.layers.pooling import masked_mean
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.models.mgcma import _architecture_only, _disable_layerdrop
from emofuse.models.probe import mean_std_pool

__all__ = ["FinetunedEncoder", "FinetunedEncoderOptions"]

POOLINGS = ("mean", "mean_std", "first")


class FinetunedEncoder(EmotionModel):
    """A registered encoder plus a pooling head, trained end to end on labels.

    Args:
        encoder: Registered encoder name (``emofuse doctor`` lists them), e.g. ``openai/whisper-tiny.en`` or
            ``all-MiniLM-L6-v2``. Its modality is the model's.
        num_classes: Classes ``C``.
        layer: Hidden layer the head reads: ``None`` = last, an index into the ``L + 1`` hidden states
            (0 = embedding output), or ``"weighted"`` = a learned softmax-weighted sum of all of them.
        pooling: ``"mean"`` (masked mean), ``"mean_std"`` (mean and standard deviation, ``2 D``) or ``"first"``
            (the first step: ``[CLS]`` / ``<s>`` of a text encoder).
        head_hidden: Width of a hidden layer in the head (``None``: a single linear layer).
        dropout: Dropout before each head layer.
        freeze_front_end: Freeze the encoder's input embedding (Whisper's convolutional front-end, wav2vec 2.0's
            CNN feature encoder and projection, a text model's embedding table).
        freeze_layers: Freeze the input embedding and the first ``K`` blocks (``0``: none).
        weights_dir: Folder with the encoder's weights (any Hugging Face checkpoint of the encoder's family).
        encoder_options: Further options of the encoder (``chunk_long_audio``, ...), passed to ``create_encoder``.
        allow_random: Let the encoder fall back to random weights when none resolve (tests; loud warning).

    Raises:
        ValueError: An unknown pooling, a negative or too large ``freeze_layers``, or ``num_classes < 1``.
    """

    input_kind = "raw"
    export_limit = "holds a whole fine-tuned encoder (the exporter covers CMD students)"

    def __init__(
        self,
        encoder: str = "openai/whisper-tiny.en",
        num_classes: int = 4,
        layer: int | str | None = None,
        pooling: str = "mean",
        head_hidden: int | None = None,
        dropout: float = 0.1,
        freeze_front_end: bool = False,
        freeze_layers: int = 0,
        weights_dir: str | None = None,
        encoder_options: dict[str, Any] | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        options = dict(encoder_options or {})
        if torch.get_default_device().type == "meta":  # parameter counting (`emofuse models`): architecture only
            enc = _architecture_only(encoder, layer=layer, **options).to("meta")
        else:
            from emofuse.encoders import create_encoder

            enc = create_encoder(
                encoder, layer=layer, frozen=False, weights_dir=weights_dir, allow_random=allow_random, **options
            )
        _disable_layerdrop(enc)
        self.encoder = enc.freeze(False)
        self.modality = str(enc.modality)
        self.modalities = (self.modality,)  # type: ignore[misc]  # instance-level: the encoder's modality
        depth = enc.layer_ids()
        top = max(depth.values(), default=0)
        if not 0 <= freeze_layers <= top:
            raise ValueError(f"freeze_layers must be in 0..{top} (the blocks of {encoder!r}), got {freeze_layers}")
        self.config: dict[str, Any] = dict(
            encoder=encoder,
            modality=self.modality,
            num_classes=num_classes,
            layer=layer,
            pooling=pooling,
            head_hidden=head_hidden,
            dropout=dropout,
            freeze_front_end=freeze_front_end,
            freeze_layers=freeze_layers,
            weights_dir=None if weights_dir is None else str(weights_dir),
            encoder_options=options,
            allow_random=allow_random,
        )
        self._freeze(freeze_front_end, freeze_layers)
        #: Which weights the encoder started from (written into results by the training engine).
        self.encoder_provenance: dict[str, dict[str, Any]] = {self.modality: enc.provenance.to_dict()}
        width = int(enc.output_dim) * (2 if pooling == "mean_std" else 1)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if head_hidden is not None:
            layers += [nn.Linear(width, head_hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = head_hidden
        self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def _freeze(self, front_end: bool, first_blocks: int) -> None:
        if front_end:
            from emofuse.encoders import EncoderError

            try:
                embedding = self.encoder.input_embedding()
            except EncoderError:
                raise ValueError(f"encoder {self.config['encoder']!r} has no input embedding to freeze") from None
            embedding.requires_grad_(False)
        if first_blocks:
            frozen = {n for n, d in self.encoder.layer_ids().items() if d <= first_blocks}
            for name, p in self.encoder.named_parameters():
                if name in frozen:
                    p.requires_grad_(False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FinetunedEncoder:
        """Rebuild from :attr:`config` (random init allowed); the state dict then restores the weights."""
        config = {k: v for k, v in config.items() if k != "modality"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**{**config, "allow_random": True})

    def encoder_layer_ids(self) -> dict[str, int]:
        """Depth of every encoder parameter (``encoder.model.*``; 0 = input embedding, 1..L = blocks)."""
        return {f"encoder.{n}": d for n, d in self.encoder.layer_ids().items()}

    def input_encoders(self) -> dict[str, Any]:
        """The model's own encoder preprocesses ``batch[modality]``."""
        return {self.modality: self.encoder}

    def branch_parameters(self) -> dict[str, int]:
        """Parameters of the encoder and of the head (pooling head, and a learned layer weighting if any)."""
        return {
            "encoder": sum(p.numel() for p in self.encoder.parameters()),
            "head": sum(p.numel() for p in self.head.parameters()),
        }

    def pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, D), (B, T) -> (B, D)`` (``2 D`` for ``mean_std``)."""
        how = self.config["pooling"]
        if how == "mean_std":
            return mean_std_pool(hidden, mask)
        return hidden[:, 0] if how == "first" else masked_mean(hidden, mask)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Encode, pool, classify.

        Args:
            batch: ``batch[modality]`` = the encoder's ``preprocess`` output (``input_features`` for Whisper,
                ``input_ids`` / ``attention_mask`` for text).

        Returns:
            ``logits (B, C)``, ``probs``, ``hidden[m] (B, T, D)`` (zero at padding), ``masks[m]``, ``pooled[m]``.
        """
        m = self.modality
        if m not in batch:
            raise KeyError(
                f"{self.model_name} needs batch[{m!r}] (the encoder's preprocess output); keys: {sorted(batch)}"
            )
        out = self.encoder(**batch[m])
        mask = out.mask.bool()
        pooled = self.pool(out.hidden, mask)  # (B, D) or (B, 2 D)
        logits = self.head(pooled)  # (B, C)
        return ModelOutput(
            logits=logits,
            probs=logits.softmax(-1),
            modality_logits={m: logits},
            hidden={m: out.hidden},
            masks={m: mask},
            pooled={m: pooled},
        )


class FinetunedEncoderOptions(BaseModel):
    """Type-checked ``model:`` options of ``finetuned_encoder`` configs (see :class:`FinetunedEncoder`)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = "openai/whisper-tiny.en"
    modality: Literal["audio", "text"] | None = None  # written by the model (from the encoder); ignored when given
    num_classes: int = Field(default=4, ge=1)
    layer: int | Literal["weighted"] | None = None
    pooling: Literal["mean", "mean_std", "first"] = "mean"
    head_hidden: int | None = Field(default=None, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    freeze_front_end: bool = False
    freeze_layers: int = Field(default=0, ge=0)
    weights_dir: str | None = None
    encoder_options: dict[str, Any] = Field(default_factory=dict)
    allow_random: bool = False


register_model_options("finetuned_encoder", FinetunedEncoderOptions)


@register_model
def finetuned_encoder(**kwargs: Any) -> FinetunedEncoder:
    """A pretrained encoder + pooling head fine-tuned end to end (default: Whisper tiny.en, mean pooling)."""
    kwargs.pop("modality", None)  # derived from the encoder
    return FinetunedEncoder(**kwargs)
