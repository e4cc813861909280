"""Intra- vs cross-attention tri-modal fusion (text, video, audio) on frozen features.

Rajan, "Learning from Audio, Vision and Language Modalities for Affect Recognition Tasks", PhD thesis, QMUL 2022,
Ch. 4, and Rajan, Brutti & Cavallaro, "Is Cross-Attention Preferable to Self-Attention for Multi-Modal Emotion
Recognition?", ICASSP 2022; code ``smartcameras/SelfCrossAttn`` (``TVAModel_Self`` / ``TVAModel_Cross``).
Specs: ``specs/rajan-thesis.md`` §3.2. Per modality (IEMOCAP inputs of the thesis):

* text: GloVe-300, 128 tokens, input dropout 0.25 [C], no shortening;
* video: ResNet-101 2048-d at 3 Hz, 32 frames, shortened to 25 by :class:`~emofuse.layers.fusion.TimeMixing`
  (``Conv1d(32, 25, 1)`` with the frames as channels);
* audio: MFCC + Δ + ΔΔ 120-d, 1000 frames, shortened to 500 (``Conv1d(1000, 500, 1)``);

then a one-layer bi-GRU (60 per direction, ``e_m (B, T', 120)``). **Intra**: one multi-head attention per
modality (``Q = K = V = e_m``, 6 heads, attention dropout 0.1, output projection, no residual / LayerNorm / FFN);
**cross**: one per ordered pair ``X2Y`` = ``MHA(query = e_Y, key = value = e_X)`` (V2T, A2T, T2V, A2V, T2A, V2A).
Each attention output is averaged over time; the ``K`` vectors (3 or 6) are stacked and their element-wise mean
and unbiased std across ``K`` ("statistical pooling", SP) give 240 values, then ``Linear(240, 60)`` and
``Linear(60, 7)`` with no non-linearity between them [C]. The softmax is the loss's.

Parameters (PyTorch GRUs carry two bias vectors; spec §3.2, asserted by the tests): text bi-GRU 130,320, video
bi-GRU 759,600, audio bi-GRU 65,520, audio conv 500,500, video conv 825, each attention 58,080, FC1 14,460,
FC2 427: **intra 1,645,892**, **cross 1,820,132**.

Choices (each a constructor option): ``masking=False`` follows the code (zero-padded steps take part in
attention and the time averages; ``True`` masks them for the modalities that are not shortened, and packs the
GRU); a modality absent from a sample (no key in ``batch["features"]``, an all-False mask, or
``batch["present"][m]`` False) is left out of the statistical pooling (``missing="exclude"``) — ``"zero"`` instead
feeds it as zeros like any input, which is what the thesis' Table 4.4 does; SP over a single vector gives std 0
(``single_std="zero"``, spec §3.5.1) or drops the std half (``"drop"``); ``pooling="concat"`` is the noSP variant;
``attention="cross_intra"`` concatenates both models' SP outputs (480-d) before one classifier.

Batch: ``batch["features"] = {"text": (B, T, 300), "text_mask": (B, T) bool, "video": ..., "audio": ...}``;
optionally ``batch["present"] = {m: (B,) bool}`` and ``batch["latent_override"] = {m: (B, 120)}`` (KNN imputation
of a missing modality's vector at the input of SP, intra attention only; the modality then counts as present).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emofuse.layers.fusion import TimeMixing, fix_length, statistical_pooling
from emofuse.layers.pooling import masked_mean
from emofuse.layers.transformer import MultiHeadAttention, attention_mask
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["CROSS_PAIRS", "MODALITIES", "TriFusion", "pair_modalities"]

#: Modalities in the thesis' order (T, V, A).
MODALITIES = ("text", "video", "audio")
_LETTER = {"T": "text", "V": "video", "A": "audio"}
#: Cross-attention modules ``X2Y`` (source X = keys/values, target Y = queries), in the code's order.
CROSS_PAIRS = ("V2T", "A2T", "T2V", "A2V", "T2A", "V2A")
_ATTENTION = ("intra", "cross", "cross_intra")


def pair_modalities(pair: str) -> tuple[str, str]:
    """``"V2T"`` → ``("video", "text")``: (source = keys/values, target = queries)."""
    if len(pair) != 3 or pair[1] != "2" or pair[0] not in _LETTER or pair[2] not in _LETTER or pair[0] == pair[2]:
        raise ValueError(f"cross-attention pair must look like 'V2T' (letters T, V, A; two different), got {pair!r}")
    return _LETTER[pair[0]], _LETTER[pair[2]]


class _Encoder(nn.Module):
    """One modality: input dropout, optional time-as-channel shortening, one-layer bi-GRU."""

    def __init__(self, input_dim: int, length: int, short: int | None, hidden: int, dropout: float) -> None:
        super().__init__()
        self.length, self.short = length, short
        self.drop = nn.Dropout(dropout)
        self.shorten = TimeMixing(length, short) if short else None
        self.gru = nn.GRU(input_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, mask: Tensor, present: Tensor, packed: bool) -> tuple[Tensor, Tensor]:
        """``x (B, L, D)`` (zeros at invalid steps) → ``e (B, T', 2H)`` and its step mask ``(B, T')``."""
        x = self.drop(x)
        if self.shorten is not None:
            x = self.shorten(x)  # (B, T', D): every output step mixes all input steps
            mask = present.unsqueeze(1).expand(-1, x.shape[1])  # (B, T')
        if packed and self.shorten is None:
            lengths = mask.sum(1).clamp_min(1).cpu()
            seq = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(seq)
            e, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, L, 2H)
        else:
            e, _ = self.gru(x)  # (B, T', 2H)
        return e, mask


class TriFusion(EmotionModel):
    """Intra-, cross- or cross+intra-attention fusion of up to three modalities (thesis Ch. 4).

    Args:
        attention: ``"intra"`` (one self-attention per modality), ``"cross"`` (one per pair) or ``"cross_intra"``.
        modalities: Modalities used (subset of ``text``, ``video``, ``audio``); for cross attention the pairs
            among them (default all ordered pairs). Cross attention needs two modalities.
        pairs: Cross-attention modules to keep (``["T2V", "A2V"]``, Table 4.3); their modalities must be in
            ``modalities``. ``None``: every ordered pair of ``modalities``.
        text_dim: Text feature size (GloVe 300).
        video_dim: Visual feature size (ResNet-101 2048).
        audio_dim: Audio feature size (MFCC + Δ + ΔΔ 120).
        text_len: Text steps (inputs are cropped or zero-padded to it; 128).
        video_len: Visual steps (32).
        audio_len: Audio steps (1000).
        text_short: Text length after shortening (``None``: no shortening, the thesis' choice).
        video_short: Visual length after shortening (25; ``None``: none).
        audio_short: Audio length after shortening (500; ``None``: none).
        hidden: GRU size per direction ``H`` (60); attention size is ``2 H``.
        num_heads: Attention heads (6).
        attn_dropout: Attention-weight dropout (0.1).
        text_dropout: Dropout on the text embeddings (0.25 [C]).
        video_dropout: Dropout on the visual inputs (0).
        audio_dropout: Dropout on the audio inputs (0).
        fc_dim: First classifier layer size (``None``: ``H``).
        fc_activation: ``"none"`` (the code) or ``"relu"`` between the two classifier layers.
        pooling: ``"sp"`` (mean + std across the attention vectors) or ``"concat"`` (noSP).
        single_std: SP over one vector: ``"zero"`` (std 0) or ``"drop"`` (classifier sees the mean only).
        masking: Mask padded steps in attention, time averages and the GRU (not the code's behaviour).
        missing: Absent modalities: ``"exclude"`` from SP, or ``"zero"`` (fed as zeros, as in Table 4.4).
        num_classes: Classes (7).
    """

    def __init__(
        self,
        attention: str = "intra",
        modalities: tuple[str, ...] | list[str] = MODALITIES,
        pairs: list[str] | tuple[str, ...] | None = None,
        text_dim: int = 300,
        video_dim: int = 2048,
        audio_dim: int = 120,
        text_len: int = 128,
        video_len: int = 32,
        audio_len: int = 1000,
        text_short: int | None = None,
        video_short: int | None = 25,
        audio_short: int | None = 500,
        hidden: int = 60,
        num_heads: int = 6,
        attn_dropout: float = 0.1,
        text_dropout: float = 0.25,
        video_dropout: float = 0.0,
        audio_dropout: float = 0.0,
        fc_dim: int | None = None,
        fc_activation: str = "none",
        pooling: str = "sp",
        single_std: str = "zero",
        masking: bool = False,
        missing: str = "exclude",
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        if attention not in _ATTENTION:
            raise ValueError(f"attention must be one of {_ATTENTION}, got {attention!r}")
        mods = tuple(m for m in MODALITIES if m in modalities)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not mods or len(mods) != len(tuple(modalities)):
            raise ValueError(f"modalities must be distinct names among {MODALITIES}, got {modalities!r}")
        for name, value, allowed in (
            ("fc_activation", fc_activation, ("none", "relu")),
            ("pooling", pooling, ("sp", "concat")),
            ("single_std", single_std, ("zero", "drop")),
            ("missing", missing, ("exclude", "zero")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        cross_pairs: tuple[str, ...] = ()
        if attention != "intra":
            if pairs is None:
                cross_pairs = tuple(p for p in CROSS_PAIRS if all(m in mods for m in pair_modalities(p)))
            else:
                cross_pairs = tuple(pairs)
                for p in cross_pairs:
                    outside = [m for m in pair_modalities(p) if m not in mods]
                    if outside:
                        raise ValueError(f"pair {p!r} needs modalities {outside}, not in {list(mods)}")
                if len(set(cross_pairs)) != len(cross_pairs):
                    raise ValueError(f"pairs must be distinct, got {list(cross_pairs)}")
            if not cross_pairs:
                raise ValueError(f"cross attention needs two modalities (there is no unimodal cross model), got {mods}")
        elif pairs is not None:
            raise ValueError("pairs only applies to attention='cross' or 'cross_intra'")
        self.config: dict[str, Any] = dict(
            attention=attention,
            modalities=list(mods),
            pairs=list(pairs) if pairs is not None else None,
            text_dim=text_dim,
            video_dim=video_dim,
            audio_dim=audio_dim,
            text_len=text_len,
            video_len=video_len,
            audio_len=audio_len,
            text_short=text_short,
            video_short=video_short,
            audio_short=audio_short,
            hidden=hidden,
            num_heads=num_heads,
            attn_dropout=attn_dropout,
            text_dropout=text_dropout,
            video_dropout=video_dropout,
            audio_dropout=audio_dropout,
            fc_dim=fc_dim,
            fc_activation=fc_activation,
            pooling=pooling,
            single_std=single_std,
            masking=masking,
            missing=missing,
            num_classes=num_classes,
        )
        self.modalities = mods  # type: ignore[misc]  # instance-level: this model's variant
        self.attention, self.pairs = attention, cross_pairs
        self.pooling, self.single_std, self.masking, self.missing = pooling, single_std, masking, missing
        self.dim = 2 * hidden
        spec = {
            "text": (text_dim, text_len, text_short, text_dropout),
            "video": (video_dim, video_len, video_short, video_dropout),
            "audio": (audio_dim, audio_len, audio_short, audio_dropout),
        }
        self.input_dims = {m: spec[m][0] for m in mods}
        self.lengths = {m: spec[m][1] for m in mods}
        self.encoders = nn.ModuleDict({m: _Encoder(*spec[m][:3], hidden, spec[m][3]) for m in mods})
        intra_mods = mods if attention in ("intra", "cross_intra") else ()
        self.intra = nn.ModuleDict({m: MultiHeadAttention(self.dim, num_heads, attn_dropout) for m in intra_mods})
        self.cross = nn.ModuleDict({p: MultiHeadAttention(self.dim, num_heads, attn_dropout) for p in cross_pairs})
        groups = [len(g) for g in (self.intra, self.cross) if len(g)]
        if pooling == "concat":
            head_in = self.dim * sum(groups)
        else:
            head_in = sum(self.dim * (1 if k == 1 and single_std == "drop" else 2) for k in groups)
        fc = fc_dim or hidden
        self.fc1 = nn.Linear(head_in, fc)
        self.fc2 = nn.Linear(fc, num_classes)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TriFusion:
        """Rebuild from :attr:`config` (the state dict then restores the weights)."""
        return cls(**config)

    def branch_parameters(self) -> dict[str, int]:
        """Parameters per modality encoder (conv + bi-GRU), per attention module and of the classifier."""

        def n(mod: nn.Module) -> int:
            return sum(p.numel() for p in mod.parameters())

        counts = {m: n(e) for m, e in self.encoders.items()}
        counts.update({f"intra_{m}": n(a) for m, a in self.intra.items()})
        counts.update({f"cross_{p}": n(a) for p, a in self.cross.items()})
        counts["head"] = n(self.fc1) + n(self.fc2)
        return counts

    # ------------------------------------------------------------------------------------------ pieces

    def _inputs(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Fixed-length inputs ``(B, L_m, D_m)``, their masks and per-sample presence ``(B,)`` per modality."""
        feats = batch.get("features") or {}
        given = [m for m in self.modalities if m in feats]
        if not given:
            raise KeyError(f"tri-modal fusion needs batch['features'][m] for at least one of {list(self.modalities)}")
        ref = feats[given[0]]
        B, device, dtype = ref.shape[0], ref.device, ref.dtype
        present_in = batch.get("present") or {}
        x, masks, present = {}, {}, {}
        for m in self.modalities:
            if m in feats:
                xm = feats[m]
                if xm.ndim != 3 or xm.shape[-1] != self.input_dims[m]:
                    raise ValueError(
                        f"batch['features'][{m!r}] must be (B, T, {self.input_dims[m]}), got {tuple(xm.shape)}"
                    )
                mask = feats.get(f"{m}_mask")
                mask = mask.bool() if mask is not None else torch.ones(xm.shape[:2], dtype=torch.bool, device=device)
            else:  # absent from the whole batch
                xm = torch.zeros(B, 1, self.input_dims[m], device=device, dtype=dtype)
                mask = torch.zeros(B, 1, dtype=torch.bool, device=device)
            if m in present_in:
                mask = mask & present_in[m].bool().to(device).unsqueeze(1)
            x[m], masks[m] = fix_length(xm, mask, self.lengths[m])
            present[m] = masks[m].any(dim=1)  # (B,)
        return x, masks, present

    def _attend(self, mha: nn.Module, q: Tensor, q_mask: Tensor, kv: Tensor, kv_mask: Tensor) -> Tensor:
        """Attention, then the time average over the query steps: ``(B, 2H)``."""
        if self.masking:
            out = mha(q, kv, kv, attention_mask(q.shape[1], kv.shape[1], kv_mask))  # (B, T_q, 2H)
            return masked_mean(out, q_mask)
        return mha(q, kv, kv).mean(dim=1)

    def encode(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Encoders and attention modules up to the input of statistical pooling.

        Returns:
            ``{"hidden": {m: (B, T'_m, 2H)}, "masks": {m: (B, T'_m)}, "present": {m: (B,)}, "groups": [(names,
            vectors (B, K, 2H), weights (B, K))]}`` with one group for intra and/or one for cross attention.
        """
        x, in_masks, present = self._inputs(batch)
        hidden, masks = {}, {}
        for m in self.modalities:
            hidden[m], masks[m] = self.encoders[m](x[m], in_masks[m], present[m], self.masking)
        groups = []
        if len(self.intra):
            override = batch.get("latent_override") or {}
            names, vecs, weights = [], [], []
            for m in self.modalities:
                v = self._attend(self.intra[m], hidden[m], masks[m], hidden[m], masks[m])  # (B, 2H)
                w = present[m]
                if m in override:
                    v, w = override[m].to(v), torch.ones_like(w)
                names.append(m)
                vecs.append(v)
                weights.append(w)
            groups.append((names, torch.stack(vecs, 1), torch.stack(weights, 1)))
        if len(self.cross):
            if batch.get("latent_override"):
                raise ValueError("latent_override (KNN imputation of a modality vector) needs intra attention")
            names, vecs, weights = [], [], []
            for p in self.pairs:
                src, tgt = pair_modalities(p)
                v = self._attend(self.cross[p], hidden[tgt], masks[tgt], hidden[src], masks[src])  # (B, 2H)
                names.append(p)
                vecs.append(v)
                weights.append(present[src] & present[tgt])
            groups.append((names, torch.stack(vecs, 1), torch.stack(weights, 1)))
        return {"hidden": hidden, "masks": masks, "present": present, "groups": groups}

    def _pool(self, vectors: Tensor, weights: Tensor) -> Tensor:
        w = weights.to(vectors.dtype) if self.missing == "exclude" else torch.ones_like(weights, dtype=vectors.dtype)
        if self.pooling == "concat":
            return (vectors * w.unsqueeze(-1)).flatten(1)  # (B, K * 2H)
        sp = statistical_pooling(vectors, w)  # (B, 4H)
        if vectors.shape[1] == 1 and self.single_std == "drop":
            return sp[:, : self.dim]
        return sp

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Classify.

        Args:
            batch: ``features[m] (B, T_m, D_m)`` and ``features[m_mask] (B, T_m)`` for the model's modalities (an
                absent one may be left out), optional ``present[m] (B,)`` and ``latent_override[m] (B, 2H)``.

        Returns:
            ``logits (B, C)``, ``probs``, ``hidden[m] (B, T'_m, 2H)`` with ``masks[m]``, ``pooled[m] (B, 2H)`` (the
            intra-attention vectors at the input of SP, when there are any) and ``extras``: ``vectors {name: (B,
            2H)}``, ``weights {name: (B,)}``, ``present {m: (B,)}``.
        """
        enc = self.encode(batch)
        fused, vectors, weights = [], {}, {}
        for names, vecs, w in enc["groups"]:
            fused.append(self._pool(vecs, w))
            for k, name in enumerate(names):
                vectors[name], weights[name] = vecs[:, k], w[:, k]
        z = self.fc1(torch.cat(fused, dim=-1))  # (B, fc)
        if self.config["fc_activation"] == "relu":
            z = F.relu(z)
        logits = self.fc2(z)  # (B, C)
        pooled = {m: vectors[m] for m in self.modalities if m in self.intra}
        return ModelOutput(
            logits=logits,
            probs=logits.softmax(-1),
            hidden=enc["hidden"],
            masks=enc["masks"],
            pooled=pooled,
            extras={"vectors": vectors, "weights": weights, "present": enc["present"]},
        )


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> TriFusion:
    return TriFusion(**{**defaults, **overrides})


@register_model
def tri_fusion_intra(**kwargs: Any) -> TriFusion:
    """Intra-attention (self-attention) tri-modal fusion, text + video + audio (≈ 1.65 M parameters, 7 classes)."""
    return _build(dict(attention="intra"), kwargs)


@register_model
def tri_fusion_cross(**kwargs: Any) -> TriFusion:
    """Cross-attention tri-modal fusion, six pair modules (≈ 1.82 M parameters, 7 classes)."""
    return _build(dict(attention="cross"), kwargs)


@register_model
def tri_fusion_cross_intra(**kwargs: Any) -> TriFusion:
    """Cross + intra attention: both SP outputs (480-d) concatenated before one classifier (Table 4.2)."""
    return _build(dict(attention="cross_intra"), kwargs)
