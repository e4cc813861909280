"""Transformer blocks with key-padding masks: the CMD post-LN block and the MulT pre-LN block.

* :class:`PostLNBlock` is Algorithm 1 of Kim & Kang (2022), "Cross-modal distillation with audio–text fusion
  for fine-grained emotion classification using BERT and Wav2vec 2.0" (Neurocomputing 506): queries from
  ``x_q``, keys/values from ``x_k``/``x_v``, residual on the *query* input, LayerNorm after each residual.
* :class:`PreLNBlock` is the crossmodal/self-attention layer of MulT (Tsai et al., ACL 2019,
  ``yaohungt/Multimodal-Transformer``, ``modules/transformer.py``): LayerNorm before attention (applied to
  queries, keys and values) and before the FFN.

Both take boolean key-padding masks (True = valid step) for the query and the key side. A padded key never
receives attention, so padding never changes the outputs at valid query positions; outputs at padded query
positions are unspecified (callers ignore or zero them). No causal mask unless ``causal=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "PostLNBlock", "PreLNBlock", "attention_mask", "sinusoidal_positions"]


def sinusoidal_positions(
    length: int, dim: int, *, style: str = "vaswani", offset: int = 0, base: float = 10000.0
) -> Tensor:
    """Fixed sinusoidal position encodings.

    Args:
        length: Number of positions ``T``.
        dim: Encoding size ``d`` (odd sizes get a zero last channel).
        style: ``"vaswani"`` (Vaswani et al. 2017: ``sin`` at even, ``cos`` at odd channels, frequencies
            ``base^(-2i/d)``) or ``"fairseq"`` (MulT/fairseq: ``[sin | cos]`` halves, frequencies
            ``base^(-i/(d/2 - 1))``).
        offset: First position index (MulT/fairseq start at ``padding_idx + 1 = 1``).
        base: Wavelength base.

    Returns:
        ``(T, d)`` float32 tensor on the default device.
    """
    if style not in ("vaswani", "fairseq"):
        raise ValueError(f"style must be 'vaswani' or 'fairseq', got {style!r}")
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    half = dim // 2
    pos = torch.arange(offset, offset + length, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    out = torch.zeros(length, dim)
    if half == 0:
        return out
    if style == "vaswani":
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * (-2.0 * math.log(base) / dim))  # (d/2,)
        out[:, 0 : 2 * half : 2] = torch.sin(pos * freq)
        out[:, 1 : 2 * half : 2] = torch.cos(pos * freq)
    else:
        freq = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(base) / max(half - 1, 1)))
        out[:, :half] = torch.sin(pos * freq)
        out[:, half : 2 * half] = torch.cos(pos * freq)
    return out


def attention_mask(
    q_len: int,
    k_len: int,
    kv_mask: Tensor | None = None,
    causal: bool = False,
    q_mask: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Boolean attention mask (True = may attend) combining key padding and an optional causal mask.

    The causal mask follows MulT's ``buffered_future_mask``: query ``i`` may attend key ``j`` when
    ``j <= i + |k_len - q_len|``. With both masks given, the offset uses each sample's *valid* lengths, so
    padding never changes the mask of valid steps (MulT itself only sees unpadded lengths). A query row with
    no allowed key is opened to every key (its output is unspecified anyway) so that softmax never gives NaN.

    Args:
        q_len: Query length ``T_q``.
        k_len: Key length ``T_k``.
        kv_mask: ``(B, T_k)`` bool, True at valid keys, or ``None``.
        causal: Add the future mask.
        q_mask: ``(B, T_q)`` bool, True at valid queries (only used for the causal offset).
        device: Device of the mask when ``kv_mask`` is ``None``.

    Returns:
        ``(B or 1, 1, T_q, T_k)`` bool, or ``None`` when nothing is masked.
    """
    if kv_mask is None and not causal:
        return None
    device = kv_mask.device if kv_mask is not None else device
    allowed = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
    if kv_mask is not None:
        allowed = allowed & kv_mask.bool()[:, None, None, :]  # (B, 1, T_q, T_k)
    if causal:
        if kv_mask is not None and q_mask is not None:
            offset = (kv_mask.sum(-1) - q_mask.sum(-1)).abs()[:, None, None, None]  # (B, 1, 1, 1)
        else:
            offset = torch.tensor(abs(k_len - q_len), device=device)
        i = torch.arange(q_len, device=device)[:, None]  # (T_q, 1)
        j = torch.arange(k_len, device=device)[None, :]  # (1, T_k)
        allowed = allowed & (j <= i + offset)
    return allowed | ~allowed.any(dim=-1, keepdim=True)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    """The FFN non-linearity ``name`` (``relu`` or ``gelu``, exact erf form as in BERT and Whisper)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with separate query, key and value inputs.

    Parameters: ``W_q, W_k, W_v, W_h``, each ``d x d`` with bias: ``4 (d^2 + d)``.

    Args:
        dim: Model size ``d``.
        num_heads: Heads ``h`` (``d_h = d / h``).
        dropout: Dropout on the attention weights.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x_q: Tensor, x_k: Tensor, x_v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend from ``x_q`` to ``x_k``/``x_v``.

        Args:
            x_q: Queries ``(B, T_q, d)``.
            x_k: Keys ``(B, T_k, d)``.
            x_v: Values ``(B, T_k, d)``.
            mask: ``(B or 1, 1, T_q, T_k)`` bool, True where attention is allowed (:func:`attention_mask`).

        Returns:
            ``(B, T_q, d)``.
        """
        B, Tq, d = x_q.shape
        Tk, h = x_k.shape[1], self.num_heads
        q = self.q_proj(x_q).view(B, Tq, h, d // h).transpose(1, 2)  # (B, h, T_q, d_h)
        k = self.k_proj(x_k).view(B, Tk, h, d // h).transpose(1, 2)  # (B, h, T_k, d_h)
        v = self.v_proj(x_v).view(B, Tk, h, d // h).transpose(1, 2)  # (B, h, T_k, d_h)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, h, T_q, d_h)
        y = y.transpose(1, 2).reshape(B, Tq, d)  # (B, T_q, d): heads side by side
        return self.out_proj(y)


class PostLNBlock(nn.Module):
    """Algorithm 1 (CMD): attention and FFN sub-layers, each followed by residual + LayerNorm.

    ``u = LN(x_q + Attn(x_q, x_k, x_v))``, ``c = LN(u + W_2 ReLU(W_1 u))``. With ``d = 32, m = 128`` it has
    ``4 (32*32 + 32) + (32*128 + 128) + (128*32 + 32) + 2 * 2 * 32 = 12,704`` parameters.

    Args:
        dim: Model size ``d``.
        num_heads: Attention heads ``h``.
        ffn_dim: FFN inner size ``m``.
        dropout: Dropout on the attention weights, after the ReLU and on both residual branches (spec [R]
            0.1; 0 gives the paper's bare Algorithm 1).
        activation: FFN non-linearity, ``relu`` (Algorithm 1) or ``gelu`` (BERT / wav2vec 2.0 layers, whose
            weights a student can copy into this block).
        eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(
        self,
        dim: int = 32,
        num_heads: int = 2,
        ffn_dim: int = 128,
        dropout: float = 0.1,
        activation: str = "relu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.act = _activation(activation)

    def forward(
        self,
        x_q: Tensor,
        x_k: Tensor | None = None,
        x_v: Tensor | None = None,
        q_mask: Tensor | None = None,
        kv_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """Run the block; self-attention when ``x_k`` is ``None``.

        Args:
            x_q: Query stream ``(B, T_q, d)``.
            x_k: Key stream ``(B, T_k, d)`` (default ``x_q``).
            x_v: Value stream ``(B, T_k, d)`` (default ``x_k``).
            q_mask: ``(B, T_q)`` bool, True at valid queries (used as ``kv_mask`` for self-attention).
            kv_mask: ``(B, T_k)`` bool, True at valid keys.
            causal: Add a future mask (off by default).

        Returns:
            ``(B, T_q, d)``.
        """
        if x_k is None:
            x_k, kv_mask = x_q, q_mask if kv_mask is None else kv_mask
        x_v = x_k if x_v is None else x_v
        mask = attention_mask(x_q.shape[1], x_k.shape[1], kv_mask, causal, q_mask, x_q.device)
        u = self.norm1(x_q + self.drop(self.attn(x_q, x_k, x_v, mask)))  # (B, T_q, d)
        c = self.fc2(self.drop(self.act(self.fc1(u))))  # (B, T_q, d)
        return self.norm2(u + self.drop(c))


class PreLNBlock(nn.Module):
    """MulT's transformer layer: pre-LN attention (queries, keys and values normalised) and pre-LN FFN.

    ``x = x + drop_res(Attn(LN0(x), LN0(x_k), LN0(x_v)))``, ``x = x + drop_res(fc2(drop_relu(ReLU(fc1(LN1(x))))))``.

    Args:
        dim: Model size ``d``.
        num_heads: Attention heads.
        ffn_dim: FFN inner size (MulT: ``4 d``).
        attn_dropout: Dropout on the attention weights.
        relu_dropout: Dropout after the FFN ReLU.
        res_dropout: Dropout on both residual branches.
        activation: FFN non-linearity, ``relu`` (MulT) or ``gelu`` (Whisper encoder layers, whose weights a
            student can copy into this block).
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int | None = None,
        attn_dropout: float = 0.1,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        activation: str = "relu",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, attn_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim or 4 * dim)
        self.fc2 = nn.Linear(ffn_dim or 4 * dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.act = _activation(activation)
        self.relu_drop = nn.Dropout(relu_dropout)
        self.res_drop = nn.Dropout(res_dropout)

    def forward(
        self,
        x_q: Tensor,
        x_k: Tensor | None = None,
        x_v: Tensor | None = None,
        q_mask: Tensor | None = None,
        kv_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """Run the layer; self-attention when ``x_k`` is ``None``.

        Args:
            x_q: Query stream ``(B, T_q, d)``.
            x_k: Key stream ``(B, T_k, d)`` (default ``x_q``).
            x_v: Value stream ``(B, T_k, d)`` (default ``x_k``).
            q_mask: ``(B, T_q)`` bool, True at valid queries (used as ``kv_mask`` for self-attention).
            kv_mask: ``(B, T_k)`` bool, True at valid keys.
            causal: MulT's future mask (``buffered_future_mask``).

        Returns:
            ``(B, T_q, d)``.
        """
        if x_k is None:
            x_k, kv_mask = x_q, q_mask if kv_mask is None else kv_mask
        x_v = x_k if x_v is None else x_v
        mask = attention_mask(x_q.shape[1], x_k.shape[1], kv_mask, causal, q_mask, x_q.device)
        q = self.norm1(x_q)  # (B, T_q, d)
        k = q if x_k is x_q else self.norm1(x_k)  # (B, T_k, d)
        v = k if x_v is x_k else self.norm1(x_v)  # (B, T_k, d)
        x = x_q + self.res_drop(self.attn(q, k, v, mask))
        y = self.fc2(self.relu_drop(self.act(self.fc1(self.norm2(x)))))  # (B, T_q, d)
        return x + self.res_drop(y)
