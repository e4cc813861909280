"""SSPNet Conflict Corpus (Kim, Valente & Vinciarelli 2012; INTERSPEECH 2013 ComParE Conflict sub-challenge).

1,430 clips of 30 s from 45 Canal 9 political debates (Swiss French TV, 2005), each rated by 10 assessors;
the label is the mean continuous conflict level in ``[-10, +10]`` (spec ``rajan-thesis.md`` §2.1). The
corpus is distributed on request by the University of Glasgow; this recipe reads the layout below.

Layout::

    ROOT/
      wav/06-11-08_1980_2010.wav ...      clips, named <debate date>_<start s>_<end s> (anywhere under ROOT)
      conflictlevel.csv                   labels (the name the ConflictNET code uses), or any one *.csv / *.tsv
                                          under ROOT (or pass labels_file=...)

The labels file is comma-, semicolon- or tab-separated. Either it has a header naming a file column
(``file``, ``filename``, ``file_name``, ``name``, ``clip``, ``instance``) and a score column (``level``,
``conflict``, ``conflict_level``, ``score``, ``mean``), plus optionally ``class`` (``high``/``low``), a
partition column (``partition``, ``split``, ``set``: ``train``, ``devel``/``dev``/``val``, ``test``) and a
``moderator`` column; or it has no header and two columns ``file,score`` (ConflictNET's
``conflictlevel.csv``). File names may carry the ``.wav`` suffix or not.

Per record:

* ``label``: ``high`` if the score is ``>= 0`` else ``low`` (scheme ``sspnet-conflict``, classes
  ``low, high``: the thesis' binarisation for UAR / WAR);
* ``extra.conflict``: the score mapped to ``[-1, 1]`` (``score / 10``, the regression target,
  ``data.target: extra.conflict``); ``extra.conflict_raw``: the score as written;
* ``session`` / ``dialogue``: the debate (date part of the name); ``extra.debate_start`` /
  ``debate_end``: the clip's position in the debate (seconds);
* ``split``: from the partition column, else from the moderator (official ComParE split: moderator 50,
  the female moderator, → ``train``; 153 → ``dev``; any other → ``test``), else none (use a random
  protocol); ``speaker``: ``moderator<id>`` when the moderator is known (the split is by moderator).

Clips without a label row are kept unlabelled (no ``conflict`` target) and counted in the notes; label
rows without a clip follow ``allow_missing_audio``; malformed rows are skipped with a
``<file>:<line>: ...`` note.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.corpora.table import RecordBuilder, iter_progress, resolve_scheme
from emofuse.data.labels import LabelScheme, register_scheme

__all__ = ["SSPNET_CONFLICT", "prepare_sspnet"]

SSPNET_CONFLICT = register_scheme(
    LabelScheme(
        "sspnet-conflict",
        ("low", "high"),
        {"low": "low", "high": "high"},
        "SSPNet conflict level binarised at 0 (low < 0 <= high), thesis Ch. 3 UAR / WAR",
    )
)

_FILE_COLS = ("file", "filename", "file_name", "name", "clip", "instance", "wav")
_SCORE_COLS = ("level", "conflict", "conflict_level", "score", "mean", "label")
_SPLIT_COLS = ("partition", "split", "set")
_SPLITS = {"train": "train", "training": "train", "devel": "dev", "dev": "dev", "val": "dev", "test": "test"}
_NAME = re.compile(r"^(\d\d-\d\d-\d\d)_(\d+)_(\d+)$")
#: Official ComParE 2013 split by moderator (spec §2.1): 50 (female) → train, 153 → dev, others → test.
MODERATOR_SPLIT = {"50": "train", "153": "dev"}


def _find_labels(root: Path, labels_file: str | Path | None) -> Path:
    if labels_file is not None:
        path = Path(labels_file)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise CorpusError(f"labels file not found: {path}")
        return path
    if (root / "conflictlevel.csv").is_file():
        return root / "conflictlevel.csv"
    found = sorted(p for ext in ("*.csv", "*.tsv") for p in root.rglob(ext) if not p.name.startswith("."))
    if len(found) == 1:
        return found[0]
    if not found:
        raise CorpusError(f"{root}: no labels file (conflictlevel.csv or one *.csv / *.tsv); pass labels_file=")
    shown = ", ".join(str(p.relative_to(root)) for p in found[:5])
    raise CorpusError(f"{root}: several candidate labels files ({shown}); choose one with labels_file=")


def _read_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix == ".tsv" else csv.excel
    rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(io.StringIO(text), dialect), 1)]
    rows = [(i, r) for i, r in rows if any(r)]
    if not rows:
        raise CorpusError(f"{path}: empty labels file")
    first = [c.lower() for c in rows[0][1]]
    if any(c in _FILE_COLS for c in first):
        return first, rows[1:]
    return None, rows


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    return None


def prepare_sspnet(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
    labels_file: str | Path | None = None,
) -> PreparedCorpus:
    """Prepare the SSPNet Conflict Corpus (layout in the module docstring).

    Args:
        root: Corpus folder.
        labels: Label scheme (default ``sspnet-conflict``).
        allow_missing_audio: Keep label rows whose clip is missing (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each clip's header so corrupt files land in ``report.bad_audio``.
        decode_audio: Decode each clip completely (slow).
        labels_file: Labels file (relative to ``root``); default ``conflictlevel.csv`` or the only CSV/TSV.

    Returns:
        The prepared corpus, records sorted by id.

    Raises:
        CorpusError: ``root`` is not a folder, has no clips, or its labels file lacks the needed columns.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a folder")
    wavs: dict[str, Path] = {}
    for p in sorted(root.rglob("*.wav")):
        if not p.name.startswith("."):
            wavs.setdefault(p.stem, p)
    lab_path = _find_labels(root, labels_file)
    header, rows = _read_rows(lab_path)
    c_col: int | None = None
    p_col: int | None = None
    m_col: int | None = None
    if header is None:
        f_col, s_col = 0, 1
    else:
        found_f, found_s = _column(header, _FILE_COLS), _column(header, _SCORE_COLS)
        if found_f is None or found_s is None:
            raise CorpusError(
                f"{lab_path}: needs a file column ({', '.join(_FILE_COLS)}) and a score column "
                f"({', '.join(_SCORE_COLS)}); header: {', '.join(header)}"
            )
        f_col, s_col = found_f, found_s
        c_col, p_col = _column(header, ("class",)), _column(header, _SPLIT_COLS)
        m_col = _column(header, ("moderator",))
    scheme = resolve_scheme(labels, "sspnet-conflict")
    builder = RecordBuilder("sspnet", scheme, allow_missing_audio, check_audio, decode_audio)
    name = lab_path.name
    entries: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        need = max(c for c in (f_col, s_col, c_col, p_col, m_col) if c is not None)
        if len(row) <= need:
            builder.notes.append(f"{name}:{line}: expected at least {need + 1} fields, got {len(row)}; row skipped")
            continue
        stem = Path(row[f_col]).stem if row[f_col].lower().endswith(".wav") else row[f_col]
        try:
            score = float(row[s_col])
        except ValueError:
            builder.notes.append(f"{name}:{line}: conflict score {row[s_col]!r} is not a number; row skipped")
            continue
        if not -10.0 <= score <= 10.0:
            builder.notes.append(f"{name}:{line}: conflict score {score} is outside [-10, 10]; row skipped")
            continue
        if stem in entries:
            builder.notes.append(f"{name}:{line}: {stem} is listed twice; the first row is kept")
            continue
        split = None
        if p_col is not None and row[p_col]:
            split = _SPLITS.get(row[p_col].lower())
            if split is None:
                builder.notes.append(f"{name}:{line}: unknown partition {row[p_col]!r}; row skipped")
                continue
        moderator = row[m_col] if m_col is not None and row[m_col] else None
        if split is None and moderator is not None:
            split = MODERATOR_SPLIT.get(moderator, "test")
        cls = "high" if score >= 0 else "low"
        if c_col is not None and row[c_col] and row[c_col].lower() != cls:
            builder.notes.append(f"{name}:{line}: class {row[c_col]!r} disagrees with score {score}; the score wins")
        entries[stem] = {"score": score, "split": split, "moderator": moderator, "raw": cls}
    if not entries and not wavs:
        raise CorpusError(f"{root}: no clips (*.wav) and no usable label rows in {lab_path}")
    unlabelled = sorted(set(wavs) - set(entries))
    odd_names = 0
    for stem in iter_progress(sorted(set(wavs) | set(entries)), f"{root.name}: checking audio", progress):
        e = entries.get(stem)
        extra: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        m = _NAME.match(stem)
        if m:
            fields["session"] = fields["dialogue"] = m.group(1)
            extra["debate_start"], extra["debate_end"] = float(m.group(2)), float(m.group(3))
        else:
            odd_names += 1
        if e is not None:
            extra["conflict"] = e["score"] / 10.0
            extra["conflict_raw"] = e["score"]
            if e["moderator"] is not None:
                extra["moderator"] = e["moderator"]
                fields["speaker"] = f"moderator{e['moderator']}"
            if e["split"] is not None:
                fields["split"] = e["split"]
        builder.add(stem, wavs.get(stem), e["raw"] if e is not None else None, extra=extra, **fields)
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (" ..." if len(unlabelled) > 3 else "")
        builder.notes.append(f"{len(unlabelled)} clip(s) have no row in {name} (kept unlabelled): {shown}")
    if odd_names:
        builder.notes.append(f"{odd_names} clip name(s) are not <date>_<start>_<end>: no debate / position recorded")
    if entries and not any(e["split"] for e in entries.values()):
        builder.notes.append(f"{name} has no partition or moderator column: no official split (use a random protocol)")
    return builder.finish()
