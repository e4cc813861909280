"""Spectral features in plain torch: power STFT, HTK mel filterbank, log-mel, MFCC and deltas.

A drop-in for ``torchaudio.transforms.MFCC`` / ``MelSpectrogram`` semantics (torchaudio does not load
with torch 2.13, and librosa is not a dependency), computed one utterance at a time so that batch
padding can never change a valid frame.

Conventions (the same as torchaudio's defaults unless stated):

* **STFT**: ``torch.stft`` with a periodic window of ``win_length`` samples (Hann by default,
  Hamming optional), ``center=True``: the signal is padded by ``n_fft // 2`` samples on each side
  (reflection; zeros when the utterance is too short to reflect), so an utterance of ``L`` samples
  gives ``1 + L // hop_length`` frames and frame ``t`` is centred on sample ``t * hop_length``.
  Power spectrum ``|X|^2``.
* **Mel scale**: HTK, ``mel = 2595 * log10(1 + f / 700)``; triangular filters whose corners are
  ``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max`` (default the Nyquist
  frequency), evaluated at the STFT bin frequencies ``linspace(0, sr / 2, n_fft // 2 + 1)``. Peak
  height 1 (``norm=None``), or area normalised with ``norm="slaney"`` (``2 / (f[m+2] - f[m])``).
  With many mels and a short FFT some low filters fall between bins and are all-zero (torchaudio
  has the same behaviour); those rows sit at the log floor.
* **Log**: ``"db"`` = ``10 * log10(max(x, 1e-10))`` then floored at ``max - top_db`` per utterance
  (``AmplitudeToDB("power", top_db=80)``, torchaudio's MFCC default); ``"natural"`` =
  ``log(x + 1e-6)`` (torchaudio's ``log_mels=True``).
* **DCT**: type II with orthonormal scaling, keeping the first ``n_mfcc`` coefficients.
* **Deltas**: HTK regression ``d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2)``
  with ``N = 2`` and the first/last frame repeated at the edges; ΔΔ is the delta of Δ.

All maths runs in float64 (so that log of small powers is accurate) and returns float32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "LogKind",
    "WindowKind",
    "compute_deltas",
    "dct_matrix",
    "hz_to_mel",
    "log_compress",
    "mel_filterbank",
    "mel_to_hz",
    "num_frames",
    "power_spectrogram",
]

LogKind = Literal["db", "natural"]
WindowKind = Literal["hann", "hamming"]

DB_AMIN = 1e-10
LOG_OFFSET = 1e-6


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: Literal["slaney"] | None = None,
) -> Tensor:
    """Triangular HTK mel filterbank (torchaudio ``melscale_fbanks`` semantics).

    Args:
        n_freqs: Number of STFT bins, ``n_fft // 2 + 1``.
        n_mels: Number of filters.
        sample_rate: Sampling rate in Hz.
        f_min: Lowest corner frequency in Hz.
        f_max: Highest corner frequency in Hz (``None`` = ``sample_rate / 2``).
        norm: ``None`` (peak 1) or ``"slaney"`` (unit area).

    Returns:
        ``(n_freqs, n_mels)`` float64.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # (F,)
    m_pts = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = mel_to_hz(m_pts)  # (M + 2,)
    f_diff = f_pts[1:] - f_pts[:-1]  # (M + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (F, M + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # (F, M)
    up = slopes[:, 2:] / f_diff[1:]  # (F, M)
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))
    elif norm is not None:
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    return fb


def dct_matrix(n_mfcc: int, n_mels: int) -> Tensor:
    """Orthonormal DCT-II basis, first ``n_mfcc`` rows, as a right-multiplication matrix.

    Returns:
        ``(n_mels, n_mfcc)`` float64 ``D`` with ``mfcc = logmel @ D``.
    """
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(1)
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)  # (n_mfcc, n_mels)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.t()


def num_frames(num_samples: int, hop_length: int) -> int:
    """Frames a centred STFT gives for ``num_samples`` samples: ``1 + num_samples // hop_length``."""
    return 1 + num_samples // hop_length


def _window(kind: WindowKind, win_length: int, device: torch.device) -> Tensor:
    if kind == "hann":
        return torch.hann_window(win_length, periodic=True, dtype=torch.float64, device=device)
    if kind == "hamming":
        return torch.hamming_window(win_length, periodic=True, dtype=torch.float64, device=device)
    raise ValueError(f"window must be 'hann' or 'hamming', got {kind!r}")


def power_spectrogram(
    wave: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: WindowKind = "hann",
) -> Tensor:
    """Centred power STFT of one utterance.

    Args:
        wave: ``(L,)`` samples, ``L >= 1``.
        n_fft: FFT size.
        hop_length: Hop in samples.
        win_length: Window length (``None`` = ``n_fft``); zero-padded to ``n_fft`` in the middle.
        window: ``"hann"`` or ``"hamming"`` (periodic).

    Returns:
        ``(T, n_fft // 2 + 1)`` float64 power, ``T = 1 + L // hop_length``.
    """
    win_length = n_fft if win_length is None else win_length
    x = wave.to(torch.float64)
    pad = n_fft // 2
    # Reflection needs more samples than the pad; very short utterances are padded with zeros instead.
    mode = "reflect" if x.numel() > pad else "constant"
    x = torch.nn.functional.pad(x.view(1, 1, -1), (pad, pad), mode=mode).view(-1)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=_window(window, win_length, x.device),
        center=False,
        return_complex=True,
    )  # (F, T)
    return spec.abs().pow(2).t()  # (T, F)


def log_compress(x: Tensor, kind: LogKind = "db", top_db: float | None = 80.0) -> Tensor:
    """Log of a (mel) power spectrogram of one utterance.

    Args:
        x: ``(T, M)`` non-negative power.
        kind: ``"db"`` (``10 log10``, floored at ``max - top_db`` over the utterance) or ``"natural"``
            (``log(x + 1e-6)``).
        top_db: Dynamic range kept by ``"db"``; ``None`` keeps all.

    Returns:
        ``(T, M)``.
    """
    if kind == "natural":
        return torch.log(x + LOG_OFFSET)
    if kind != "db":
        raise ValueError(f"log must be 'db' or 'natural', got {kind!r}")
    db = 10.0 * torch.log10(torch.clamp(x, min=DB_AMIN))
    if top_db is not None:
        db = torch.clamp(db, min=float(db.max()) - top_db)
    return db


def compute_deltas(x: Tensor, width: int = 2) -> Tensor:
    """HTK regression deltas along time, edges repeated.

    Args:
        x: ``(T, D)`` features of one utterance.
        width: ``N`` in the regression formula (window ``2N + 1``).

    Returns:
        ``(T, D)`` deltas.
    """
    if width < 1:
        raise ValueError(f"delta width must be >= 1, got {width}")
    t = x.shape[0]
    idx = torch.arange(t, device=x.device)
    denom = 2.0 * sum(n * n for n in range(1, width + 1))
    out = torch.zeros_like(x)
    for n in range(1, width + 1):
        ahead = x[torch.clamp(idx + n, max=t - 1)]
        behind = x[torch.clamp(idx - n, min=0)]
        out = out + n * (ahead - behind)
    return out / denom
