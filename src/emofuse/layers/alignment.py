"""Uniform step alignment of one masked sequence onto another's time axis.

Co-learning objectives that compare two modalities step by step (SeqSEW's DCCA and translation MAE, thesis §5.2.3)
need both sequences on one time axis. Frame-rate features at different rates (audio at 100 Hz, video at 25 Hz)
or text tokens against audio frames are not. :func:`resample_steps` maps every valid step of the destination onto
the source step that covers the same *fraction* of its sequence (nearest neighbour on a uniform time grid): exact
for two frame rates of the same clip, and for tokens against frames a uniform-rate alignment (each of ``L_s``
tokens spans ``L_d / L_s`` frames), which holds for speech at a steady speaking rate and is an approximation
otherwise (no forced aligner runs here).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["prefix_lengths", "resample_steps"]


def prefix_lengths(mask: Tensor, name: str = "mask") -> Tensor:
    """Valid lengths ``(B,)`` of a left-aligned mask ``(B, T)`` (valid steps first, then padding).

    Raises:
        ValueError: The mask is not 2-D or a row has a valid step after padding.
    """
    if mask.ndim != 2:
        raise ValueError(f"{name} must be (B, T), got shape {tuple(mask.shape)}")
    m = mask.bool()
    lengths = m.sum(1)
    prefix = torch.arange(m.shape[1], device=m.device)[None] < lengths[:, None]
    if not bool((prefix == m).all()):
        bad = int((prefix != m).any(1).nonzero()[0, 0])
        raise ValueError(f"{name} row {bad} is not left-aligned (a valid step follows padding)")
    return lengths


def resample_steps(x: Tensor, src_mask: Tensor | None, dst_mask: Tensor) -> Tensor:
    """Put a sequence on another sequence's time axis (nearest step of a uniform grid).

    Destination step ``j`` of row ``b`` (of ``L_d`` valid steps) takes source step
    ``floor((j + 0.5) · L_s / L_d)`` of the ``L_s`` valid source steps, so both sequences span the same
    interval: the first destination steps read the first source step, the last ones the last.

    Args:
        x: Source sequence ``(B, T_s, D)``.
        src_mask: ``(B, T_s)`` left-aligned valid steps of ``x``; ``None``: all valid.
        dst_mask: ``(B, T_d)`` left-aligned valid steps of the destination.

    Returns:
        ``(B, T_d, D)``; padding steps of the destination (and rows whose source is empty) hold source step 0.

    Raises:
        ValueError: Batch sizes differ, or a mask is not left-aligned.

    Example:
        >>> x = torch.arange(3.0)[None, :, None]                      # 3 tokens: 0, 1, 2
        >>> resample_steps(x, None, torch.ones(1, 6, dtype=torch.bool))[0, :, 0].tolist()
        [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    """
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, D), got shape {tuple(x.shape)}")
    if dst_mask.shape[0] != x.shape[0] or (src_mask is not None and src_mask.shape[0] != x.shape[0]):
        raise ValueError(
            f"batch sizes differ: x {x.shape[0]}, dst_mask {dst_mask.shape[0]}"
            + ("" if src_mask is None else f", src_mask {src_mask.shape[0]}")
        )
    if src_mask is None:
        l_src = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    else:
        l_src = prefix_lengths(src_mask, "src_mask").to(x.device)
    l_dst = prefix_lengths(dst_mask, "dst_mask").to(x.device)
    j = torch.arange(dst_mask.shape[1], device=x.device, dtype=torch.float64)[None]  # (1, T_d)
    idx = torch.floor((j + 0.5) * l_src[:, None].double() / l_dst[:, None].clamp_min(1).double()).long()
    idx = torch.minimum(idx, (l_src - 1).clamp_min(0)[:, None])  # (B, T_d)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
