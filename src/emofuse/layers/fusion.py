"""Fusion blocks: statistical pooling across modality vectors and time-as-channel sequence shortening.

Both come from the intra-/cross-attention fusion models of Rajan (2022, Ch. 4; code
``smartcameras/SelfCrossAttn``), but neither knows about emotions or modalities:

* :func:`statistical_pooling` stacks ``K`` vectors and returns their element-wise mean and standard deviation
  across the ``K`` axis (the thesis' "SP"), optionally leaving out vectors per sample (absent modalities);
* :class:`TimeMixing` is the thesis' ``Conv1d(T_in, T_out, kernel_size=1)`` applied to a ``(B, T, D)`` tensor,
  i.e. with the time steps as channels: every output step is a learned linear combination of all input steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TimeMixing", "fix_length", "statistical_pooling"]


def statistical_pooling(vectors: Tensor, weights: Tensor | None = None, unbiased: bool = True) -> Tensor:
    """Element-wise mean and standard deviation across ``K`` vectors, concatenated ``[mean | std]``.

    With ``weights`` (0/1 per sample and vector) only the vectors with weight 1 take part. The unbiased
    (``ddof=1``) std of fewer than two vectors is undefined; it is returned as 0 (and so is the biased std of one
    vector), so a sample with a single usable vector gets ``[v | 0]`` and one with none gets zeros.

    Args:
        vectors: ``(B, K, d)``.
        weights: ``(B, K)`` bool or 0/1 float, or ``None`` (all vectors used).
        unbiased: Divide by ``n - 1`` (``torch.std_mean``'s default, as in the thesis' code) or by ``n``.

    Returns:
        ``(B, 2 d)``.

    Example:
        >>> v = torch.tensor([[[1.0, 2.0], [3.0, 2.0], [9.0, 9.0]]])
        >>> statistical_pooling(v, torch.tensor([[1, 1, 0]])).tolist()
        [[2.0, 2.0, 1.4142135381698608, 0.0]]
    """
    if vectors.ndim != 3:
        raise ValueError(f"vectors must be (B, K, d), got shape {tuple(vectors.shape)}")
    if weights is None:
        w = vectors.new_ones(vectors.shape[:2])
    else:
        if weights.shape != vectors.shape[:2]:
            raise ValueError(f"weights must be {tuple(vectors.shape[:2])}, got {tuple(weights.shape)}")
        w = weights.to(vectors.dtype)
    w3 = w.unsqueeze(-1)  # (B, K, 1)
    n = w3.sum(dim=1)  # (B, 1)
    mean = (vectors * w3).sum(dim=1) / n.clamp_min(1.0)  # (B, d)
    sq = ((vectors - mean.unsqueeze(1)) ** 2 * w3).sum(dim=1)  # (B, d)
    denom = n - 1.0 if unbiased else n
    ok = denom > 0  # (B, 1)
    var = sq / torch.where(ok, denom, torch.ones_like(denom))
    pos = ok & (var > 0)  # sqrt only where positive: exact zeros, and no infinite gradient at 0
    std = torch.where(pos, torch.where(pos, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))  # (B, d)
    return torch.cat([mean, std], dim=-1)


def fix_length(x: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Crop (keep the first ``length`` steps) or zero-pad a batch of sequences to exactly ``length`` steps.

    Args:
        x: ``(B, T, D)``.
        mask: ``(B, T)`` bool, True at valid steps.
        length: Target length ``L``.

    Returns:
        ``x (B, L, D)`` with zeros at every invalid step, and ``mask (B, L)``.
    """
    T = x.shape[1]
    if T >= length:
        x, mask = x[:, :length], mask[:, :length]
    else:
        x = torch.cat([x, x.new_zeros(x.shape[0], length - T, x.shape[2])], dim=1)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], length - T)], dim=1)
    return x * mask.unsqueeze(-1).to(x.dtype), mask


class TimeMixing(nn.Module):
    """``Conv1d(T_in, T_out, 1)`` on ``(B, T_in, D)``: time steps as channels, no activation.

    Parameters: ``T_out * T_in + T_out`` (1000 → 500 frames: 500,500; 32 → 25: 825).

    Args:
        in_steps: Input length ``T_in`` (inputs must have exactly this many steps, see :func:`fix_length`).
        out_steps: Output length ``T_out``.
    """

    def __init__(self, in_steps: int, out_steps: int) -> None:
        super().__init__()
        if in_steps < 1 or out_steps < 1:
            raise ValueError(f"TimeMixing needs positive lengths, got {in_steps} -> {out_steps}")
        self.in_steps, self.out_steps = in_steps, out_steps
        self.conv = nn.Conv1d(in_steps, out_steps, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T_in, D) -> (B, T_out, D)``."""
        if x.shape[1] != self.in_steps:
            raise ValueError(f"TimeMixing expects {self.in_steps} steps, got {x.shape[1]}")
        return self.conv(x)
