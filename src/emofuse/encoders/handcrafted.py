"""Handcrafted encoders: MFCC, log-mel, openSMILE feature sets and GloVe word vectors.

None of them has trainable weights; all resolve as ``handcrafted``. Instead of a weight hash,
:attr:`Provenance.fingerprint` hashes the preprocessing settings (and, for openSMILE, the version and
config file; for GloVe, the file identity and kept vocabulary), so a feature cache can key on it.

Registered names:

* ``mfcc``: CMD's MulT baseline (specs/cmd.md §2: torchaudio ``MFCC``, ``n_fft=400``,
  ``n_mfcc=80``, other settings at torchaudio defaults: 16 kHz, ``n_mels=128``, hop 200 (80 frames/s),
  Hann, HTK mel, dB with ``top_db=80``, ortho DCT-II). 80-d. As in torchaudio, 4 of the 128 filters
  fall between the 201 FFT bins and are empty (those mel rows sit at the dB floor).
* ``mfcc-thesis``: Rajan's thesis (specs/rajan-thesis.md §4): 40 MFCC + Δ + ΔΔ = 120-d, 25 ms Hamming
  window, 10 ms hop (100 frames/s), at most 1000 frames (10 s). The mel count is not given: 64 HTK mels
  and ``log(x + 1e-6)`` are our choice.
* ``logmel``: 80 HTK mels, ``n_fft=400``, hop 160 (100 frames/s), Hann, ``log(x + 1e-6)``. 80-d.
* ``egemaps`` (eGeMAPSv02: 88 functionals / 25 LLDs), ``compare`` (ComParE_2016: 6373 / 65),
  ``emobase`` (988 / 26) and ``is09-emotion`` (IS09_emotion: 384 / 16) via openSMILE.
  CM-RoBERTa's 6552-d ``emo_large`` set is **not** shipped by the ``opensmile`` package (its config
  folder has eGeMAPS, GeMAPS, ComParE 2016, emobase and IS09-13 only); ``emobase`` is the shipped
  member of the same family and ``compare`` the closest in size and content (brute-force functionals
  of MFCC, spectral and prosodic LLDs). Say which one ran.
* ``glove``: word vectors from a user-supplied GloVe text file (``path=``); ``D`` from the file.

Spectral maths (STFT centring, mel scale, log, DCT, deltas) is documented in
:mod:`emofuse.encoders.spectral`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from emofuse.encoders._registry import EncoderSpec, Resolution, register_encoder
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance, settings_fingerprint
from emofuse.encoders.glove import GLOVE_TOKEN_PATTERN, GloveEncoder, clear_glove_cache, tokenize_words
from emofuse.encoders.spectral import (
    LogKind,
    WindowKind,
    compute_deltas,
    dct_matrix,
    log_compress,
    mel_filterbank,
    power_spectrogram,
)
from emofuse.layers.pooling import masked_mean
from emofuse.utils.optional import require

__all__ = [
    "GLOVE_TOKEN_PATTERN",
    "SAMPLE_RATE",
    "GloveEncoder",
    "OpenSmileEncoder",
    "SpectralConfig",
    "SpectralEncoder",
    "clear_glove_cache",
    "tokenize_words",
]

SAMPLE_RATE = 16000


def _pad_sequences(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad ``(T_i, D)`` sequences to ``(B, T_max, D)`` and build the ``(B, T_max)`` bool mask."""
    t_max = max(f.shape[0] for f in feats)
    hidden = feats[0].new_zeros(len(feats), t_max, feats[0].shape[1])
    mask = torch.zeros(len(feats), t_max, dtype=torch.bool, device=feats[0].device)
    for i, f in enumerate(feats):
        hidden[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    return hidden, mask


class _WaveformEncoder(Encoder):
    """Audio encoder on 16 kHz waveforms that computes features one utterance at a time."""

    modality = "audio"

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Batch 1-D float waveforms at 16 kHz with zero padding.

        Args:
            inputs: Waveforms (numpy arrays or tensors), each ``(L_i,)`` with ``L_i >= 1``.

        Returns:
            ``waveforms`` ``(B, L_max)`` float32 and ``lengths`` ``(B,)`` int64.

        Raises:
            EncoderError: Empty batch, or a waveform that is empty, not 1-D or not finite (names its index).
        """
        if len(inputs) == 0:
            raise EncoderError(f"{self.name}: empty batch")
        waves = []
        for i, w in enumerate(inputs):
            t = torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w).detach().to(torch.float32).cpu()
            if t.ndim != 1:
                raise EncoderError(f"{self.name}: waveform {i} must be 1-D (mono samples), got shape {tuple(t.shape)}")
            if t.numel() == 0:
                raise EncoderError(f"{self.name}: waveform {i} is empty")
            if not torch.isfinite(t).all():
                raise EncoderError(f"{self.name}: waveform {i} contains NaN or infinite samples")
            waves.append(t)
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        batch = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            batch[i, : w.numel()] = w
        return {"waveforms": batch, "lengths": lengths}

    def _features(self, wave: Tensor, index: int) -> Tensor:
        """Features ``(T, D)`` float32 of one utterance ``(L,)``."""
        raise NotImplementedError

    def forward(self, waveforms: Tensor, lengths: Tensor) -> EncoderOutput:  # type: ignore[override]
        """Encode a padded batch; only the first ``lengths[i]`` samples of row ``i`` are read.

        Args:
            waveforms: ``(B, L_max)`` samples at 16 kHz.
            lengths: ``(B,)`` valid samples per row.

        Returns:
            ``hidden`` ``(B, T, D)``, ``mask`` ``(B, T)``, ``pooled`` ``(B, D)`` (masked mean over frames).
        """
        feats = []
        for i in range(waveforms.shape[0]):
            n = int(lengths[i])
            if n <= 0:
                raise EncoderError(f"{self.name}: waveform {i} is empty")
            feats.append(self._features(waveforms[i, :n], i))
        hidden, mask = _pad_sequences(feats)
        return EncoderOutput(hidden=hidden, mask=mask, pooled=masked_mean(hidden, mask))


# ---------------------------------------------------------------------------------------------------
# MFCC / log-mel


@dataclass
class SpectralConfig:
    """Settings of a log-mel or MFCC front-end (see :mod:`emofuse.encoders.spectral`).

    Attributes:
        kind: ``"mfcc"`` or ``"logmel"``.
        sample_rate: Rate the waveforms are at (Hz).
        n_fft: FFT size.
        hop_length: Hop in samples; frame rate = ``sample_rate / hop_length``.
        win_length: Window length (``None`` = ``n_fft``).
        window: ``"hann"`` or ``"hamming"`` (periodic).
        n_mels: Mel filters.
        n_mfcc: Cepstral coefficients kept (MFCC only; ``<= n_mels``).
        f_min: Lowest filter corner (Hz).
        f_max: Highest filter corner (Hz; ``None`` = Nyquist).
        mel_norm: ``None`` (peak 1) or ``"slaney"`` (unit area).
        log: ``"db"`` (floored at ``max - top_db``) or ``"natural"`` (``log(x + 1e-6)``).
        top_db: Dynamic range for ``"db"``; ``None`` = no floor.
        deltas: Append Δ and ΔΔ (output dim ×3, order ``[c, Δ, ΔΔ]``).
        delta_width: ``N`` of the HTK regression (2 = 5-frame window).
        max_frames: Keep at most this many frames (after deltas); ``None`` = all.
    """

    kind: Literal["mfcc", "logmel"] = "mfcc"
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    win_length: int | None = None
    window: WindowKind = "hann"
    n_mels: int = 80
    n_mfcc: int = 40
    f_min: float = 0.0
    f_max: float | None = None
    mel_norm: Literal["slaney"] | None = None
    log: LogKind = "db"
    top_db: float | None = 80.0
    deltas: bool = False
    delta_width: int = 2
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("mfcc", "logmel"):
            raise ValueError(f"kind must be 'mfcc' or 'logmel', got {self.kind!r}")
        for key in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "delta_width"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if self.win_length is not None and not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in [1, n_fft={self.n_fft}], got {self.win_length!r}")
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"window must be 'hann' or 'hamming', got {self.window!r}")
        if self.log not in ("db", "natural"):
            raise ValueError(f"log must be 'db' or 'natural', got {self.log!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be None or 'slaney', got {self.mel_norm!r}")
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={self.f_min}, f_max={f_max}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must not exceed n_mels ({self.n_mels})")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames!r}")

    @property
    def output_dim(self) -> int:
        """Feature size per frame."""
        base = self.n_mfcc if self.kind == "mfcc" else self.n_mels
        return base * (3 if self.deltas else 1)


class SpectralEncoder(_WaveformEncoder):
    """Log-mel spectrogram or MFCC (optionally with Δ/ΔΔ) in torch, no parameters.

    Frames are centred (``1 + L // hop_length`` frames for ``L`` samples; 1 s at hop 160 → 101), each
    utterance is processed on its own valid samples, so padding never changes a valid frame.

    Args:
        name: Registered name.
        config: Front-end settings.

    Example:
        >>> import torch
        >>> enc = SpectralEncoder("logmel", SpectralConfig(kind="logmel", n_mels=80, log="natural"))
        >>> out = enc.encode([torch.zeros(16000), torch.zeros(8000)])
        >>> tuple(out.hidden.shape), out.mask.sum(1).tolist(), enc.frame_rate
        ((2, 101, 80), [101, 51], 100.0)
    """

    def __init__(self, name: str, config: SpectralConfig) -> None:
        c = config
        settings = {"encoder": "spectral/v1", **asdict(c)}
        what = f"{c.n_mfcc} MFCC of {c.n_mels}" if c.kind == "mfcc" else f"{c.n_mels}"
        provenance = Provenance(
            name=name,
            resolved="handcrafted",
            source="emofuse.encoders.spectral (torch.stft)",
            architecture=(
                f"{what} HTK mels, n_fft={c.n_fft}, hop={c.hop_length}, {c.window} window, log={c.log}"
                + (", +Δ+ΔΔ" if c.deltas else "")
                + (f", max {c.max_frames} frames" if c.max_frames else "")
            ),
            fingerprint=settings_fingerprint(settings),
        )
        super().__init__(name, c.output_dim, provenance)
        self.config = c
        self.frame_rate = c.sample_rate / c.hop_length
        if c.max_frames is not None:
            self.max_input = c.max_frames * c.hop_length / c.sample_rate
        self._fb = mel_filterbank(c.n_fft // 2 + 1, c.n_mels, c.sample_rate, c.f_min, c.f_max, c.mel_norm)  # (F, M)
        self._dct = dct_matrix(c.n_mfcc, c.n_mels) if c.kind == "mfcc" else None  # (M, n_mfcc)

    def _features(self, wave: Tensor, index: int) -> Tensor:
        c = self.config
        power = power_spectrogram(wave, c.n_fft, c.hop_length, c.win_length, c.window)  # (T, F)
        feats = log_compress(power @ self._fb.to(power.device), c.log, c.top_db)  # (T, M)
        if self._dct is not None:
            feats = feats @ self._dct.to(power.device)  # (T, n_mfcc)
        if c.deltas:
            d1 = compute_deltas(feats, c.delta_width)
            feats = torch.cat([feats, d1, compute_deltas(d1, c.delta_width)], dim=-1)  # (T, 3 n_mfcc)
        if c.max_frames is not None:
            feats = feats[: c.max_frames]
        return feats.to(torch.float32)


# ---------------------------------------------------------------------------------------------------
# openSMILE

_OPENSMILE_SETS = {
    # registered name: (opensmile.FeatureSet member, description)
    "egemaps": ("eGeMAPSv02", "eGeMAPS v02 (88 functionals / 25 LLDs)"),
    "compare": ("ComParE_2016", "ComParE 2016 (6373 functionals / 65 LLDs)"),
    "emobase": ("emobase", "emobase (988 functionals / 26 LLDs; emo_large's shipped sibling)"),
    "is09-emotion": ("IS09", "INTERSPEECH 2009 Emotion Challenge (384 functionals / 16 LLDs)"),
}


@lru_cache(maxsize=16)
def _smile(feature_set: str, level: str) -> Any:
    opensmile = require("opensmile", extra="features", purpose="openSMILE features (eGeMAPS, ComParE)")
    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set),
        feature_level=(
            opensmile.FeatureLevel.Functionals if level == "functionals" else opensmile.FeatureLevel.LowLevelDescriptors
        ),
    )


class OpenSmileEncoder(_WaveformEncoder):
    """openSMILE features: utterance functionals (``T = 1``) or low-level descriptors at 100 frames/s.

    Licence: openSMILE is audEERING's software, free for research and non-commercial use only; a
    commercial use needs a licence from audEERING. Install with ``pip install 'emofuse[features]'``.

    Args:
        name: Registered name.
        feature_set: Member name of ``opensmile.FeatureSet`` (e.g. ``"eGeMAPSv02"``).
        level: ``"functionals"`` (hidden ``(B, 1, D)``, pooled = that vector, ``frame_rate`` None) or
            ``"lld"`` (hidden ``(B, T, D)`` at 100 frames/s, pooled = masked mean).

    Raises:
        MissingDependencyError: ``opensmile`` is not installed (names the ``features`` extra).
    """

    def __init__(self, name: str, feature_set: str, level: Literal["functionals", "lld"] = "functionals") -> None:
        if level not in ("functionals", "lld"):
            raise ValueError(f"level must be 'functionals' or 'lld', got {level!r}")
        smile = _smile(feature_set, level)
        opensmile = require("opensmile", extra="features")
        version = getattr(opensmile, "__version__", "unknown")
        config_path = Path(smile.config_path)
        config_hash = hashlib.sha256(config_path.read_bytes()).hexdigest()[:16] if config_path.is_file() else ""
        settings = {
            "encoder": "opensmile/v1",
            "opensmile": version,
            "feature_set": feature_set,
            "level": level,
            "config_sha": config_hash,
        }
        provenance = Provenance(
            name=name,
            resolved="handcrafted",
            source=f"opensmile {version} ({config_path.name})",
            architecture=f"openSMILE {feature_set} {level} ({len(smile.feature_names)} features)",
            fingerprint=settings_fingerprint(settings),
            notes=["openSMILE licence: research and non-commercial use only"],
        )
        super().__init__(name, len(smile.feature_names), provenance)
        self.feature_set = feature_set
        self.level = level
        self.feature_names: list[str] = list(smile.feature_names)
        self.frame_rate = 100.0 if level == "lld" else None

    def _features(self, wave: Tensor, index: int) -> Tensor:
        smile = _smile(self.feature_set, self.level)
        signal = wave.detach().cpu().to(torch.float32).numpy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Segment too short")
            values = np.asarray(smile.process_signal(signal, SAMPLE_RATE).to_numpy(), dtype=np.float32)  # (T, D)
        if values.shape[0] == 0 or np.isnan(values).all():
            raise EncoderError(
                f"{self.name}: waveform {index} ({signal.size} samples, {signal.size / SAMPLE_RATE:.3f} s) is too "
                f"short for openSMILE {self.feature_set} {self.level}"
            )
        return torch.from_numpy(np.nan_to_num(values, nan=0.0)).to(wave.device)


# ---------------------------------------------------------------------------------------------------
# Registry


def _spectral_builder(spec: EncoderSpec, resolution: Resolution, **kwargs: Any) -> Encoder:
    try:
        config = SpectralConfig(**kwargs)
    except TypeError as e:
        raise EncoderError(f"encoder {spec.name!r}: {e}") from None
    return SpectralEncoder(spec.name, config)


def _opensmile_builder(spec: EncoderSpec, resolution: Resolution, **kwargs: Any) -> Encoder:
    return OpenSmileEncoder(spec.name, **kwargs)


def _glove_builder(spec: EncoderSpec, resolution: Resolution, **kwargs: Any) -> Encoder:
    if kwargs.get("path") is None:
        raise EncoderError("encoder 'glove' needs path= to a GloVe text file (e.g. glove.840B.300d.txt)")
    return GloveEncoder(spec.name, **kwargs)


register_encoder(
    EncoderSpec(
        name="mfcc",
        modality="audio",
        builder=_spectral_builder,
        pretrained=False,
        description="80 MFCC (CMD/MulT baseline: n_fft 400, hop 200, 128 HTK mels, dB), 80 frames/s",
        defaults=dict(kind="mfcc", n_fft=400, hop_length=200, n_mels=128, n_mfcc=80, log="db", top_db=80.0),
    )
)
register_encoder(
    EncoderSpec(
        name="mfcc-thesis",
        modality="audio",
        builder=_spectral_builder,
        pretrained=False,
        description="40 MFCC + Δ + ΔΔ = 120-d (25 ms Hamming, 10 ms hop, 64 mels), at most 1000 frames",
        defaults=dict(
            kind="mfcc",
            n_fft=400,
            hop_length=160,
            window="hamming",
            n_mels=64,
            n_mfcc=40,
            log="natural",
            deltas=True,
            max_frames=1000,
        ),
    )
)
register_encoder(
    EncoderSpec(
        name="logmel",
        modality="audio",
        builder=_spectral_builder,
        pretrained=False,
        description="80 log-mel (n_fft 400, hop 160, HTK mels, log(x + 1e-6)), 100 frames/s",
        defaults=dict(kind="logmel", n_fft=400, hop_length=160, n_mels=80, log="natural"),
    )
)
for _name, (_set, _desc) in _OPENSMILE_SETS.items():
    register_encoder(
        EncoderSpec(
            name=_name,
            modality="audio",
            builder=_opensmile_builder,
            pretrained=False,
            description=f"openSMILE {_desc}; research/non-commercial licence",
            defaults=dict(feature_set=_set, level="functionals"),
        )
    )
register_encoder(
    EncoderSpec(
        name="glove",
        modality="text",
        builder=_glove_builder,
        pretrained=False,
        description="GloVe word vectors from a user file (path=), zero vector for unknown words",
    )
)
