"""Reusable neural-network blocks shared by encoders and models."""

from emofuse.layers.alignment import prefix_lengths, resample_steps
from emofuse.layers.pooling import LayerSelector, masked_mean

__all__ = ["LayerSelector", "masked_mean", "prefix_lengths", "resample_steps"]
