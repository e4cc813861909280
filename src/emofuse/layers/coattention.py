"""Two-stream co-attention: each block runs self-attention, then cross-attention to the other stream, then an FFN.

The token alignment module (TAM) of MGCMA (Wang et al., spec ``mgcma.md`` §2.4), realised as the METER / MAP
``BertCrossLayer`` stack (post-LN BERT sub-layers, GELU FFN, dropout 0.1). For streams ``A`` and ``B``, per block::

    A_sa = LN(A + MHSA(A))                      B_sa = LN(B + MHSA(B))
    A_ca = LN(A_sa + MHA(A_sa, K=V=B_sa))       B_ca = LN(B_sa + MHA(B_sa, K=V=A_sa))
    A    = LN(A_ca + FFN(A_ca))                 B    = LN(B_ca + FFN(B_ca))

``cross_kv="self"`` (default, the paper's wording) takes the cross-attention keys/values from the other stream's
self-attended output of the same block; ``"input"`` takes them from the other stream's block input (METER).
Key-padding masks are applied in every attention, so padding never changes the outputs at valid positions.
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.layers.transformer import MultiHeadAttention, attention_mask

__all__ = ["CoAttentionLayer", "CoAttentionStack"]


class CoAttentionLayer(nn.Module):
    """One stream's block: post-LN self-attention, cross-attention and GELU FFN sub-layers.

    Args:
        dim: Model size ``d``.
        num_heads: Attention heads.
        ffn_dim: FFN inner size (``None``: ``4 d``).
        dropout: Dropout on attention weights, residual branches and after the GELU.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        ffn = ffn_dim or 4 * dim
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def self_part(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``LN(x + MHSA(x))``: ``(B, T, d) -> (B, T, d)``."""
        allowed = attention_mask(x.shape[1], x.shape[1], mask, device=x.device)
        return self.norm1(x + self.drop(self.self_attn(x, x, x, allowed)))

    def cross_part(self, x: Tensor, other: Tensor, other_mask: Tensor | None) -> Tensor:
        """Cross-attention to ``other (B, S, d)`` then the FFN: ``(B, T, d) -> (B, T, d)``."""
        allowed = attention_mask(x.shape[1], other.shape[1], other_mask, device=x.device)
        u = self.norm2(x + self.drop(self.cross_attn(x, other, other, allowed)))
        y = self.fc2(self.drop(F.gelu(self.fc1(u))))
        return self.norm3(u + self.drop(y))


class CoAttentionStack(nn.Module):
    """``num_layers`` co-attention blocks over two streams (separate weights per stream unless ``shared``).

    Args:
        dim: Model size ``d`` of both streams.
        num_heads: Attention heads.
        num_layers: Blocks (MGCMA: 6).
        ffn_dim: FFN inner size (``None``: ``4 d``).
        dropout: Dropout.
        cross_kv: ``"self"`` (the other stream's same-block self-attention output) or ``"input"`` (its block input).
        shared: One set of blocks for both streams (spec A9 alternative).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int = 6,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        cross_kv: str = "self",
        shared: bool = False,
    ) -> None:
        super().__init__()
        if cross_kv not in ("self", "input"):
            raise ValueError(f"cross_kv must be 'self' or 'input', got {cross_kv!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.cross_kv = cross_kv

        def stack() -> nn.ModuleList:
            return nn.ModuleList(CoAttentionLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))

        self.layers_a = stack()
        self.layers_b = None if shared else stack()

    def forward(
        self, a: Tensor, b: Tensor, mask_a: Tensor | None = None, mask_b: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the blocks.

        Args:
            a: Stream A ``(B, T_a, d)`` (MGCMA: speech).
            b: Stream B ``(B, T_b, d)`` (text).
            mask_a: ``(B, T_a)`` bool, True at valid steps.
            mask_b: ``(B, T_b)`` bool.

        Returns:
            ``(B, T_a, d)`` B-aware A and ``(B, T_b, d)`` A-aware B; padded positions unspecified.
        """
        layers_b = self.layers_b if self.layers_b is not None else self.layers_a
        for layer_a, layer_b in zip(self.layers_a, layers_b, strict=True):
            la, lb = cast(CoAttentionLayer, layer_a), cast(CoAttentionLayer, layer_b)
            a_sa, b_sa = la.self_part(a, mask_a), lb.self_part(b, mask_b)
            kv_a, kv_b = (a_sa, b_sa) if self.cross_kv == "self" else (a, b)
            a, b = la.cross_part(a_sa, kv_b, mask_b), lb.cross_part(b_sa, kv_a, mask_a)
        return a, b
