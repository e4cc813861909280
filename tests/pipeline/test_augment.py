"""Waveform augmentation: random crop, gain and noise at the asked SNR; the wrapped dataset's batches."""

import numpy as np
import pytest
import torch

from emofuse.config.schema import AugmentConfig
from emofuse.pipeline import MultimodalDataset
from emofuse.pipeline.augment import AugmentedDataset, augment_waveform
from emofuse.testing.dummies import DummyAudioEncoder, make_wav_corpus


def test_crop_gain_and_noise():
    rng = np.random.default_rng(0)
    wav = np.sin(np.linspace(0, 400, 48000)).astype(np.float32)
    crops = [augment_waveform(wav, AugmentConfig(crop=1.0), rng) for _ in range(5)]
    assert all(c.shape == (16000,) and c.dtype == np.float32 for c in crops)
    assert len({float(c[0]) for c in crops}) > 1  # random starts
    short = augment_waveform(wav[:8000], AugmentConfig(crop=1.0), rng)
    np.testing.assert_array_equal(short, wav[:8000])  # shorter clips are never padded or changed
    for _ in range(5):
        scaled = augment_waveform(wav, AugmentConfig(gain_db=6.0), rng)
        ratio = 20 * np.log10(np.abs(scaled).max() / np.abs(wav).max())
        assert -6.0 - 1e-4 <= ratio <= 6.0 + 1e-4
    noisy = augment_waveform(wav, AugmentConfig(noise_snr_db=(20.0, 20.0), noise_prob=1.0), rng)
    snr = 10 * np.log10(np.mean(wav**2) / np.mean((noisy - wav) ** 2))
    assert snr == pytest.approx(20.0, abs=0.3)
    off = augment_waveform(wav, AugmentConfig(), rng)
    np.testing.assert_array_equal(off, wav)
    with pytest.raises(ValueError, match="low <= high"):
        AugmentConfig(noise_snr_db=(30, 10))


def test_augmented_dataset_batches_like_the_wrapped_one(tmp_path):
    records = make_wav_corpus(tmp_path, 3, seconds=0.5)
    ds = MultimodalDataset(records, ["neutral", "happy"], audio_encoder=DummyAudioEncoder(), root=tmp_path)
    aug = AugmentedDataset(ds, AugmentConfig(crop=0.25, gain_db=3.0))
    torch.manual_seed(0)
    items = [aug[i] for i in range(len(aug))]
    assert all(len(it["waveform"]) == 4000 == it["num_samples"] for it in items)
    batch = aug.collate(items)
    assert batch["labels"].tolist() == [0, 1, 0] and batch["num_samples"].tolist() == [4000] * 3
    assert aug.lengths() == ds.lengths() and aug.ids == ds.ids
