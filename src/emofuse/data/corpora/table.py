r"""Generic CSV corpus: ``path,label,speaker,text[,...]``, one row per utterance, for anyone's own data.

Layout expected: one UTF-8 CSV file with a header row containing at least the columns ``path``,
``label``, ``speaker`` and ``text`` (``text`` may be empty). Relative paths are resolved against
the CSV's folder. Columns named like manifest fields (``id``, ``start``, ``end``, ``session``,
``dialogue``, ``turn``, ``split``) fill those fields; every other column goes to ``extra``::

    id,path,label,speaker,text,split,gender
    u1,clips/a.wav,happy,spk1,"Well, hello!",train,female

This module also holds the helpers that every recipe shares (label-scheme lookup, tolerant CSV
reading, audio checks and the :class:`RecordBuilder` that assembles records and the report).

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "meta.csv"), "w") as f:
    ...     _ = f.write("path,label,speaker,text\na.wav,happy,s1,hi\nb.wav,sad,s2,\n")
    >>> c = prepare_csv(os.path.join(d, "meta.csv"), allow_missing_audio=True, progress=False)
    >>> c.classes, [r.id for r in c.records], len(c.report.missing_audio)
    (('happy', 'sad'), ['a', 'b'], 2)
"""

from __future__ import annotations

import codecs
import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emofuse.data.audio import AudioError, audio_info, load_audio
from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.labels import LabelScheme, get_scheme
from emofuse.data.manifest import Utterance, validate_records
from emofuse.utils.progress import track

__all__ = ["REQUIRED_COLUMNS", "RecordBuilder", "check_audio_file", "prepare_csv", "read_csv_rows", "resolve_scheme"]

REQUIRED_COLUMNS = ("path", "label", "speaker", "text")
_FIELD_COLUMNS = ("id", "start", "end", "session", "dialogue", "turn", "split")


# ----------------------------------------------------------------------------------------------
# Helpers shared by all recipes
# ----------------------------------------------------------------------------------------------
def resolve_scheme(labels: str | None, default: str) -> LabelScheme:
    """The registered label scheme ``labels``, or ``default`` when ``labels`` is ``None``."""
    return get_scheme(default if labels is None else labels)


def read_csv_rows(path: str | Path) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[str], int]:
    """Read a CSV file tolerantly: UTF-8 (BOM stripped), ``errors="replace"`` on lines that are not.

    Args:
        path: CSV file.

    Returns:
        ``(header, rows, notes, n_replaced)``: the stripped header (``None`` for an empty file), the
        data rows as ``(line_number, fields)`` with the 1-based line where the row starts, notes
        (``"<file>:<line>: ..."``) for rows the csv parser rejected, and the number of rows that
        needed replacement characters.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    texts: list[str] = []
    bad_lines: set[int] = set()
    for i, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            texts.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(line.decode("utf-8", errors="replace"))
            bad_lines.add(i)
    reader = csv.reader(texts)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    notes: list[str] = []
    n_replaced = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            notes.append(f"{path.name}:{start}: unreadable CSV row ({e}); skipped")
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if any(n in bad_lines for n in range(start, reader.line_num + 1)):
            n_replaced += 1
        if header is None:
            header = [h.strip() for h in row]
        else:
            rows.append((start, row))
    return header, rows, notes, n_replaced


def check_audio_file(path: Path, decode: bool = False) -> str | None:
    """Check that an existing file is readable audio.

    Args:
        path: The audio file (it must exist).
        decode: Decode the whole file (slow) instead of reading its header only.

    Returns:
        ``None`` when the file is fine, otherwise the error message (naming the file).
    """
    try:
        if path.stat().st_size == 0:
            return f"{path}: file is empty (0 bytes)"
        if decode:
            load_audio(path)
        else:
            info = audio_info(path)
            if info["duration"] == 0:
                return f"{path}: no audio samples"
    except AudioError as e:
        return str(e)
    return None


class RecordBuilder:
    """Collects the records of one corpus: maps labels, checks audio, and writes the report.

    Args:
        name: Corpus name.
        scheme: Label scheme the raw labels are mapped with.
        allow_missing_audio: Keep records whose audio is missing or undecodable (with ``audio=None``).
        check_audio: Check each existing file's header with :func:`~emofuse.data.audio.audio_info`.
        decode_audio: Decode each file completely instead (slow; implies ``check_audio``).
        mapper: Raw label → class; defaults to ``scheme.map``.
    """

    def __init__(
        self,
        name: str,
        scheme: LabelScheme,
        allow_missing_audio: bool = False,
        check_audio: bool = True,
        decode_audio: bool = False,
        mapper: Callable[[str | None], str | None] | None = None,
    ) -> None:
        self.name = name
        self.scheme = scheme
        self.allow_missing_audio = allow_missing_audio
        self.check_audio = check_audio or decode_audio
        self.decode_audio = decode_audio
        self.mapper = mapper or scheme.map
        self.records: list[Utterance] = []
        self.notes: list[str] = []
        self.dropped: Counter[str] = Counter()
        self.missing: list[str] = []
        self.bad: list[str] = []
        self._missing_by: Counter[str] = Counter()
        self._bad_by: Counter[str] = Counter()

    def add(self, uid: str, audio: Path | None, raw_label: str | None, group: str = "", **fields: Any) -> bool:
        """Map the label, check the audio and append one record.

        Args:
            uid: Record id.
            audio: Audio file (``None``: no audio known).
            raw_label: Label as the corpus writes it (``None``: unlabelled, kept as such).
            group: Key for per-group counts of missing / bad audio in the notes (MELD: the split).
            **fields: Other :class:`~emofuse.data.manifest.Utterance` fields.

        Returns:
            True when the record was kept.
        """
        label = None
        if raw_label is not None:
            label = self.mapper(raw_label)
            if label is None:
                self.dropped[raw_label] += 1
                return False
        extra = dict(fields.pop("extra", None) or {})
        audio_str: str | None = None
        if audio is None or not audio.is_file():
            self.missing.append(uid)
            self._missing_by[group] += 1
            if not self.allow_missing_audio:
                return False
        else:
            error = check_audio_file(audio, self.decode_audio) if self.check_audio else None
            if error is not None:
                self.bad.append(uid)
                self._bad_by[group] += 1
                self.notes.append(f"bad audio: {error}")
                if not self.allow_missing_audio:
                    return False
                extra["audio_error"] = error
            else:
                audio_str = os.path.abspath(audio)
        self.records.append(Utterance(id=uid, audio=audio_str, label=label, raw_label=raw_label, extra=extra, **fields))
        return True

    def _count_note(self, kind: str, ids: list[str], by: Counter[str]) -> list[str]:
        if not ids:
            return []
        fate = (
            "kept with audio=None"
            if self.allow_missing_audio
            else "dropped; --allow-missing-audio (allow_missing_audio=True) keeps them"
        )
        groups = [g for g in by if g]
        per = f" ({', '.join(f'{g} {by[g]}' for g in groups)})" if groups else ""
        return [f"{kind}: {len(ids)} utterance(s){per}, {fate}"]

    def finish(self, classes: tuple[str, ...] | None = None, scheme_name: str | None = None) -> PreparedCorpus:
        """Validate the records and return the :class:`PreparedCorpus` with its report.

        Args:
            classes: Class list (default: the scheme's).
            scheme_name: Scheme name (default: the scheme's).

        Returns:
            The prepared corpus.
        """
        classes = self.scheme.classes if classes is None else classes
        scheme_name = self.scheme.name if scheme_name is None else scheme_name
        report = validate_records(self.records, labels=classes, check_audio=False)
        report.missing_audio = list(self.missing)
        report.bad_audio = list(self.bad)
        notes = list(self.notes)
        if self.dropped:
            parts = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
            notes.append(f"dropped {sum(self.dropped.values())} utterance(s) not in scheme {scheme_name!r}: {parts}")
        notes += self._count_note("missing audio", self.missing, self._missing_by)
        notes += self._count_note("bad audio", self.bad, self._bad_by)
        if not self.records:
            notes.append(f"{self.name}: no records kept")
        report.notes = notes
        return PreparedCorpus(
            name=self.name,
            records=self.records,
            classes=classes,
            scheme=scheme_name,
            report=report,
            dropped=dict(self.dropped),
        )


def iter_progress(items: list[Any], description: str, progress: bool) -> Iterable[Any]:
    """``items`` wrapped in a progress bar when ``progress`` is set."""
    return track(items, description, total=len(items), disable=not progress) if progress else items


# ----------------------------------------------------------------------------------------------
# Generic CSV recipe
# ----------------------------------------------------------------------------------------------
def _convert(column: str, value: str) -> Any:
    if column in ("start", "end"):
        return float(value)
    if column == "turn":
        return int(value)
    return value


def prepare_csv(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
) -> PreparedCorpus:
    """Prepare a corpus described by one CSV file (``path,label,speaker,text,...``).

    Args:
        root: The CSV file.
        labels: Registered label scheme that maps the ``label`` column; ``None`` keeps the labels
            as they are (classes = sorted unique labels, scheme name ``csv``).
        allow_missing_audio: Keep rows whose audio is missing or undecodable (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each file's header to catch corrupt audio (existence is always checked).
        decode_audio: Decode each file completely (slow).

    Returns:
        The prepared corpus, in file order. Ids come from the ``id`` column, else the file stem
        (``<stem>_<row index>`` when stems repeat). Rows with an empty label are kept unlabelled
        (``label=None``); malformed rows are skipped with a ``<file>:<line>: ...`` note.

    Raises:
        CorpusError: The file does not exist or lacks a required column.
    """
    path = Path(root)
    if not path.is_file():
        raise CorpusError(f"{path}: CSV file not found")
    header, rows, notes, n_replaced = read_csv_rows(path)
    if header is None:
        raise CorpusError(f"{path}: empty CSV file (expected a header with {', '.join(REQUIRED_COLUMNS)})")
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing_cols:
        raise CorpusError(
            f"{path}: missing required column(s) {', '.join(missing_cols)}; columns found: {', '.join(header)}"
        )
    if n_replaced:
        notes.append(f"{path.name}: {n_replaced} row(s) were not valid UTF-8; undecodable bytes replaced by U+FFFD")
    base = path.parent
    parsed: list[tuple[int, int, dict[str, str]]] = []  # (data-row index, line, row)
    for index, (line, row) in enumerate(rows):
        if len(row) != len(header):
            notes.append(f"{path.name}:{line}: expected {len(header)} fields, got {len(row)}; row skipped")
            continue
        parsed.append((index, line, dict(zip(header, row, strict=True))))

    if labels is None:
        classes = tuple(sorted({r["label"].strip() for _, _, r in parsed if r["label"].strip()}))
        scheme = LabelScheme("csv", classes, {}, f"labels of {path.name} as written")
        builder = RecordBuilder("csv", scheme, allow_missing_audio, check_audio, decode_audio, lambda s: s)
    else:
        scheme = get_scheme(labels)
        builder = RecordBuilder("csv", scheme, allow_missing_audio, check_audio, decode_audio)
    builder.notes.extend(notes)

    stems = Counter(Path(r["path"].strip()).stem for _, _, r in parsed if r["path"].strip())
    n_unlabelled = 0
    for index, line, r in iter_progress(parsed, f"{path.name}: checking audio", progress):
        rel = r["path"].strip()
        audio = None if not rel else Path(rel) if Path(rel).is_absolute() else base / rel
        if r.get("id", "").strip():
            uid = r["id"].strip()
        elif rel:
            stem = Path(rel).stem
            uid = f"{stem}_{index}" if stems[stem] > 1 else stem
        else:
            uid = f"row{index}"
        fields: dict[str, Any] = {}
        try:
            for col in _FIELD_COLUMNS[1:]:
                if r.get(col, "").strip():
                    fields[col] = _convert(col, r[col].strip())
        except ValueError as e:
            builder.notes.append(f"{path.name}:{line}: bad value in column {col!r} ({e}); row skipped")
            continue
        if fields.get("split") not in (None, "train", "dev", "val", "test"):
            builder.notes.append(
                f"{path.name}:{line}: split {fields['split']!r} is not train/dev/val/test; row skipped"
            )
            continue
        if fields.get("start", 0.0) < 0 or ("end" in fields and fields["end"] <= fields.get("start", 0.0)):
            builder.notes.append(
                f"{path.name}:{line}: bad segment start={fields.get('start')} end={fields.get('end')}; row skipped"
            )
            continue
        extra = {k: v for k, v in r.items() if k not in REQUIRED_COLUMNS and k not in _FIELD_COLUMNS}
        raw = r["label"].strip() or None
        n_unlabelled += raw is None
        builder.add(uid, audio, raw, text=r["text"], speaker=r["speaker"].strip() or None, extra=extra, **fields)
    if n_unlabelled:
        builder.notes.append(f"{path.name}: {n_unlabelled} row(s) have an empty label (kept unlabelled)")
    return builder.finish()
