"""MulT: the Multimodal Transformer baseline on frozen features, audio + text (and unimodal variants).

Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language Sequences", ACL 2019; code
``yaohungt/Multimodal-Transformer`` (``src/models.py``, ``modules/transformer.py``). The CMD paper (Kim & Kang
2022, specs/cmd.md §2.9) feeds it frozen MFCC + GloVe or frozen wav2vec 2.0 + BERT features and gives no
hyperparameters, so the repository defaults are used (spec A22):

* per modality: input dropout (text only, ``embed_dropout``), Conv1d projection to ``d = 30`` (kernel 1, no bias);
* crossmodal transformer (queries: target modality, keys/values: the other one), 5 pre-LN layers, 5 heads,
  embeddings scaled by ``sqrt(d)`` plus fairseq sinusoidal positions, then a self-attention ("memory")
  transformer of 5 layers on the result;
* attention dropout keyed to the key modality (text 0.1, audio 0.0), ReLU 0.1, residual 0.1, embedding 0.25,
  output 0.0; causal (future) mask on, as in the repository;
* the last time step of each stream (with padding: the last *valid* step), concatenated, a residual
  two-layer block and a linear layer to ``num_classes`` logits (single-label, spec §2.9 [R]; MulT's IEMOCAP
  head has 4 binary outputs instead).

Unimodal variants (``mult_audio``, ``mult_text``) are one single-modality transformer of the same size
(projection → ``num_layers`` self-attention layers → last valid step → the same head).

Batch: ``batch["features"] = {"audio": (B, T_a, D_a), "audio_mask": (B, T_a), "text": ..., "text_mask": ...}``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.layers.transformer import PreLNBlock, sinusoidal_positions
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["MulT", "MulTEncoder", "last_valid"]

_MODALITIES = ("audio", "text")


def last_valid(x: Tensor, mask: Tensor | None) -> Tensor:
    """The state at each sequence's last valid step.

    Args:
        x: ``(B, T, d)``.
        mask: ``(B, T)`` bool, True at valid steps (right padding), or ``None`` (all valid).

    Returns:
        ``(B, d)``; a row with no valid step gives its first step.
    """
    if mask is None:
        return x[:, -1]
    idx = (mask.long().sum(dim=1) - 1).clamp_min(0)  # (B,)
    return x[torch.arange(x.shape[0], device=x.device), idx]


class MulTEncoder(nn.Module):
    """MulT's ``TransformerEncoder``: scaled embeddings + positions, pre-LN layers, final LayerNorm.

    Args:
        dim: Model size ``d``.
        num_heads: Attention heads.
        num_layers: Layers.
        attn_dropout: Attention-weight dropout.
        relu_dropout: FFN dropout.
        res_dropout: Residual dropout.
        embed_dropout: Dropout on the (scaled + positioned) inputs.
        causal: MulT's future mask.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        attn_dropout: float = 0.1,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.dim, self.causal = dim, causal
        self.embed_scale = math.sqrt(dim)
        self.embed_drop = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            PreLNBlock(dim, num_heads, 4 * dim, attn_dropout, relu_dropout, res_dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: Tensor) -> Tensor:
        pos = sinusoidal_positions(x.shape[1], self.dim, style="fairseq", offset=1).to(x)  # (T, d)
        return self.embed_drop(self.embed_scale * x + pos)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, x_kv: Tensor | None = None, kv_mask: Tensor | None = None
    ) -> Tensor:
        """Encode ``x``; crossmodal when ``x_kv`` is given (keys and values from it).

        Args:
            x: Target stream ``(B, T, d)``.
            mask: ``(B, T)`` bool, True at valid steps.
            x_kv: Source stream ``(B, S, d)`` or ``None`` (self-attention).
            kv_mask: ``(B, S)`` bool.

        Returns:
            ``(B, T, d)``.
        """
        h = self._embed(x)  # (B, T, d)
        kv = None if x_kv is None else self._embed(x_kv)  # (B, S, d)
        for layer in self.layers:
            if kv is None:
                h = layer(h, q_mask=mask, causal=self.causal)
            else:
                h = layer(h, kv, kv, q_mask=mask, kv_mask=kv_mask, causal=self.causal)
        return self.norm(h)


class _Branch(nn.Module):
    """One target modality: projection, optional crossmodal transformer, self-attention transformer."""

    def __init__(self, input_dim: int, dim: int, kernel_size: int, cross: MulTEncoder | None, mem: MulTEncoder) -> None:
        super().__init__()
        if input_dim == dim and kernel_size == 1:
            self.proj: nn.Module = nn.Identity()  # as MulT: no projection when the sizes already agree
        else:
            self.proj = nn.Conv1d(input_dim, dim, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.cross = cross
        self.mem = mem

    def project(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # zero padding so a wide kernel cannot leak it
        if isinstance(self.proj, nn.Identity):
            return x
        return self.proj(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d)


class MulT(EmotionModel):
    """Multimodal Transformer (audio + text), or a single-modality transformer, on frozen features.

    Args:
        modalities: ``("audio", "text")`` (crossmodal MulT) or one modality (unimodal transformer).
        audio_dim: Audio feature size (80 for MFCC, 768 for wav2vec 2.0 Base).
        text_dim: Text feature size (300 for GloVe, 768 for BERT-base).
        num_classes: Output logits.
        dim: Model size per modality (MulT: 30).
        num_heads: Attention heads (5).
        num_layers: Layers per transformer (5).
        kernel_size: Conv1d projection kernel (1).
        attn_dropout_text: Attention dropout when the keys are text (0.1).
        attn_dropout_audio: Attention dropout when the keys are audio (0.0).
        relu_dropout: FFN dropout (0.1).
        res_dropout: Residual dropout (0.1).
        embed_dropout: Embedding dropout, also applied to the raw text features (0.25).
        out_dropout: Dropout in the output block (0.0).
        causal: Future mask in every layer (MulT default True).
    """

    export_limit = None  # exported with encoder features in (emofuse.inference.export_features)

    def __init__(
        self,
        modalities: tuple[str, ...] | list[str] = _MODALITIES,
        audio_dim: int = 80,
        text_dim: int = 300,
        num_classes: int = 4,
        dim: int = 30,
        num_heads: int = 5,
        num_layers: int = 5,
        kernel_size: int = 1,
        attn_dropout_text: float = 0.1,
        attn_dropout_audio: float = 0.0,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        out_dropout: float = 0.0,
        causal: bool = True,
    ) -> None:
        super().__init__()
        mods = tuple(modalities)
        if not mods or len(set(mods)) != len(mods) or any(m not in _MODALITIES for m in mods):
            raise ValueError(f"modalities must be 'audio', 'text' or both, got {modalities!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number (length-preserving), got {kernel_size}")
        self.config: dict[str, Any] = dict(
            modalities=list(mods),
            audio_dim=audio_dim,
            text_dim=text_dim,
            num_classes=num_classes,
            dim=dim,
            num_heads=num_heads,
            num_layers=num_layers,
            kernel_size=kernel_size,
            attn_dropout_text=attn_dropout_text,
            attn_dropout_audio=attn_dropout_audio,
            relu_dropout=relu_dropout,
            res_dropout=res_dropout,
            embed_dropout=embed_dropout,
            out_dropout=out_dropout,
            causal=causal,
        )
        self.modalities = mods  # type: ignore[misc]  # instance-level: this model's variant
        input_dims = {"audio": audio_dim, "text": text_dim}
        attn_drop = {"audio": attn_dropout_audio, "text": attn_dropout_text}
        self.causal, self.embed_dropout = causal, embed_dropout

        def encoder(key_modality: str) -> MulTEncoder:
            return MulTEncoder(
                dim, num_heads, num_layers, attn_drop[key_modality], relu_dropout, res_dropout, embed_dropout, causal
            )

        branches = {}
        for m in mods:
            others = [o for o in mods if o != m]
            cross = encoder(others[0]) if others else None
            branches[m] = _Branch(input_dims[m], dim, kernel_size, cross, encoder(m))
        self.branches = nn.ModuleDict(branches)
        combined = dim * len(mods)
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out = nn.Linear(combined, num_classes)
        self.out_drop = nn.Dropout(out_dropout)

    def _branch(self, modality: str) -> _Branch:
        return cast(_Branch, self.branches[modality])

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MulT:
        """Rebuild from :attr:`config` (the state dict then restores the weights)."""
        return cls(**config)

    def branch_parameters(self) -> dict[str, int]:
        """Parameters per modality branch and of the output head."""
        counts = {m: sum(p.numel() for p in b.parameters()) for m, b in self.branches.items()}
        counts["head"] = sum(p.numel() for mod in (self.proj1, self.proj2, self.out) for p in mod.parameters())
        return counts

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Classify from frozen features.

        Args:
            batch: With ``features`` holding ``<modality> (B, T, D)`` and optional ``<modality>_mask (B, T)``.

        Returns:
            ``logits (B, C)``, ``probs``, per-modality ``hidden (B, T, d)``, ``masks``, ``pooled (B, d)``.
        """
        feats = batch["features"]
        x, masks = {}, {}
        for m in self.modalities:
            if m not in feats:
                raise KeyError(f"MulT needs batch['features'][{m!r}] (frozen {m} features)")
            xm = feats[m]  # (B, T, D)
            mask = feats.get(f"{m}_mask")
            masks[m] = mask.bool() if mask is not None else torch.ones(xm.shape[:2], dtype=torch.bool, device=xm.device)
            if m == "text":  # MulT drops raw text features with the embedding dropout rate
                xm = F.dropout(xm, p=self.embed_dropout, training=self.training)
            x[m] = self._branch(m).project(xm, masks[m])  # (B, T, d)
        hidden, pooled = {}, {}
        for m in self.modalities:
            branch = self._branch(m)
            h = x[m]
            if branch.cross is not None:
                o = next(o for o in self.modalities if o != m)
                h = branch.cross(h, masks[m], x[o], masks[o])  # (B, T_m, d): m queries o
            h = branch.mem(h, masks[m])  # (B, T_m, d)
            hidden[m] = h * masks[m].unsqueeze(-1).to(h.dtype)
            pooled[m] = last_valid(h, masks[m])  # (B, d)
        last = torch.cat([pooled[m] for m in self.modalities], dim=-1)  # (B, d * M)
        last = last + self.proj2(self.out_drop(F.relu(self.proj1(last))))
        logits = self.out(last)  # (B, C)
        return ModelOutput(logits=logits, probs=logits.softmax(-1), hidden=hidden, masks=masks, pooled=pooled)


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> MulT:
    return MulT(**{**defaults, **overrides})


@register_model
def mult(**kwargs: Any) -> MulT:
    """MulT, audio + text (defaults: MFCC-80 + GloVe-300; ``audio_dim=768, text_dim=768`` for wav2vec2 + BERT)."""
    return _build(dict(modalities=("audio", "text")), kwargs)


@register_model
def mult_audio(**kwargs: Any) -> MulT:
    """Single-modality transformer on audio features (default MFCC-80)."""
    return _build(dict(modalities=("audio",)), kwargs)


@register_model
def mult_text(**kwargs: Any) -> MulT:
    """Single-modality transformer on text features (default GloVe-300)."""
    return _build(dict(modalities=("text",)), kwargs)
