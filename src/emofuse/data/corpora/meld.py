r"""MELD: Multimodal EmotionLines Dataset (Poria et al., ACL 2019), https://github.com/declare-lab/MELD.

Layout expected (the official ``MELD.Raw`` tarball, extracted)::

    ROOT/                              (or ROOT/MELD.Raw/: the CSVs are searched in ROOT and one level below)
        train_sent_emo.csv  dev_sent_emo.csv  test_sent_emo.csv
        train_splits/dia0_utt0.mp4 ...                 (clip folders are searched anywhere under ROOT)
        dev_splits_complete/dia0_utt0.mp4 ...
        output_repeated_splits_test/dia0_utt0.mp4 ...

CSV columns: ``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
Episode, StartTime, EndTime``. Each row is one clip ``dia{Dialogue_ID}_utt{Utterance_ID}.mp4``; a
``.wav`` with the same stem (audio extracted beforehand) is preferred when both exist. Clips are
decoded with PyAV.

One manifest holds all splits: ids are ``{split}_dia{D}_utt{U}``, ``dialogue`` is ``{split}_dia{D}``
(dialogue ids repeat across splits), ``turn`` is ``Utterance_ID``, records are sorted by split,
dialogue and turn so context models see each dialogue in order. ``start``/``end`` stay ``None``
(each clip is one utterance); the subtitle times go to ``extra``.

Label schemes:

- ``meld7``: neutral, surprise, fear, sadness, joy, disgust, anger. This is the column order of
  CM-RoBERTa's Table 2 (specs/cm-roberta.md), the same as the MELD paper's tables and the label ids
  of COSMIC / DialogueRNN's MELD features.
- ``meld4``: CMD's 4-class subset (specs/cmd.md §4.2) in CMD's order neutral, happy (joy),
  sad (sadness), angry (anger). Official counts: train 4,710/1,743/683/1,109 (8,245),
  dev 470/163/111/153 (897), test 1,256/402/208/345 (2,211).
- ``meld-sentiment``: neutral, positive, negative, taken from the ``Sentiment`` column.

The text is kept as written (typographic quotes; some rows of the original corpus carry
mis-decoded characters such as ``Â\x92``); lines that are not valid UTF-8 are decoded with
replacement characters and counted in a note.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.corpora.table import RecordBuilder, iter_progress, read_csv_rows, resolve_scheme
from emofuse.data.labels import LabelScheme, register_scheme

__all__ = ["CLIP_FOLDERS", "CSV_FILES", "MELD4", "MELD7", "MELD_SENTIMENT", "prepare_meld"]

MELD7 = register_scheme(
    LabelScheme(
        "meld7",
        ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
        {k: k for k in ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")},
        "MELD 7 emotions (13,708 utterances: train 9,989 / dev 1,109 / test 2,610)",
    )
)
MELD4 = register_scheme(
    LabelScheme(
        "meld4",
        ("neutral", "happy", "sad", "angry"),
        {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry"},
        "MELD 4-class subset as in CMD (train 8,245 / dev 897 / test 2,211)",
    )
)
MELD_SENTIMENT = register_scheme(
    LabelScheme(
        "meld-sentiment",
        ("neutral", "positive", "negative"),
        {"neutral": "neutral", "positive": "positive", "negative": "negative"},
        "MELD 3-class sentiment (Sentiment column)",
    )
)

SPLITS = ("train", "dev", "test")
CSV_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# Official clip folder first; the others are names seen in re-packaged copies.
CLIP_FOLDERS = {
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits_complete", "test_splits"),
}
_REQUIRED = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
_CLIP = re.compile(r"^dia(\d+)_utt(\d+)$")
_EXT_RANK = {".wav": 0, ".flac": 1, ".mp4": 2}
# Scheme name -> CSV column holding its raw labels (default: Emotion).
_LABEL_COLUMN = {"meld-sentiment": "Sentiment"}


def _find_csv(root: Path, name: str) -> Path | None:
    if (root / name).is_file():
        return root / name
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / name).is_file():
            return sub / name
    return None


def _find_clip_folders(root: Path, splits: tuple[str, ...]) -> tuple[dict[str, Path], list[str]]:
    wanted = {name: split for split in splits for name in CLIP_FOLDERS[split]}
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        for d in dirnames:
            if d in wanted:
                found.setdefault(d, []).append(Path(dirpath) / d)
    folders: dict[str, Path] = {}
    notes: list[str] = []
    for split in splits:
        for name in CLIP_FOLDERS[split]:
            if name in found:
                folders[split] = found[name][0]
                if len(found[name]) > 1:
                    others = ", ".join(str(p) for p in found[name][1:])
                    notes.append(f"MELD: several {name}/ folders; using {found[name][0]}, ignoring {others}")
                break
    return folders, notes


def _index_clips(folder: Path) -> dict[tuple[int, int], Path]:
    index: dict[tuple[int, int], Path] = {}
    for p in folder.rglob("*"):
        m = _CLIP.match(p.stem)
        ext = p.suffix.lower()
        if m is None or ext not in _EXT_RANK or not p.is_file():
            continue
        key = (int(m.group(1)), int(m.group(2)))
        if key not in index or _EXT_RANK[ext] < _EXT_RANK[index[key].suffix.lower()]:
            index[key] = p
    return index


def _int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _read_split(path: Path, split: str, label_column: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of one MELD CSV as dicts with parsed ids; notes for malformed rows."""
    header, rows, notes, n_replaced = read_csv_rows(path)
    if header is None:
        return [], [*notes, f"{path}: empty file; split {split} skipped"]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header)}")
    if n_replaced:
        notes.append(f"{path.name}: {n_replaced} row(s) were not valid UTF-8; undecodable bytes replaced by U+FFFD")
    out: list[dict[str, Any]] = []
    for line, row in rows:
        if len(row) != len(header):
            notes.append(f"{path.name}:{line}: expected {len(header)} fields, got {len(row)}; row skipped")
            continue
        r = dict(zip(header, row, strict=True))
        try:
            dia, utt = int(r["Dialogue_ID"]), int(r["Utterance_ID"])
        except ValueError:
            notes.append(
                f"{path.name}:{line}: Dialogue_ID {r['Dialogue_ID']!r} / Utterance_ID {r['Utterance_ID']!r} "
                "are not integers; row skipped"
            )
            continue
        raw = r[label_column].strip()
        if not raw:
            notes.append(f"{path.name}:{line}: empty {label_column}; row skipped")
            continue
        extra: dict[str, Any] = {"sentiment": r["Sentiment"].strip()}
        if label_column != "Emotion":
            extra["emotion"] = r["Emotion"].strip()
        for col, key in (("Season", "season"), ("Episode", "episode")):
            if r.get(col, "").strip():
                extra[key] = _int(r[col].strip())
        for col, key in (("StartTime", "start_time"), ("EndTime", "end_time"), ("Sr No.", "sr_no")):
            if r.get(col, "").strip():
                extra[key] = r[col].strip()
        out.append(
            {"dia": dia, "utt": utt, "raw": raw, "text": r["Utterance"], "speaker": r["Speaker"], "extra": extra}
        )
    return out, notes


def prepare_meld(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
    splits: tuple[str, ...] = SPLITS,
) -> PreparedCorpus:
    """Prepare MELD from its official CSVs and clip folders (all splits in one manifest).

    Args:
        root: Folder holding the CSVs (directly or one level below, e.g. ``MELD.Raw/``) and the clip
            folders (anywhere below).
        labels: ``meld7`` (default), ``meld4``, ``meld-sentiment`` or another registered scheme.
        allow_missing_audio: Keep utterances whose clip is missing or undecodable (``audio=None``);
            use it for text-only work or when the clips are not downloaded.
        progress: Show a progress bar while checking clips.
        check_audio: Read each clip's header (:func:`~emofuse.data.audio.audio_info`) so corrupt clips
            land in ``report.bad_audio``; ``False`` checks existence only.
        decode_audio: Decode every clip completely (slow, catches truncated streams).
        splits: Splits to read.

    Returns:
        The prepared corpus. ``report.notes`` names malformed rows (``<file>:<line>: ...``), missing
        CSVs and folders, and gives missing / bad clip counts per split.

    Raises:
        CorpusError: ``root`` is not a folder, no MELD CSV is found, or a CSV lacks a needed column.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: MELD root folder not found")
    bad_splits = [s for s in splits if s not in SPLITS]
    if bad_splits:
        raise ValueError(f"unknown MELD split(s) {bad_splits}; choose from {SPLITS}")
    scheme = resolve_scheme(labels, "meld7")
    label_column = _LABEL_COLUMN.get(scheme.name, "Emotion")
    builder = RecordBuilder("meld", scheme, allow_missing_audio, check_audio, decode_audio)

    csvs: dict[str, Path] = {}
    for split in splits:
        found = _find_csv(root, CSV_FILES[split])
        if found is None:
            builder.notes.append(
                f"MELD: {CSV_FILES[split]} not found in {root} or its subfolders; split {split} skipped"
            )
        else:
            csvs[split] = found
    if not csvs:
        expected = ", ".join(CSV_FILES[s] for s in splits)
        raise CorpusError(f"{root}: no MELD annotation CSV found (expected {expected} here or one level below)")

    folders, folder_notes = _find_clip_folders(root, tuple(csvs))
    builder.notes.extend(folder_notes)
    items: list[tuple[str, dict[str, Any], Path | None]] = []
    for split, path in csvs.items():
        rows, notes = _read_split(path, split, label_column)
        builder.notes.extend(notes)
        folder = folders.get(split)
        if folder is None:
            names = " or ".join(f"{n}/" for n in CLIP_FOLDERS[split])
            builder.notes.append(f"MELD: no {names} folder under {root}; all {len(rows)} {split} clips are missing")
            clips: dict[tuple[int, int], Path] = {}
        else:
            clips = _index_clips(folder)
        rows.sort(key=lambda r: (r["dia"], r["utt"]))
        for r in rows:
            expected_clip = folder / f"dia{r['dia']}_utt{r['utt']}.mp4" if folder is not None else None
            items.append((split, r, clips.get((r["dia"], r["utt"]), expected_clip)))

    for split, r, clip in iter_progress(items, "MELD: checking clips", progress):
        builder.add(
            f"{split}_dia{r['dia']}_utt{r['utt']}",
            clip,
            r["raw"],
            group=split,
            text=r["text"],
            speaker=r["speaker"].strip() or None,
            dialogue=f"{split}_dia{r['dia']}",
            turn=r["utt"],
            split=split,
            extra=r["extra"],
        )
    return builder.finish()
