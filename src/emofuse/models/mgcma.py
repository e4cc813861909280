"""MGCMA: multi-granularity cross-modal alignment of fine-tuned speech and text encoders.

Wang, Zhao, Sun, Wang, Zhou, Qin, "Enhancing Multimodal Emotion Recognition through Multi-Granularity
Cross-Modal Alignment" (Nankai University, 2024; no official code; spec ``mgcma.md``). IEMOCAP 4-class,
WA 78.87 % / UA 80.24 %. Data flow (§1, §2.6)::

    speech ─► wav2vec2-base ─► x_s (B, L_s, D)      text ─► bert-base-uncased ─► x_t (B, L_t, D)
    then the alignment modules in ``order`` (default DAM → TAM → IAM):
      DAM  per-modality distribution constructor (12-head MHSA, μ / σ branches, MAP ``DisTrans``) →
           token-wise Gaussians; pooled utterance Gaussians go to L_DA; the μ sequence flows on
      TAM  6 co-attention blocks (self- then cross-attention, 12 heads) → text-aware speech, speech-aware text
      IAM  no feature change: the pooled sequences at this point go to L_IA
    → masked mean of each stream → concat → Linear(2D, D) → ReLU → Dropout → Linear(D, C)

The model computes no loss (STYLE.md §3.5): :class:`~emofuse.tasks.mgcma.MGCMATask` adds
``L = L_DA + L_IA + L_CE`` from what :class:`~emofuse.models.base.ModelOutput` carries:

* ``extras["dist_mu"][m]``, ``extras["dist_sigma"][m]``: utterance-level Gaussians ``(B, D)`` (when DAM is in
  the order); ``extras["dist_tokens"][m] = (μ, σ)`` token-level ``(B, L_m, D)``;
* ``extras["iam"][m]``: the vectors ``(B, D)`` the instance loss sees (when IAM is in the order);
* ``pooled[m] (B, D)`` classifier inputs, ``hidden[m] (B, L_m, D)`` (zero at padding), ``masks``, ``logits``.

Sizes come from the encoders: ``D`` is their width (``dim`` adds projections when the widths differ); the
paper's 768 / 12 heads / 6 blocks are the defaults for the base encoders. Recommended choices of the spec (§7)
are the defaults; every listed alternative is an option (A2 ``freeze_feature_encoder`` / ``freeze_encoders``,
``audio_layer`` / ``text_layer``; A3 ``dist_pool``, ``speech_cls``, ``dam_output``; A4 ``dc_out_proj``,
``sigma_activation``; A6 ``tam_cross_kv``; A7 ``pool``; A9 ``share_weights``; A14 ``order``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from emofuse.config.schema import register_model_options
from emofuse.layers.coattention import CoAttentionStack
from emofuse.layers.distribution import DistributionConstructor
from emofuse.layers.pooling import masked_mean
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["MGCMA", "MGCMAOptions", "parse_order"]

_MODALITIES = ("audio", "text")
MODULES = ("dam", "tam", "iam")
DEFAULT_ORDER = ("dam", "tam", "iam")


def parse_order(order: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a module order: ``"DAM+TAM+IAM"``, ``"dam-tam"``, ``["tam", "iam"]`` or ``[]`` / ``"none"``.

    Raises:
        ValueError: Unknown or repeated module names (the message lists the valid ones).
    """
    if isinstance(order, str):
        parts = [p for p in re.split(r"[\s+,>\-→]+", order.strip().lower()) if p]
        parts = [] if parts == ["none"] else parts
    else:
        parts = [str(p).strip().lower() for p in order]
    bad = [p for p in parts if p not in MODULES]
    if bad or len(set(parts)) != len(parts):
        raise ValueError(f"order must list distinct modules among {MODULES} (or be empty), got {order!r}")
    return tuple(parts)


def _architecture_only(name: str, **options: Any) -> Any:
    """Encoder ``name`` built from its architecture config on the CPU without initialising weights (meta use)."""
    from transformers.initialization import no_init_weights

    from emofuse.encoders import get_encoder_spec
    from emofuse.encoders._registry import Resolution

    spec = get_encoder_spec(name)
    opts = {**spec.defaults, **{k: v for k, v in options.items() if v is not None}}
    if spec.pretrained:
        resolution = Resolution("random", "architecture only (meta device)")
    else:
        resolution = Resolution("handcrafted", "computed from the signal / a user file")
    with torch.device("cpu"), no_init_weights():
        return spec.builder(spec, resolution, **opts)


def _disable_layerdrop(encoder: nn.Module) -> None:
    """Switch off LayerDrop of a fine-tuned ``transformers`` encoder (wav2vec2-base ships 0.1).

    The paper mentions none, and a dropped layer also drops its entry from ``hidden_states``, which the
    encoder's layer selection cannot take. SpecAugment-style time masking (``mask_time_prob``) stays as configured.
    """
    config = getattr(getattr(encoder, "model", None), "config", None)
    if config is not None and float(getattr(config, "layerdrop", 0.0) or 0.0) > 0:
        config.layerdrop = 0.0


def _pool(x: Tensor, mask: Tensor, how: str) -> Tensor:
    """``(B, T, D) -> (B, D)``: masked mean, or the first position."""
    return x[:, 0] if how == "first" else masked_mean(x, mask)


class MGCMA(EmotionModel):
    """Speech + text encoders fine-tuned end to end, with DAM / TAM / IAM in a configurable order.

    Args:
        audio_encoder: Registered audio encoder (``facebook/wav2vec2-base``; A1 variant: another name).
        text_encoder: Registered text encoder (``bert-base-uncased``).
        order: Alignment modules in forward order (``("dam", "tam", "iam")``; Tables II/III rows drop or permute
            them; ``()`` is the plain encoder-fusion baseline S4).
        num_classes: Classes ``C``.
        dim: Model width ``D``; ``None``: the encoders' width (text encoder's when they differ; a linear
            projection is added for any encoder of another width).
        num_heads: Heads of the distribution constructors and TAM (12).
        tam_layers: TAM blocks (6).
        ffn_dim: TAM FFN inner size (``None``: ``4 D``).
        dropout: Dropout of the constructor, TAM and classifier (0.1).
        classifier_hidden: Classifier hidden size (``None``: ``D``).
        dc_out_proj: Output projection ``W^o`` before the μ/σ split (A4; MAP has none).
        sigma_activation: ``"exp"`` or ``"softplus"`` for σ (A4).
        dam_output: What DAM passes on: ``"mu"`` (the μ sequence) or ``"sample"`` (``μ + σ ⊙ ε`` in training, μ at
            evaluation, as MAP; A3).
        dist_pool: Token → utterance Gaussian reduction for L_DA: ``"mean"`` (masked mean of μ and σ) or
            ``"first"`` (first position: [CLS] for BERT, the learned token with ``speech_cls``) (A3).
        pool: Reduction for L_IA and the classifier: ``"mean"`` or ``"first"`` (A7).
        speech_cls: Prepend a learned [CLS] vector to the speech sequence (A3 alternative).
        tam_cross_kv: TAM cross-attention keys: ``"self"`` (same-block self-attention output) or ``"input"``
            (block input, METER) (A6).
        share_weights: One constructor and one TAM stack for both modalities (A9).
        freeze_encoders: Freeze both encoders (a cheap variant; the paper fine-tunes them).
        freeze_feature_encoder: Keep the wav2vec2 CNN front-end frozen while the rest is fine-tuned (A2).
        audio_layer: Audio encoder hidden layer (``None``: last; an index; ``"weighted"``).
        text_layer: Text encoder hidden layer.
        allow_random: Let encoders without local weights fall back to random init (loud warning).
    """

    modalities = _MODALITIES
    input_kind = "raw"
    export_limit = "holds whole fine-tuned speech and text encoders (the exporter covers CMD students)"

    def __init__(
        self,
        audio_encoder: str = "facebook/wav2vec2-base",
        text_encoder: str = "bert-base-uncased",
        order: str | Sequence[str] = DEFAULT_ORDER,
        num_classes: int = 4,
        dim: int | None = None,
        num_heads: int = 12,
        tam_layers: int = 6,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        classifier_hidden: int | None = None,
        dc_out_proj: bool = False,
        sigma_activation: str = "exp",
        dam_output: str = "mu",
        dist_pool: str = "mean",
        pool: str = "mean",
        speech_cls: bool = False,
        tam_cross_kv: str = "self",
        share_weights: bool = False,
        freeze_encoders: bool = False,
        freeze_feature_encoder: bool = False,
        audio_layer: int | str | None = None,
        text_layer: int | str | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        mods = parse_order(order)
        for name, value, allowed in (
            ("dam_output", dam_output, ("mu", "sample")),
            ("dist_pool", dist_pool, ("mean", "first")),
            ("pool", pool, ("mean", "first")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config: dict[str, Any] = dict(
            audio_encoder=audio_encoder,
            text_encoder=text_encoder,
            order=list(mods),
            num_classes=num_classes,
            dim=dim,
            num_heads=num_heads,
            tam_layers=tam_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            classifier_hidden=classifier_hidden,
            dc_out_proj=dc_out_proj,
            sigma_activation=sigma_activation,
            dam_output=dam_output,
            dist_pool=dist_pool,
            pool=pool,
            speech_cls=speech_cls,
            tam_cross_kv=tam_cross_kv,
            share_weights=share_weights,
            freeze_encoders=freeze_encoders,
            freeze_feature_encoder=freeze_feature_encoder,
            audio_layer=audio_layer,
            text_layer=text_layer,
            allow_random=allow_random,
        )
        self.order = mods
        from emofuse.encoders import create_encoder

        names = {"audio": audio_encoder, "text": text_encoder}
        layers = {"audio": audio_layer, "text": text_layer}
        meta = torch.get_default_device().type == "meta"
        encoders: dict[str, Any] = {}
        for m in _MODALITIES:
            extra: dict[str, Any] = {"freeze_feature_encoder": True} if m == "audio" and freeze_feature_encoder else {}
            if meta:  # parameter counting (`emofuse models`): the named architecture, nothing read or initialised
                enc = _architecture_only(names[m], layer=layers[m], **extra).freeze(freeze_encoders)
            else:
                enc = create_encoder(
                    names[m], layer=layers[m], frozen=freeze_encoders, allow_random=allow_random, **extra
                )
            if enc.modality != m:
                raise ValueError(f"{m}_encoder {names[m]!r} is a {enc.modality} encoder")
            _disable_layerdrop(enc)
            encoders[m] = enc
        self.encoders = nn.ModuleDict(encoders).to("meta") if meta else nn.ModuleDict(encoders)
        #: Which weights each encoder runs (written into results by the training engine).
        self.encoder_provenance: dict[str, dict[str, Any]] = {m: e.provenance.to_dict() for m, e in encoders.items()}
        widths = {m: int(e.output_dim) for m, e in encoders.items()}
        d = int(dim) if dim is not None else widths["text"]
        if d % num_heads:
            raise ValueError(f"model width {d} (from the encoders or dim=) is not divisible by num_heads={num_heads}")
        self.dim = d
        self.proj = nn.ModuleDict({m: nn.Identity() if w == d else nn.Linear(w, d) for m, w in widths.items()})
        self.cls_token = nn.Parameter(torch.randn(d) * 0.02) if speech_cls else None
        dc: dict[str, nn.Module] = {}
        if "dam" in mods:
            make = lambda: DistributionConstructor(d, num_heads, dropout, 4.0, dc_out_proj, sigma_activation)  # noqa: E731
            dc = {"shared": make()} if share_weights else {m: make() for m in _MODALITIES}
        self.dc = nn.ModuleDict(dc) if dc else None
        self.tam = (
            CoAttentionStack(d, num_heads, tam_layers, ffn_dim, dropout, tam_cross_kv, share_weights)
            if "tam" in mods
            else None
        )
        hidden = classifier_hidden or d
        self.classifier = nn.Sequential(
            nn.Linear(2 * d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MGCMA:
        """Rebuild from :attr:`config` (random init allowed); a state dict then restores the weights."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**{**config, "allow_random": True})

    def branch_parameters(self) -> dict[str, int]:
        """Parameters of each encoder, the DAM constructors, TAM and the head (projections, [CLS], classifier)."""

        def count(module: nn.Module | None) -> int:
            return 0 if module is None else sum(p.numel() for p in module.parameters())

        counts = {f"{m}_encoder": count(e) for m, e in self.encoders.items()}
        counts["dam"] = count(self.dc)
        counts["tam"] = count(self.tam)
        cls_n = 0 if self.cls_token is None else self.cls_token.numel()
        counts["head"] = count(self.proj) + count(self.classifier) + cls_n
        return counts

    def _constructor(self, modality: str) -> DistributionConstructor:
        assert self.dc is not None
        return self.dc["shared" if "shared" in self.dc else modality]  # type: ignore[return-value]

    def _encode(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        h, masks = {}, {}
        for m in _MODALITIES:
            if m not in batch:
                raise KeyError(f"MGCMA needs batch[{m!r}] (the {m} encoder's preprocess output); keys: {sorted(batch)}")
            out = self.encoders[m](**batch[m])
            h[m], masks[m] = self.proj[m](out.hidden), out.mask.bool()  # (B, L_m, D), (B, L_m)
        if self.cls_token is not None:
            b = h["audio"].shape[0]
            cls = self.cls_token.to(h["audio"].dtype).expand(b, 1, -1)  # (B, 1, D)
            h["audio"] = torch.cat([cls, h["audio"]], dim=1)
            masks["audio"] = torch.cat([masks["audio"].new_ones(b, 1), masks["audio"]], dim=1)
        return h, masks

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Encode, align in :attr:`order`, classify.

        Args:
            batch: ``batch["audio"]`` / ``batch["text"]`` = each encoder's ``preprocess`` dict.

        Returns:
            ``logits (B, C)``, ``probs``, ``hidden[m] (B, L_m, D)`` zero at padding, ``masks[m]``, ``pooled[m] (B, D)``
            and the loss inputs in ``extras`` (module docstring).
        """
        h, masks = self._encode(batch)
        cfg = self.config
        extras: dict[str, Any] = {"order": list(self.order)}
        for module in self.order:
            if module == "dam":
                gauss = {m: self._constructor(m)(h[m], masks[m]) for m in _MODALITIES}  # (μ, σ) (B, L_m, D)
                extras["dist_tokens"] = gauss
                extras["dist_mu"] = {m: _pool(mu, masks[m], cfg["dist_pool"]) for m, (mu, _) in gauss.items()}
                extras["dist_sigma"] = {m: _pool(s, masks[m], cfg["dist_pool"]) for m, (_, s) in gauss.items()}
                if cfg["dam_output"] == "sample" and self.training:
                    h = {m: mu + s * torch.randn_like(s) for m, (mu, s) in gauss.items()}
                else:
                    h = {m: mu for m, (mu, _) in gauss.items()}
            elif module == "tam":
                assert self.tam is not None
                h["audio"], h["text"] = self.tam(h["audio"], h["text"], masks["audio"], masks["text"])
            else:  # iam: a loss on the pooled features at this point; the features pass on unchanged
                extras["iam"] = {m: _pool(h[m], masks[m], cfg["pool"]) for m in _MODALITIES}
        pooled = {m: _pool(h[m], masks[m], cfg["pool"]) for m in _MODALITIES}  # (B, D)
        logits = self.classifier(torch.cat([pooled["audio"], pooled["text"]], dim=-1))  # (B, C)
        hidden = {m: h[m] * masks[m].unsqueeze(-1).to(h[m].dtype) for m in _MODALITIES}
        return ModelOutput(
            logits=logits, probs=logits.softmax(-1), hidden=hidden, masks=masks, pooled=pooled, extras=extras
        )


class MGCMAOptions(BaseModel):
    """Type-checked ``model:`` options of ``mgcma`` configs (see :class:`MGCMA`)."""

    model_config = ConfigDict(extra="forbid")

    audio_encoder: str = "facebook/wav2vec2-base"
    text_encoder: str = "bert-base-uncased"
    order: list[Literal["dam", "tam", "iam"]] = ["dam", "tam", "iam"]  # pydantic copies mutable defaults
    num_classes: int = Field(default=4, ge=1)
    dim: int | None = Field(default=None, gt=0)
    num_heads: int = Field(default=12, gt=0)
    tam_layers: int = Field(default=6, gt=0)
    ffn_dim: int | None = Field(default=None, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    classifier_hidden: int | None = Field(default=None, gt=0)
    dc_out_proj: bool = False
    sigma_activation: Literal["exp", "softplus"] = "exp"
    dam_output: Literal["mu", "sample"] = "mu"
    dist_pool: Literal["mean", "first"] = "mean"
    pool: Literal["mean", "first"] = "mean"
    speech_cls: bool = False
    tam_cross_kv: Literal["self", "input"] = "self"
    share_weights: bool = False
    freeze_encoders: bool = False
    freeze_feature_encoder: bool = False
    audio_layer: int | str | None = None
    text_layer: int | str | None = None
    allow_random: bool = False

    @field_validator("order", mode="before")
    @classmethod
    def _order(cls, v: Any) -> Any:
        return list(parse_order(v)) if isinstance(v, (str, list, tuple)) else v


register_model_options("mgcma", MGCMAOptions)


@register_model
def mgcma(**kwargs: Any) -> MGCMA:
    """MGCMA (DAM → TAM → IAM), wav2vec2-base + bert-base-uncased, fine-tuned end to end."""
    return MGCMA(**kwargs)
