"""ONNX export of a trained CMD student: raw audio + token ids in, class probabilities out, dynamic lengths.

The exported graph takes exactly what the teachers' ``preprocess`` produce (the tensors
:class:`~emofuse.inference.Predictor` builds) and returns the fused probabilities ``(B, C)`` in the checkpoint's
class order. Batch and time axes are dynamic:

======================  ==================  =====================================================
input                   shape               meaning
======================  ==================  =====================================================
``input_values``        ``(B, S)`` float32  normalised 16 kHz samples, zero-padded (wav2vec2-style teacher)
``audio_mask``          ``(B, S)`` int64    1 at real samples
``input_features``      ``(B, M, F)`` f32   log-mel frames, ``F`` even, at most 3000 (Whisper teacher, <= 30 s)
``feature_lengths``     ``(B,)`` int64      valid mel frames per row (Whisper teacher)
``input_ids``           ``(B, L)`` int64    WordPiece ids of the text teacher's tokenizer
``attention_mask``      ``(B, L)`` int64    1 at real tokens
``token_type_ids``      ``(B, L)`` int64    only for teachers that take them (BERT)
======================  ==================  =====================================================

Output: ``probs (B, C)``. A unimodal student has only its own modality's inputs.

Two things differ from the eager forward so that the graph has no Python control flow on values, with identical
results (checked by the tests against PyTorch): the wav2vec2 CNN's GroupNorm (which PyTorch runs one utterance at
a time so padding stays out of its statistics) is computed over each row's valid frames with a mask, and the
input is not trimmed to the longest valid row (padding the model never looks at). A Whisper-based student's graph
takes clips up to Whisper's 30 s window (the eager model embeds longer clips window by window in a Python loop);
the :class:`~emofuse.inference.Predictor`'s windows (10 s by default) stay well below that.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.layers.pooling import masked_mean
from emofuse.layers.transformer import sinusoidal_positions
from emofuse.utils.optional import require

__all__ = [
    "ExportError",
    "OnnxStudent",
    "example_inputs",
    "export_onnx",
    "onnx_input_names",
    "onnx_inputs",
    "onnx_session",
    "verify_onnx",
]

_AUDIO_INPUTS = {"wav2vec2": ("input_values", "audio_mask"), "whisper": ("input_features", "feature_lengths")}
_TEXT_INPUTS = ("input_ids", "attention_mask")


class ExportError(ValueError):
    """A model cannot be exported, or the output file is in the way. The message names the cause."""


def _masked_group_norm(x: Tensor, norm: nn.GroupNorm, valid: Tensor) -> Tensor:
    """GroupNorm over the valid frames of each row only (what a per-utterance pass computes).

    Args:
        x: ``(B, C, T)`` CNN features.
        norm: The trained ``GroupNorm``.
        valid: ``(B, T)`` bool, True at valid frames.

    Returns:
        ``(B, C, T)`` normalised features (values at invalid frames are unspecified).
    """
    b, c, t = x.shape
    g = norm.num_groups
    xg = x.reshape(b, g, c // g, t)  # (B, G, C/G, T)
    m = valid[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
    count = (m.sum(dim=-1, keepdim=True) * (c // g)).clamp_min(1.0)  # (B, 1, 1, 1)
    mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count  # (B, G, 1, 1)
    var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count  # biased, as GroupNorm
    y = ((xg - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, t)
    if norm.affine:
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
    return y


class _SpeechEmbedding(nn.Module):
    """Export form of a wav2vec2-style input embedding: batched CNN with masked GroupNorm, then the projection."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        source = cast(Any, embedding).module  # SpeechInputEmbedding
        self.layers = cast(nn.ModuleList, source.feature_extractor.conv_layers)
        self.projection = source.feature_projection
        convs = [cast(nn.Conv1d, cast(Any, layer).conv) for layer in self.layers]
        self.geometry = [(int(c.kernel_size[0]), int(c.stride[0])) for c in convs]

    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S)`` samples and ``(B,)`` valid lengths → ``(B, T, D)`` and the frame mask ``(B, T)``."""
        h = wav[:, None]  # (B, 1, S)
        n = lengths.long()
        for module, (k, s) in zip(self.layers, self.geometry, strict=True):
            layer = cast(Any, module)
            n = (torch.div(n - k, s, rounding_mode="floor") + 1).clamp_min(0)
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                h = layer.conv(h)  # (B, C, T_l)
                valid = torch.arange(h.shape[-1], device=h.device)[None] < n[:, None]
                h = layer.activation(_masked_group_norm(h, norm, valid))
            else:
                h = layer(h)  # per-frame LayerNorm or none: padding cannot leak into valid frames
        out = self.projection(h.transpose(1, 2))
        x = out[0] if isinstance(out, tuple) else out  # (B, T, D)
        mask = torch.arange(x.shape[1], device=x.device)[None] < n[:, None]  # (B, T)
        return x, mask


class _WhisperEmbedding(nn.Module):
    """Export form of a Whisper input embedding (one 30 s window): masked log-mel → convs → sliced positions."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        source = cast(Any, embedding).module  # WhisperInputEmbedding
        self.conv1, self.conv2, self.positions = source.conv1, source.conv2, source.embed_positions

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, M, F)`` log-mel (``F`` even) and ``(B,)`` valid frames → ``(B, F / 2, D)`` and the mask."""
        n = lengths.long()
        valid = torch.arange(feats.shape[-1], device=feats.device)[None] < n[:, None]  # (B, F)
        x = feats * valid[:, None, :].to(feats.dtype)  # padding = the convs' zero padding
        h = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)  # (B, F/2, D)
        if self.positions is not None:  # a narrow front-end has none
            h = h + self.positions.weight[: h.shape[1]]
        mask = torch.arange(h.shape[1], device=h.device)[None] < ((n + 1) // 2)[:, None]  # (B, F/2)
        return h, mask


class OnnxStudent(nn.Module):
    """A trained :class:`~emofuse.models.cmd_student.CMDStudent` with positional tensor inputs, returning probs.

    Args:
        model: The student (eval mode, with a classifier head; wav2vec2-style or Whisper audio teacher).
        token_types: Give the graph a ``token_type_ids`` input (default: when the text embedding takes one; pass
            ``False`` when the tokenizer produces none, so the segment ids are BERT's default zeros).

    Attributes:
        input_names: The positional inputs in order (see the module docstring).

    Raises:
        ExportError: The model is not a CMD student with a head, or its audio embedding is of an unknown family.
    """

    def __init__(self, model: nn.Module, token_types: bool | None = None) -> None:
        super().__init__()
        from emofuse.models.base import EmotionModel
        from emofuse.models.cmd_student import CMDStudent

        if isinstance(model, EmotionModel) and model.export_limit is not None:
            raise ExportError(f"model {model.model_name!r} cannot be exported to ONNX: {model.export_limit}")
        if not isinstance(model, CMDStudent):
            raise ExportError(f"only CMD students can be exported to ONNX, got {type(model).__name__}")
        if not model.config.get("with_head", True):
            raise ExportError(
                "the student has no classifier (a Stage-1 distillation checkpoint); export a fine-tuned one"
            )
        self.model = model
        self.modalities = tuple(model.modalities)
        self.speech: nn.Module | None = None
        self.audio_family = ""
        if "audio" in self.modalities:
            emb = model.branch("audio").embedding
            self.audio_family = emb.family
            if emb.family == "wav2vec2":
                self.speech = _SpeechEmbedding(emb)
            elif emb.family == "whisper":
                self.speech = _WhisperEmbedding(emb)
            else:
                raise ExportError(f"audio teacher {emb.teacher!r}: no ONNX export for {emb.family} input embeddings")
        takes = "text" in self.modalities and model.branch("text").embedding._token_types
        self.token_types = bool(takes and (token_types is None or token_types))
        self.input_names = onnx_input_names(self.modalities, self.token_types, self.audio_family or "wav2vec2")

    def _finish_embed(self, m: str, x: Tensor, mask: Tensor) -> Tensor:
        branch = self.model.branch(m)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        h = branch.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d)
        if branch.positions:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h)
        return h

    def forward(self, *inputs: Tensor) -> Tensor:
        """Inputs in :attr:`input_names` order → fused class probabilities ``(B, C)``."""
        named = dict(zip(self.input_names, inputs, strict=True))
        h, masks = {}, {}
        if self.audio_family == "wav2vec2":
            x, masks["audio"] = self.speech(named["input_values"], named["audio_mask"].sum(-1))  # type: ignore[misc]
            h["audio"] = self._finish_embed("audio", x, masks["audio"])
        elif self.audio_family == "whisper":
            x, masks["audio"] = self.speech(named["input_features"], named["feature_lengths"])  # type: ignore[misc]
            h["audio"] = self._finish_embed("audio", x, masks["audio"])
        if "text" in self.modalities:
            text = {k: named[k] for k in ("input_ids", "token_type_ids") if k in named}
            x, _ = self.model.branch("text").embedding({**text, "attention_mask": named["attention_mask"]})
            masks["text"] = named["attention_mask"].bool()
            h["text"] = self._finish_embed("text", x, masks["text"])
        model = self.model
        if model.fusion == "early":
            h = model._cross(h, masks)
            h = {m: model.branch(m).self_attend(h[m], masks[m]) for m in self.modalities}
        else:
            h = {m: model.branch(m).self_attend(h[m], masks[m]) for m in self.modalities}
            h = model._cross(h, masks)
        logp = []
        for m in self.modalities:
            head = model.head if model.head is not None else model.branch(m).head
            assert head is not None
            z = head(masked_mean(h[m], masks[m]))  # (B, C)
            logp.append((z / model.temperature).log_softmax(-1))
        logits = torch.logsumexp(torch.stack(logp), dim=0) - math.log(len(self.modalities))
        return logits.exp()  # (B, C)


def onnx_input_names(
    modalities: tuple[str, ...] | list[str], token_types: bool, audio_family: str = "wav2vec2"
) -> list[str]:
    """The graph's input names for a student's modalities (module docstring table)."""
    names: list[str] = []
    if "audio" in modalities:
        names += _AUDIO_INPUTS[audio_family]
    if "text" in modalities:
        names += [*_TEXT_INPUTS, *(["token_type_ids"] if token_types else [])]
    return names


def example_inputs(student: OnnxStudent, batch: int = 2, seconds: float = 1.0, tokens: int = 7) -> tuple[Tensor, ...]:
    """Random inputs of the right dtypes (rows of different valid lengths) for tracing and tests."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, Tensor] = {}
    s = int(seconds * 16000)
    lengths = torch.linspace(s // 2, s, batch).long()
    out["input_values"] = torch.randn(batch, s, generator=g)
    out["audio_mask"] = (torch.arange(s)[None] < lengths[:, None]).long()
    if student.audio_family == "whisper":
        mels = int(cast(Any, student.speech).conv1.in_channels)
        frames = 2 * (s // 320)  # 100 mel frames per second, an even count
        out["input_features"] = torch.randn(batch, mels, frames, generator=g)
        out["feature_lengths"] = torch.linspace(frames // 2, frames, batch).long()
    vocab = 2
    if "text" in student.modalities:
        vocab = int(cast(Any, student.model.branch("text").embedding.module).word_embeddings.num_embeddings)
    out["input_ids"] = torch.randint(1, vocab, (batch, tokens), generator=g)
    tok_len = torch.linspace(max(1, tokens // 2), tokens, batch).long()
    out["attention_mask"] = (torch.arange(tokens)[None] < tok_len[:, None]).long()
    out["token_type_ids"] = torch.zeros(batch, tokens, dtype=torch.long)
    return tuple(out[k] for k in student.input_names)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    overwrite: bool = False,
    opset: int = 17,
    meta: dict[str, str] | None = None,
    dynamo: bool = False,
    token_types: bool | None = None,
) -> Path:
    """Export a trained CMD student to ONNX with dynamic batch and time axes.

    Args:
        model: The student (from :func:`~emofuse.models.checkpoint.load_checkpoint`).
        path: Output ``.onnx`` file.
        overwrite: Replace an existing file (otherwise an existing file is an error).
        opset: ONNX opset.
        meta: Extra string metadata stored in the model (classes, checkpoint path, ...).
        dynamo: Use the ``torch.export`` (dynamo) exporter instead of the TorchScript one. Both give the same
            graph semantics; the TorchScript exporter is about 15x faster for these small students.
        token_types: See :class:`OnnxStudent`.

    Returns:
        ``path``.

    Raises:
        ExportError: The file exists (without ``overwrite``) or the model is not exportable.
        MissingDependencyError: ``onnx`` (and ``onnxscript`` for ``dynamo``) is not installed
            (``pip install 'emofuse[export]'``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    if path.exists() and path.is_dir():
        raise ExportError(f"{path} is a folder, not a file")
    require("onnx", extra="export", purpose="ONNX export")
    if dynamo:
        require("onnxscript", extra="export", purpose="ONNX export with the dynamo exporter")
    student = OnnxStudent(model, token_types).eval()
    inputs = example_inputs(student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                _export_dynamo(student, inputs, tmp, opset)
            else:
                axes: dict[str, dict[int, str]] = {"probs": {0: "batch"}}
                for k in student.input_names:
                    axes[k] = _axes(k)
                torch.onnx.export(
                    student,
                    inputs,
                    str(tmp),
                    input_names=student.input_names,
                    output_names=["probs"],
                    dynamic_axes=axes,
                    opset_version=opset,
                    dynamo=False,
                )
        finish_onnx(tmp, path, meta)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def finish_onnx(tmp: Path, path: Path, meta: dict[str, Any] | None) -> None:
    """Add ``meta`` as metadata properties to the exported graph at ``tmp``, check it, and move it to ``path``."""
    import onnx

    proto = onnx.load(str(tmp))
    for k, v in (meta or {}).items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def _export_dynamo(student: OnnxStudent, inputs: tuple[Tensor, ...], out: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    samples, tokens = torch.export.Dim("samples", min=400), torch.export.Dim("tokens", min=2)
    named = {"batch": batch, "samples": samples, "frames": torch.export.Dim("frames", min=2), "tokens": tokens}
    dims = tuple({i: named[v] for i, v in _axes(k).items()} for k in student.input_names)
    program = torch.onnx.export(
        student,
        inputs,
        input_names=student.input_names,
        output_names=["probs"],
        dynamic_shapes={"inputs": dims},
        opset_version=max(opset, 18),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    assert program is not None
    program.save(str(out))


def onnx_session(path: str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session for an exported student (``pip install 'emofuse[export]'``)."""
    ort = require("onnxruntime", extra="export", purpose="running ONNX models")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def verify_onnx(
    model: nn.Module, path: str | Path, cases: tuple[tuple[int, float, int], ...] = ((1, 0.6, 5), (3, 1.7, 12))
) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's probabilities over several input shapes.

    Args:
        model: The student that was exported.
        path: The ``.onnx`` file.
        cases: ``(batch, seconds, tokens)`` shapes to compare (rows of different valid lengths each).

    Returns:
        ``max |p_onnx - p_torch|`` over all cases, rows and classes.

    Raises:
        ExportError: Either side gave NaN or infinite probabilities (a failed check, never a difference of 0).
    """
    import numpy as np

    session = onnx_session(path)
    student = OnnxStudent(model, "token_type_ids" in {i.name for i in session.get_inputs()}).eval()
    worst = 0.0
    for batch, seconds, tokens in cases:
        inputs = example_inputs(student, batch, seconds, tokens)
        with torch.inference_mode():
            ref = model(_as_batch(student, inputs)).probs.float().numpy()  # type: ignore[union-attr]
        got = session.run(["probs"], {k: v.numpy() for k, v in zip(student.input_names, inputs, strict=True)})[0]
        bad = [name for name, p in (("PyTorch", ref), ("onnxruntime", got)) if not np.isfinite(p).all()]
        if bad:  # max() would skip NaN and report a perfect 0.0
            raise ExportError(
                f"{path}: {' and '.join(bad)} gave NaN or infinite probabilities (batch {batch}, {seconds} s, "
                f"{tokens} tokens); the parity check fails"
            )
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _as_batch(student: OnnxStudent, inputs: tuple[Tensor, ...]) -> dict[str, dict[str, Tensor]]:
    """The eager model's batch dict for positional ONNX inputs."""
    named = dict(zip(student.input_names, inputs, strict=True))
    batch: dict[str, dict[str, Tensor]] = {}
    if "input_values" in named:
        batch["audio"] = {"input_values": named["input_values"], "attention_mask": named["audio_mask"]}
    if "input_features" in named:
        batch["audio"] = {"input_features": named["input_features"], "feature_lengths": named["feature_lengths"]}
    if "input_ids" in named:
        batch["text"] = {k: named[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in named}
    return batch


def onnx_inputs(batch: dict[str, dict[str, Tensor]], names: list[str]) -> dict[str, Any]:
    """Numpy feeds for an exported student from a :class:`~emofuse.inference.Predictor` batch."""
    flat: dict[str, Tensor] = {}
    if "audio" in batch and "input_values" in batch["audio"]:
        flat["input_values"] = batch["audio"]["input_values"]
        flat["audio_mask"] = batch["audio"]["attention_mask"].long()
    elif "audio" in batch:
        flat["input_features"] = batch["audio"]["input_features"].float()
        flat["feature_lengths"] = batch["audio"]["feature_lengths"].long()
    if "text" in batch:
        flat.update({k: v.long() for k, v in batch["text"].items()})
        # a tokenizer without segment ids: BERT's default (all zeros), as the eager embedding uses
        flat.setdefault("token_type_ids", torch.zeros_like(flat["input_ids"]))
    return {k: flat[k].cpu().numpy() for k in names}


def _axes(name: str) -> dict[int, str]:
    """Dynamic axes of one graph input."""
    if name == "input_features":
        return {0: "batch", 2: "frames"}
    if name == "feature_lengths":
        return {0: "batch"}
    return {0: "batch", 1: "samples" if name in _AUDIO_INPUTS["wav2vec2"] else "tokens"}
