"""Tiny deterministic encoders and corpora for tests (never imported by package code).

:class:`DummyAudioEncoder` maps each 20 ms frame (320 samples at 16 kHz, so 50 frames per second)
through a fixed, seeded linear projection and a tanh; :class:`DummyTextEncoder` embeds characters.
Both are frame-wise (padding never changes a valid frame), count the utterances they encode
(:attr:`calls`), and register under ``dummy-audio`` / ``dummy-text`` via :data:`DUMMY_SPECS` when
a test adds them to the encoder registry (e.g. with ``monkeypatch.setitem``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from emofuse.data.audio import SAMPLE_RATE, save_wav
from emofuse.data.manifest import Utterance
from emofuse.encoders._registry import EncoderSpec, Resolution
from emofuse.encoders.base import Encoder, EncoderOutput, Provenance, state_fingerprint
from emofuse.layers.pooling import masked_mean

__all__ = ["DUMMY_SPECS", "HOP", "DummyAudioEncoder", "DummyTextEncoder", "make_wav_corpus"]

#: Samples per frame of :class:`DummyAudioEncoder` (16 kHz / 320 = 50 frames per second).
HOP = 320


class _Counting(Encoder):
    def __init__(self, name: str, dim: int, seed: int, layer: int | None, source: str, arch: str) -> None:
        super().__init__(name, dim, Provenance(name=name, resolved="random", source=source, architecture=arch))
        self.seed = seed
        self.layer = layer
        self._calls = 0

    def _finish(self) -> None:
        self.provenance.fingerprint = state_fingerprint(self, extra=f"seed={self.seed}|layer={self.layer}")
        self.freeze()

    @property
    def calls(self) -> int:
        """Number of utterances encoded so far."""
        return self._calls

    def _out(self, hidden: Tensor, mask: Tensor) -> EncoderOutput:
        if self.layer:  # "deeper layers": repeated squashing, so each layer gives different values
            for _ in range(self.layer):
                hidden = torch.tanh(1.5 * hidden)
        hidden = hidden * mask.unsqueeze(-1)  # (B, T, D), zero at padding
        self._calls += hidden.shape[0]
        return EncoderOutput(hidden=hidden, mask=mask, pooled=masked_mean(hidden, mask))


class DummyAudioEncoder(_Counting):
    """Frame-wise ``tanh(frame @ W)`` at 50 fps with a seeded weight ``W`` (320, dim).

    Args:
        dim: Output size ``D``.
        seed: Seed of the weight.
        layer: ``None``/0, or ``k``: the output is squashed ``k`` more times (a stand-in for layers).
        name: Registered name to report.
    """

    modality = "audio"
    frame_rate = SAMPLE_RATE / HOP

    def __init__(self, dim: int = 8, seed: int = 0, layer: int | None = None, name: str = "dummy-audio") -> None:
        super().__init__(name, dim, seed, layer, f"emofuse.testing seed={seed}", f"frame-wise linear {HOP}->{dim}")
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(HOP, dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, HOP, generator=g) * (4.0 / math.sqrt(HOP)))
        self._finish()

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Pad 16 kHz waveforms to ``input_values (B, L)`` with ``lengths (B,)``."""
        wavs = [torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1) for w in inputs]
        lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
        x = torch.zeros(len(wavs), int(lengths.max()) if wavs else 0)
        for i, w in enumerate(wavs):
            x[i, : len(w)] = w
        return {"input_values": x, "lengths": lengths}

    def forward(self, input_values: Tensor, lengths: Tensor) -> EncoderOutput:  # type: ignore[override]
        """Encode ``(B, L)`` samples into ``(B, L // 320, D)`` frames."""
        b, n = input_values.shape
        t = n // HOP
        frames = input_values[:, : t * HOP].reshape(b, t, HOP)  # (B, T, 320)
        mask = torch.arange(t, device=lengths.device).unsqueeze(0) < (lengths // HOP).unsqueeze(1)  # (B, T)
        return self._out(torch.tanh(self.proj(frames)), mask)


class DummyTextEncoder(_Counting):
    """Character embeddings (``ord(c) % 256``) from a seeded table, one token per character.

    Args:
        dim: Output size ``D``.
        seed: Seed of the embedding table.
        layer: As in :class:`DummyAudioEncoder`.
        name: Registered name to report.
    """

    modality = "text"

    def __init__(self, dim: int = 8, seed: int = 0, layer: int | None = None, name: str = "dummy-text") -> None:
        super().__init__(name, dim, seed, layer, f"emofuse.testing seed={seed}", f"char embedding 256x{dim}")
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(256, dim)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(256, dim, generator=g))
        self._finish()

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Characters to ``input_ids (B, T)`` and ``attention_mask (B, T)``."""
        t = max((len(s) for s in inputs), default=0)
        ids = torch.zeros(len(inputs), t, dtype=torch.long)
        mask = torch.zeros(len(inputs), t, dtype=torch.bool)
        for i, s in enumerate(inputs):
            ids[i, : len(s)] = torch.tensor([ord(c) % 256 for c in s], dtype=torch.long)
            mask[i, : len(s)] = True
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:  # type: ignore[override]
        """Embed ``(B, T)`` characters into ``(B, T, D)``."""
        return self._out(torch.tanh(self.embed(input_ids)), attention_mask.bool())


def _build(spec: EncoderSpec, resolution: Resolution, **options: Any) -> Encoder:
    cls = DummyAudioEncoder if spec.modality == "audio" else DummyTextEncoder
    return cls(name=spec.name, **options)


#: Registry entries for the dummies (add them in a test: ``monkeypatch.setitem(_registry._ENCODERS, ...)``).
DUMMY_SPECS = (
    EncoderSpec("dummy-audio", "audio", _build, pretrained=False, description="TEST ONLY: frame-wise dummy"),
    EncoderSpec("dummy-text", "text", _build, pretrained=False, description="TEST ONLY: character dummy"),
)


def make_wav_corpus(
    folder: str | Path, n: int, seconds: float = 0.5, seed: int = 0, labels: Sequence[str] = ("neutral", "happy")
) -> list[Utterance]:
    """Write ``n`` short sine + noise WAVs (16 kHz) and return their records (relative paths).

    Args:
        folder: Where the ``wav/`` folder goes (pass it as ``root=`` when extracting).
        n: Number of utterances; ``u000``, ``u001``, ...
        seconds: Base duration; utterance ``i`` lasts ``seconds * (1 + (i % 3) / 4)``.
        seed: Noise seed.
        labels: Labels assigned in turn.

    Returns:
        Records with ``audio="wav/u000.wav"``, a short transcript and a label.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    out = []
    for i in range(n):
        dur = seconds * (1 + (i % 3) / 4)
        t = np.arange(int(dur * SAMPLE_RATE)) / SAMPLE_RATE
        wav = 0.3 * np.sin(2 * np.pi * (120 + 15 * i) * t) + 0.05 * rng.standard_normal(len(t))
        save_wav(folder / "wav" / f"u{i:03d}.wav", wav.astype(np.float32))
        label = labels[i % len(labels)]
        out.append(Utterance(id=f"u{i:03d}", audio=f"wav/u{i:03d}.wav", text=f"utterance {i} is {label}", label=label))
    return out
