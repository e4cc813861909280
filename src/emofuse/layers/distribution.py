"""Token-wise Gaussian embeddings: the distribution constructor of MGCMA (after MAP's ``DisTrans``).

Wang et al., "Enhancing Multimodal Emotion Recognition through Multi-Granularity Cross-Modal Alignment"
(spec ``mgcma.md`` §2.2): multi-head self-attention whose output is split into a **μ branch** and a **σ branch**,
each with linear layers and residual connections. The layout follows the MAP reference code
(``IIGROUP/MAP``, ``map/modules/PDE.py``, ``DisTrans``) that the paper cites (spec A4)::

    x_  = LN(GELU(Linear_d→d(x)))                       # the activation / norm the figure omits
    q,k,v = Linear_d→3d(x_), k heads of d/k             # masked scaled dot-product attention
    a   = merge heads (B, L, d) [→ W^o if out_proj]      # → (B, L, 2, d/2)
    μ   = x + Dropout(Linear_{d/2→d}(a[..., 0, :]))     # first half of the heads; residual from the input
    μ   = μ + MLP(LN(μ))
    logσ = Linear_{d/2→d}(a[..., 1, :]);  logσ = logσ + MLP(LN(logσ))
    σ   = exp(logσ)  (or softplus)                      # standard deviation, Σ = diag(σ²)

Padded keys never receive attention, so padding never changes the outputs at valid positions.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.layers.transformer import attention_mask

__all__ = ["DistributionConstructor"]


class _MLP(nn.Sequential):
    """``Linear(d, 4d) → GELU → Dropout → Linear(4d, d) → Dropout``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        drop = nn.Dropout(dropout)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), drop, nn.Linear(hidden, dim), nn.Dropout(dropout))


class DistributionConstructor(nn.Module):
    """Multi-head self-attention with a μ and a σ branch: a token sequence to token-wise diagonal Gaussians.

    Args:
        dim: Model size ``d`` (even: the merged heads are split into two halves).
        num_heads: Attention heads ``k`` (``d % k == 0``; with an even ``k`` each branch gets ``k / 2`` heads).
        dropout: Dropout on attention weights, the μ projection and the MLPs.
        mlp_ratio: MLP inner size as a multiple of ``d``.
        out_proj: Apply the output projection ``W^o`` of the paper's Eq. (3) before the split (MAP has none).
        sigma_activation: ``"exp"`` (σ = exp(log σ), MAP) or ``"softplus"``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 12,
        dropout: float = 0.1,
        mlp_ratio: float = 4.0,
        out_proj: bool = False,
        sigma_activation: str = "exp",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if dim % 2:
            raise ValueError(f"dim must be even (split into a mu and a sigma half), got {dim}")
        if sigma_activation not in ("exp", "softplus"):
            raise ValueError(f"sigma_activation must be 'exp' or 'softplus', got {sigma_activation!r}")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.sigma_activation = sigma_activation
        hidden = int(dim * mlp_ratio)
        self.pre = nn.Linear(dim, dim)
        self.pre_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim) if out_proj else None
        self.mu_proj = nn.Linear(dim // 2, dim)
        self.mu_norm = nn.LayerNorm(dim)
        self.mu_mlp = _MLP(dim, hidden, dropout)
        self.sigma_proj = nn.Linear(dim // 2, dim)
        self.sigma_norm = nn.LayerNorm(dim)
        self.sigma_mlp = _MLP(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token-wise Gaussians of a sequence.

        Args:
            x: ``(B, L, d)``.
            mask: ``(B, L)`` bool, True at valid steps (``None``: all valid).

        Returns:
            ``mu (B, L, d)`` and ``sigma (B, L, d)`` (positive standard deviations). Values at padded
            positions are unspecified.
        """
        b, n, d = x.shape
        h = self.num_heads
        x_ = self.pre_norm(F.gelu(self.pre(x)))  # (B, L, d)
        q, k, v = self.qkv(x_).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, d_h)
        allowed = attention_mask(n, n, mask, device=x.device)  # (B, 1, L, L) or None
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, h, L, d_h)
        a = a.transpose(1, 2).reshape(b, n, d)  # (B, L, d): heads side by side
        if self.out_proj is not None:
            a = self.out_proj(a)
        a = a.view(b, n, 2, d // 2)  # (B, L, 2, d/2): first half of the heads → μ, second half → σ
        mu = x + self.drop(self.mu_proj(a[:, :, 0]))  # (B, L, d)
        mu = mu + self.mu_mlp(self.mu_norm(mu))
        log_sigma = self.sigma_proj(a[:, :, 1])  # (B, L, d)
        log_sigma = log_sigma + self.sigma_mlp(self.sigma_norm(log_sigma))
        sigma = log_sigma.exp() if self.sigma_activation == "exp" else F.softplus(log_sigma)
        return mu, sigma

    def extra_repr(self) -> str:
        """Settings shown in the module repr."""
        return f"dim={self.dim}, num_heads={self.num_heads}, sigma={self.sigma_activation}"
