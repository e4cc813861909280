"""A teacher's input embedding, copied out of an :class:`~emofuse.encoders.Encoder`, behind one call signature.

CMD students (specs/cmd.md §2.3) start from their teacher's input embedding with the teacher's weights *copied
in*: the wav2vec 2.0 CNN feature encoder + feature projection, the BERT embedding layer, or Whisper's
convolutional front-end + positions. Each encoder family exposes that module with its own forward signature;
:class:`InputEmbedding` adapts them all to

``forward(inputs) -> (x (B, T, D), mask (B, T) bool)``

where ``inputs`` is exactly the dict the encoder's ``preprocess`` returns, and ``T`` and ``mask`` are those of
the teacher's hidden states (frames for audio, tokens for text).

Families (detected from the module the encoder returns):

* ``text`` (BERT, RoBERTa, MiniLM, MPNet): ``embeddings(input_ids[, token_type_ids])``; mask = ``attention_mask``.
* ``wav2vec2`` (wav2vec 2.0, HuBERT, WavLM): ``embedding(input_values, lengths)``, input trimmed to the longest
  valid row as the teacher does; frame lengths from the CNN's kernels and strides
  (``floor((L - k) / s) + 1`` per layer).
* ``whisper``: ``embedding(input_features, feature_lengths)`` (conv front-end + sliced positions), 50 frames/s,
  ``ceil(frames / 2)`` valid frames; clips longer than the position table (30 s) are embedded window by window
  as the teacher encodes them.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, cast

import torch
from torch import Tensor, nn

__all__ = ["InputEmbedding", "embedding_family"]


def embedding_family(module: nn.Module) -> str:
    """Which adapter a teacher's input-embedding module needs: ``text``, ``wav2vec2`` or ``whisper``.

    Raises:
        ValueError: An unknown module (the message names its class).
    """
    if hasattr(module, "word_embeddings"):
        return "text"
    if hasattr(module, "feature_extractor") and hasattr(module, "feature_projection"):
        return "wav2vec2"
    if hasattr(module, "conv1") and hasattr(module, "conv2"):
        return "whisper"
    name = type(module).__name__
    if "whisper" in name.lower() or "whisper" in type(module).__module__:
        return "whisper"
    raise ValueError(f"no input-embedding adapter for {name} (known: BERT-style embeddings, wav2vec2 CNN, Whisper)")


def _conv_geometry(feature_extractor: nn.Module) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of each Conv1d of a wav2vec2-style CNN, in order."""
    convs = [m for m in feature_extractor.modules() if isinstance(m, nn.Conv1d)]
    if not convs:
        raise ValueError("the wav2vec2 feature extractor has no Conv1d layers")
    return [(int(c.kernel_size[0]), int(c.stride[0])) for c in convs]


def _output_dim(module: nn.Module, family: str, fallback: int) -> int:
    if family == "text":
        return int(cast(nn.Embedding, module.word_embeddings).embedding_dim)
    if family == "wav2vec2":
        linears = [m for m in cast(nn.Module, module.feature_projection).modules() if isinstance(m, nn.Linear)]
        return int(linears[-1].out_features) if linears else fallback
    conv2 = getattr(module, "conv2", None)
    return int(conv2.out_channels) if isinstance(conv2, nn.Conv1d) else fallback


class InputEmbedding(nn.Module):
    """An independent copy of an encoder's input embedding with a uniform ``forward(inputs) -> (x, mask)``.

    Args:
        encoder: The teacher (any :class:`~emofuse.encoders.Encoder` whose ``input_embedding()`` works).
        trainable: Leave the copied parameters trainable (spec A6 default) or freeze them.
        narrow: ``0``: copy the teacher's embedding. ``C > 0`` (Whisper teachers only): a fresh front-end of ``C``
            channels with the teacher's frame geometry and no positions, randomly initialised and trainable
            (:meth:`~emofuse.encoders.whisper.WhisperInputEmbedding.narrow`), nothing copied.

    Raises:
        ValueError: ``narrow`` for a teacher that is not Whisper, or with ``trainable=False``.

    Attributes:
        family: ``text``, ``wav2vec2`` or ``whisper``.
        narrow: Channels of a narrow front-end, ``0`` for a copied embedding.
        output_dim: Size ``D`` of the embedding (the teacher's width, e.g. 768), read from the module.
        teacher: Registered name of the encoder it was copied from.

    Example:
        >>> import warnings
        >>> from emofuse.encoders import create_encoder
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     enc = create_encoder("tiny-bert", allow_random=True)
        >>> emb = InputEmbedding(enc)
        >>> x, mask = emb(enc.preprocess(["hello there", "ok"]))
        >>> emb.family, x.shape[-1], mask.shape == x.shape[:2]
        ('text', 32, True)
    """

    def __init__(self, encoder: Any, trainable: bool = True, narrow: int = 0) -> None:
        super().__init__()
        source = encoder.input_embedding()
        self.family = embedding_family(source)
        self.narrow = narrow
        if narrow:
            if self.family != "whisper":
                raise ValueError(f"narrow front-ends exist for Whisper teachers only, not a {self.family} embedding")
            if not trainable:
                raise ValueError("a narrow front-end starts from random weights: it cannot be frozen")
            self.module = source.narrow(narrow)
        else:
            self.module = copy.deepcopy(source)  # a copy: later changes to the teacher never reach the student
        self.module.requires_grad_(trainable)
        for sub in self.module.modules():
            if hasattr(sub, "_requires_grad"):  # HF wav2vec2 CNN flag (False when the teacher froze its CNN)
                sub._requires_grad = trainable
        self.teacher = str(getattr(encoder, "name", type(encoder).__name__))
        self.output_dim = _output_dim(self.module, self.family, int(encoder.output_dim))
        params = inspect.signature(self.module.forward).parameters
        self._token_types = "token_type_ids" in params
        self._geometry = (
            _conv_geometry(cast(nn.Module, self.module.feature_extractor)) if self.family == "wav2vec2" else []
        )

    def frames(self, lengths: Tensor) -> Tensor:
        """Valid output frames for ``lengths`` valid samples ``(B,)`` (``wav2vec2`` family)."""
        out = lengths.long()
        for k, s in self._geometry:
            out = torch.div(out - k, s, rounding_mode="floor") + 1
        return out.clamp_min(0)

    def forward(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Embed a preprocessed batch.

        Args:
            inputs: The teacher encoder's ``preprocess`` output (``input_ids``/``attention_mask``
                [/``token_type_ids``] for text, ``input_values``/``attention_mask`` for wav2vec2,
                ``input_features``/``feature_lengths`` for Whisper).

        Returns:
            ``x (B, T, D)`` and ``mask (B, T)`` bool (True at valid steps), ``T`` as in the teacher's output.
        """
        if self.family == "text":
            return self._text(inputs)
        if self.family == "wav2vec2":
            return self._wav2vec2(inputs)
        return self._whisper(inputs)

    def _text(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = inputs["input_ids"]  # (B, L)
        attn = inputs.get("attention_mask")
        kwargs: dict[str, Tensor] = {"input_ids": ids}
        if self._token_types and inputs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        x = self.module(**kwargs)  # (B, L, D)
        mask = attn.bool() if attn is not None else torch.ones_like(ids, dtype=torch.bool)
        return x, mask

    def _wav2vec2(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        wav = inputs["input_values"]  # (B, S)
        attn = inputs.get("attention_mask")
        if attn is None:
            lengths = torch.full(wav.shape[:1], wav.shape[1], dtype=torch.long, device=wav.device)
        else:
            lengths = attn.sum(-1).long()  # (B,)
        wav = wav[:, : int(lengths.max()) or wav.shape[1]]  # the teacher trims to the longest valid row too
        # a row without samples (an absent modality) runs on its zeros, and gets no valid frame
        x = self.module(wav, torch.where(lengths > 0, lengths, wav.shape[1]))  # (B, T, D)
        mask = torch.arange(x.shape[1], device=x.device)[None] < self.frames(lengths)[:, None]  # (B, T)
        return x, mask

    def _whisper(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        feats = inputs["input_features"]  # (B, M, F) log-mel, 100 frames/s
        b, t = feats.shape[0], feats.shape[-1]
        lengths = inputs.get("feature_lengths")
        lengths = torch.full((b,), t, device=feats.device) if lengths is None else lengths.to(feats.device)
        valid = lengths.long().clamp(0, t)  # (B,); 0: an absent row (no valid frame)
        lengths = valid.clamp_min(1)  # (B,)
        longest = int(lengths.max())
        feats = feats[..., :longest]  # the teacher trims to the longest valid row too
        # windows of the position table (30 s), as the teacher encodes long clips; one window otherwise
        window = 2 * (self.module.max_frames or longest)
        pieces = []
        for start in range(0, longest, window):
            n = (lengths - start).clamp(0, window)  # (B,) valid mel frames in this window
            pieces.append(self.module(feats[..., start : start + window], n))  # (B, ceil(w / 2), D)
        x = torch.cat(pieces, dim=1)  # (B, ceil(F / 2), D)
        mask = torch.arange(x.shape[1], device=x.device)[None] < ((valid + 1) // 2)[:, None]  # (B, T)
        return x, mask
