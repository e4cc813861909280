"""Moving nested batches (dicts / lists of tensors) between devices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["to_device"]


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj`` with every tensor inside dicts and lists moved to ``device``; other values unchanged.

    Example:
        >>> batch = to_device({"x": torch.zeros(2), "ids": ["a", "b"], "f": {"audio": [torch.ones(1)]}}, "cpu")
        >>> batch["x"].device.type, batch["ids"], batch["f"]["audio"][0].tolist()
        ('cpu', ['a', 'b'], [1.0])
    """
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    return obj
