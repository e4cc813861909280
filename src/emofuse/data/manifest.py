"""Manifests: one record per utterance, stored as JSONL (optionally gzip-compressed).

A manifest is the single hand-off between corpus preparation and everything downstream
(protocols, feature extraction, training). Records are validated when they are read, and a
:class:`ValidationReport` counts and names every problem (missing audio, empty transcripts,
unknown labels, duplicate ids) instead of silently dropping anything.

Example:
    >>> from emofuse.data.manifest import Utterance
    >>> u = Utterance(id="a", audio=None, text="hello", label="neutral", speaker="s1")
    >>> u.duration is None
    True
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emofuse.utils.io import atomic_write

__all__ = [
    "FIELDS",
    "ManifestError",
    "Utterance",
    "ValidationReport",
    "read_manifest",
    "validate_records",
    "write_manifest",
]

FIELDS = (
    "id",
    "audio",
    "start",
    "end",
    "text",
    "label",
    "raw_label",
    "speaker",
    "session",
    "dialogue",
    "turn",
    "split",
    "features",
    "extra",
)
SPLITS = ("train", "dev", "val", "test")


class ManifestError(ValueError):
    """A manifest file (or a record in it) is malformed. The message names the file and line."""


class Utterance(BaseModel):
    """One utterance of a corpus.

    Attributes:
        id: Unique id within the manifest (e.g. ``Ses01F_impro01_F000``).
        audio: Path to the audio file (absolute, or relative to the manifest's folder), or ``None``
            for text-only records.
        start: Segment start in seconds within ``audio`` (``None``: from the beginning).
        end: Segment end in seconds (``None``: to the end of the file).
        text: Transcript (may be empty; reported by validation).
        label: Label after the label scheme's mapping (``None`` for unlabelled data).
        raw_label: Label as the corpus writes it.
        speaker: Speaker id, unique across the corpus (IEMOCAP: ``Ses01F``).
        session: Recording session, if the corpus has them.
        dialogue: Dialogue / conversation id, for context models.
        turn: Position of the utterance in its dialogue (0-based).
        split: Official split (``train``/``dev``/``test``), if the corpus defines one.
        features: Pre-extracted feature sequences per modality, ``{"video": "feats/u1.npy", ...}``.
            Each value is a *feature reference*: a path (absolute, or relative to the manifest's folder)
            to a ``.npy`` file, or ``FILE#KEY`` for one array inside a container (``.npz`` member,
            ``.safetensors`` tensor, ``.h5``/``.hdf5`` dataset path such as ``feats.h5#/video/u1``), optionally
            ending in a frame slice ``[START:END]`` (``rec.npy#[75:150]``: rows 75-149, e.g. a RECOLA window).
            The array is ``(T, D)`` (a sequence) or ``(D,)`` (one vector). A modality that is absent
            for this utterance is left out (or ``null``): the batch then marks it absent with a mask
            instead of feeding zeros (:mod:`emofuse.features.files`).
        extra: Corpus-specific fields (gender, improvised/scripted, valence, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    audio: str | None = None
    start: float | None = None
    end: float | None = None
    text: str = ""
    label: str | None = None
    raw_label: str | None = None
    speaker: str | None = None
    session: str | None = None
    dialogue: str | None = None
    turn: int | None = None
    split: str | None = None
    features: dict[str, str | None] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _check_features(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for modality, ref in v.items():
            if not modality:
                raise ValueError("features: empty modality name")
            if ref is not None and (not ref.strip() or ref.startswith("#") or ref.endswith("#")):
                raise ValueError(f"features.{modality}: {ref!r} is not a feature reference (FILE or FILE#KEY)")
        return v

    @field_validator("split")
    @classmethod
    def _check_split(cls, v: str | None) -> str | None:
        if v is not None and v not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_segment(self) -> Utterance:
        if self.start is not None and self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        return self

    @property
    def duration(self) -> float | None:
        """Segment length in seconds when both ``start`` and ``end`` are known."""
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def audio_path(self, root: str | Path | None = None) -> Path | None:
        """Resolve :attr:`audio` against ``root`` (the manifest's folder) when it is relative."""
        if self.audio is None:
            return None
        p = Path(self.audio)
        if not p.is_absolute() and root is not None:
            p = Path(root) / p
        return p

    def feature_ref(self, modality: str, root: str | Path | None = None) -> tuple[Path, str | None] | None:
        """The feature file and in-file key of ``modality`` (``None`` when the modality is absent).

        Args:
            modality: Key of :attr:`features`.
            root: Folder that relative paths are resolved against (the manifest's folder).

        Returns:
            ``(path, key)``; ``key`` is ``None`` for a whole-file reference (``.npy``).

        Example:
            >>> u = Utterance(id="a", features={"video": "v.h5#/clips/a", "face": None})
            >>> u.feature_ref("video", "/data"), u.feature_ref("face"), u.feature_ref("text")
            ((PosixPath('/data/v.h5'), '/clips/a'), None, None)
        """
        ref = self.features.get(modality)
        if ref is None:
            return None
        file, sep, key = ref.partition("#")
        p = Path(file)
        if not p.is_absolute() and root is not None:
            p = Path(root) / p
        return p, (key if sep else None)

    def to_json(self) -> str:
        """One JSONL line (no trailing newline), keys in :data:`FIELDS` order."""
        return json.dumps(self.model_dump(), ensure_ascii=False)


@dataclass
class ValidationReport:
    """Problems found in a set of records, with counts and the offending ids.

    Attributes:
        total: Number of records checked.
        missing_audio: Ids whose audio file does not exist (or is ``None``).
        empty_text: Ids with an empty or whitespace-only transcript.
        unknown_labels: Ids whose label is not in the allowed label set.
        duplicates: Ids that occur more than once.
        bad_audio: Ids whose audio exists but could not be decoded (filled by corpus preparation).
        missing_features: ``"<id> <modality>: <file>"`` for every feature reference whose file does not exist.
        notes: Free-form messages from preparation (skipped lines, malformed rows, ...).
        text_only: Ids with ``audio=None`` when text-only records are allowed (not a problem: prepared with
            ``--allow-missing-audio`` for text-only work).
    """

    total: int = 0
    missing_audio: list[str] = field(default_factory=list)
    empty_text: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    bad_audio: list[str] = field(default_factory=list)
    missing_features: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_only: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem of any kind was found."""
        return not (
            self.missing_audio
            or self.empty_text
            or self.unknown_labels
            or self.duplicates
            or self.bad_audio
            or self.missing_features
        )

    def counts(self) -> dict[str, int]:
        """Number of records per problem kind."""
        return {
            "total": self.total,
            "missing_audio": len(self.missing_audio),
            "bad_audio": len(self.bad_audio),
            "empty_text": len(self.empty_text),
            "unknown_labels": len(self.unknown_labels),
            "duplicates": len(self.duplicates),
            "missing_features": len(self.missing_features),
            "text_only": len(self.text_only),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the counts and the full id lists."""
        return {
            "counts": self.counts(),
            "missing_audio": self.missing_audio,
            "bad_audio": self.bad_audio,
            "empty_text": self.empty_text,
            "unknown_labels": self.unknown_labels,
            "duplicates": self.duplicates,
            "missing_features": self.missing_features,
            "text_only": self.text_only,
            "notes": self.notes,
        }

    def merge(self, other: ValidationReport) -> ValidationReport:
        """Add ``other``'s findings to this report (in place) and return it."""
        self.total += other.total
        self.missing_audio += other.missing_audio
        self.bad_audio += other.bad_audio
        self.empty_text += other.empty_text
        self.unknown_labels += other.unknown_labels
        self.duplicates += other.duplicates
        self.missing_features += other.missing_features
        self.notes += other.notes
        self.text_only += other.text_only
        return self

    def summary(self, max_names: int = 5) -> str:
        """Human-readable multi-line summary naming up to ``max_names`` ids per problem."""
        lines = [f"{self.total} records"]
        for kind in ("missing_audio", "bad_audio", "empty_text", "unknown_labels", "duplicates", "missing_features"):
            ids: list[str] = getattr(self, kind)
            if ids:
                shown = ", ".join(ids[:max_names]) + (" ..." if len(ids) > max_names else "")
                lines.append(f"{kind.replace('_', ' ')}: {len(ids)} ({shown})")
        if self.text_only:
            lines.append(
                f"text only (audio: null): {len(self.text_only)} record(s), usable by text-only configs "
                "(not a problem; --require-audio makes them one)"
            )
        lines.extend(self.notes)
        return "\n".join(lines)


def validate_records(
    records: Sequence[Utterance],
    labels: Iterable[str] | None = None,
    root: str | Path | None = None,
    check_audio: bool = True,
    check_features: bool = True,
    allow_text_only: bool = False,
) -> ValidationReport:
    """Check a set of records for missing audio, empty text, unknown labels and duplicate ids.

    Args:
        records: Records to check.
        labels: Allowed labels; ``None`` accepts any label.
        root: Folder that relative audio paths are resolved against.
        check_audio: Whether to test that audio files exist (records with ``audio=None`` count as
            missing audio).
        check_features: Whether to test that the files of :attr:`Utterance.features` exist (an absent
            modality, ``null`` or left out, is not a problem).
        allow_text_only: Records with ``audio=None`` are text-only (``report.text_only``), not missing audio.

    Returns:
        A :class:`ValidationReport`.
    """
    allowed = set(labels) if labels is not None else None
    report = ValidationReport(total=len(records))
    seen: Counter[str] = Counter(r.id for r in records)
    report.duplicates = sorted(i for i, n in seen.items() if n > 1)
    for r in records:
        if check_audio and allow_text_only and r.audio is None:
            report.text_only.append(r.id)
        elif check_audio:
            p = r.audio_path(root)
            if p is None or not p.is_file():
                report.missing_audio.append(r.id)
        if check_features:
            for modality in r.features:
                ref = r.feature_ref(modality, root)
                if ref is not None and not ref[0].is_file():
                    report.missing_features.append(f"{r.id} {modality}: {ref[0]}")
        if not r.text.strip():
            report.empty_text.append(r.id)
        if allowed is not None and r.label is not None and r.label not in allowed:
            report.unknown_labels.append(r.id)
    return report


def unreadable_audio(records: Sequence[Utterance], root: str | Path | None = None) -> dict[str, str]:
    """``id -> reason`` for records whose audio file exists but is empty, has no samples or no readable header.

    Reads file headers only (fast on a whole corpus); a file whose header is fine but whose data is damaged is
    found when it is decoded (``emofuse extract`` lists those).
    """
    from emofuse.data.audio import AudioError, audio_info

    bad: dict[str, str] = {}
    for r in records:
        path = r.audio_path(root)
        if path is None or not path.is_file():
            continue  # missing audio is reported as such
        if path.stat().st_size == 0:
            bad[r.id] = f"{path}: file is empty (0 bytes)"
            continue
        try:
            info = audio_info(path)
        except AudioError as e:
            bad[r.id] = str(e)
            continue
        if not info["duration"] > 0:
            bad[r.id] = f"{path}: no audio samples (header only)"
    return bad


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of a text or gzip file; a damaged gzip stream is a :class:`ManifestError`."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from enumerate(f, 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ManifestError(f"{path}: damaged gzip file ({type(e).__name__}: {e})") from None


def iter_manifest(path: str | Path) -> Iterator[Utterance]:
    """Stream records from a JSONL(.gz) manifest, validating each one.

    Raises:
        FileNotFoundError: The manifest does not exist.
        ManifestError: A line is not JSON or not a valid record; the message names file and line.
    """
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path}: is a folder, not a manifest (.jsonl / .jsonl.gz)")
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    for lineno, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestError(
                f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})"
            ) from None
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            try:
                yield Utterance.model_validate(obj)
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}" for err in e.errors()
                )
                raise ManifestError(f"{path}:{lineno}: invalid record ({problems})") from None


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read and validate a whole manifest. Duplicate ids are an error here.

    Args:
        path: ``.jsonl`` or ``.jsonl.gz`` file.

    Returns:
        The records, in file order.
    """
    records = list(iter_manifest(path))
    dup = [i for i, n in Counter(r.id for r in records).items() if n > 1]
    if dup:
        raise ManifestError(f"{path}: {len(dup)} duplicate id(s): {', '.join(sorted(dup)[:5])}")
    return records


def write_manifest(records: Iterable[Utterance], path: str | Path, overwrite: bool = False) -> Path:
    """Write records as JSONL(.gz), atomically (temporary file, then rename).

    Args:
        records: Records to write.
        path: Destination; ``.gz`` suffix compresses.
        overwrite: Replace an existing file. Without it an existing file is an error, so a
            manifest a user made is never silently replaced.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    payload = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    atomic_write(path, payload)
    return path
