"""Cheap waveform augmentation for the training split: random gain, additive white noise, random crop.

:func:`augment_waveform` is the pure function; :class:`AugmentedDataset` wraps a
:class:`~emofuse.pipeline.MultimodalDataset` (or anything whose items carry ``"waveform"``) and augments each
training item's waveform before the collate preprocesses it. Random numbers come from torch's global generator,
which the training engine seeds per run, so a run is reproducible. Settings:
:class:`~emofuse.config.schema.AugmentConfig` (``data.augment``).

Example:
    >>> import numpy as np
    >>> from emofuse.config.schema import AugmentConfig
    >>> wav = np.ones(32000, dtype=np.float32)
    >>> out = augment_waveform(wav, AugmentConfig(crop=1.0), np.random.default_rng(0))
    >>> out.shape, out.dtype
    ((16000,), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emofuse.config.schema import AugmentConfig

__all__ = ["AugmentedDataset", "augment_waveform"]


def augment_waveform(
    wav: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """Crop, scale and add noise to one waveform.

    Args:
        wav: ``(S,)`` float samples.
        cfg: Which augmentations, and how strong.
        rng: Random generator.
        sample_rate: Samples per second (for ``crop``).

    Returns:
        ``(S',)`` float32, ``S' = min(S, crop · sample_rate)``.
    """
    out = np.asarray(wav, dtype=np.float32)
    if cfg.crop is not None:
        n = int(round(cfg.crop * sample_rate))
        if out.size > n:
            start = int(rng.integers(0, out.size - n + 1))
            out = out[start : start + n]
    if cfg.gain_db > 0:
        out = out * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    if cfg.noise_snr_db is not None and rng.random() < cfg.noise_prob:
        power = float(np.mean(out.astype(np.float64) ** 2))
        if power > 0:
            snr = rng.uniform(*cfg.noise_snr_db)
            sigma = np.sqrt(power / 10 ** (snr / 10))
            out = out + rng.normal(0.0, sigma, out.shape).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


class AugmentedDataset(Dataset[dict[str, Any]]):
    """A dataset whose items' waveforms are augmented; ``collate`` and ``lengths`` are the wrapped dataset's.

    Args:
        dataset: Items with a ``"waveform"`` (``None`` items pass unchanged); needs ``collate``.
        cfg: The augmentation settings.
        sample_rate: Samples per second of the waveforms.
    """

    def __init__(self, dataset: Any, cfg: AugmentConfig, sample_rate: int = 16000) -> None:
        self.dataset = dataset
        self.cfg = cfg
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The wrapped item, its waveform augmented (``num_samples`` updated)."""
        item = dict(self.dataset[i])
        if item.get("waveform") is not None:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
            item["waveform"] = augment_waveform(item["waveform"], self.cfg, rng, self.sample_rate)
            item["num_samples"] = len(item["waveform"])
        return item

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The wrapped dataset's batch."""
        return self.dataset.collate(items)

    def lengths(self) -> list[int]:
        """The wrapped dataset's lengths (an upper bound after cropping)."""
        return self.dataset.lengths()

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
