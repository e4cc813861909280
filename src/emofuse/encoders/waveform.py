"""The identity audio "encoder": raw samples as a ``(B, L, 1)`` sequence, for raw-speech models (ConflictNET).

Its :meth:`preprocess` pads waveforms into ``{"waveforms": (B, L_max), "lengths": (B,)}`` without any
normalisation, which is what a raw-waveform model reads from ``batch["audio"]``. Load the audio at the
model's rate with ``data.sample_rate`` (ConflictNET: 8 kHz); nothing here resamples.

Example:
    >>> import numpy as np
    >>> enc = WaveformEncoder()
    >>> b = enc.preprocess([np.ones(3), np.ones(2)])
    >>> tuple(b["waveforms"].shape), b["lengths"].tolist(), tuple(enc(**b).hidden.shape)
    ((2, 3), [3, 2], (2, 3, 1))
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from emofuse.encoders._registry import EncoderSpec, Resolution, register_encoder
from emofuse.encoders.base import Provenance
from emofuse.encoders.handcrafted import _WaveformEncoder

__all__ = ["WaveformEncoder"]


class WaveformEncoder(_WaveformEncoder):
    """Raw samples, one per frame (``output_dim = 1``, ``frame_rate`` = the sample rate).

    Args:
        name: Registered name.
        sample_rate: Rate the waveforms are loaded at (recorded as :attr:`frame_rate`).
    """

    def __init__(self, name: str = "waveform", sample_rate: int = 8000) -> None:
        prov = Provenance(name=name, resolved="handcrafted", source="raw samples (identity)", architecture="identity")
        super().__init__(name, 1, prov)
        self.sample_rate = int(sample_rate)
        self.frame_rate = float(sample_rate)

    def _features(self, wave: Tensor, index: int) -> Tensor:
        return wave[:, None]  # (L, 1)


def _builder(spec: EncoderSpec, resolution: Resolution, **kwargs: Any) -> WaveformEncoder:
    return WaveformEncoder(spec.name, **kwargs)


register_encoder(
    EncoderSpec(
        name="waveform",
        modality="audio",
        builder=_builder,
        pretrained=False,
        description="raw samples (identity), for raw-speech models such as ConflictNET",
    )
)
