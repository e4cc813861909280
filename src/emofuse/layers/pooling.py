"""Pooling over time and over layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LayerSelector", "masked_mean", "mean_std_pool"]


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over valid time steps.

    Args:
        x: Sequence ``(B, T, D)``.
        mask: ``(B, T)``, True (or 1) at valid steps; ``None`` means all valid.

    Returns:
        ``(B, D)``. A row with no valid step gives zeros.
    """
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def mean_std_pool(x: Tensor, mask: Tensor | None) -> Tensor:
    """Concatenated mean and (population) standard deviation over valid steps.

    Args:
        x: ``(B, T, D)``.
        mask: ``(B, T)`` bool, True at valid steps, or ``None``.

    Returns:
        ``(B, 2 D)``: ``[mean | std]``.
    """
    mean = masked_mean(x, mask)  # (B, D)
    var = masked_mean((x - mean.unsqueeze(1)) ** 2, mask)  # (B, D)
    return torch.cat([mean, var.clamp_min(1e-12).sqrt()], dim=-1)


class LayerSelector(nn.Module):
    """Pick one hidden layer by index, or learn a softmax-weighted sum of all of them.

    Args:
        num_layers: Number of hidden-state tensors the backbone returns (embedding output included).
        layer: ``None`` = last layer; ``int >= 0`` = that index; ``-1`` or ``"weighted"`` = a learned
            softmax-weighted sum (pyannote's ``wav2vec_layer=-1`` convention).
    """

    def __init__(self, num_layers: int, layer: int | str | None = None) -> None:
        super().__init__()
        if layer == "weighted":
            layer = -1
        if layer is not None and not isinstance(layer, int):
            raise ValueError(f"layer must be None, an index or 'weighted', got {layer!r}")
        if layer is not None and layer != -1 and not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range: the encoder has hidden states 0..{num_layers - 1}")
        self.num_layers = num_layers
        self.layer = layer
        self.weights = nn.Parameter(torch.zeros(num_layers)) if layer == -1 else None

    def forward(self, hidden_states: Sequence[Tensor]) -> Tensor:
        """Select or mix layers.

        Args:
            hidden_states: ``num_layers`` tensors of shape ``(B, T, D)``.

        Returns:
            ``(B, T, D)``.
        """
        if len(hidden_states) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} hidden states, got {len(hidden_states)}")
        if self.weights is not None:
            w = torch.softmax(self.weights, dim=0)
            return torch.einsum("l,lbtd->btd", w, torch.stack(list(hidden_states), dim=0))
        return hidden_states[-1 if self.layer is None else self.layer]
