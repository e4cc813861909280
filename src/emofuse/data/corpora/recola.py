"""RECOLA (AVEC 2016 package): frame-level features and continuous arousal / valence, cut into windows.

F. Ringeval, A. Sonderegger, J. Sauer, D. Lalanne, "Introducing the RECOLA multimodal corpus of remote
collaborative and affective interactions", FG 2013; M. Valstar et al., "AVEC 2016", ACM MM workshop 2016.
27 French-speaking subjects (9 train, 9 dev, 9 test recordings of 5 minutes), arousal and valence gold
standards every 40 ms (7,501 frames), test labels private. Rajan's thesis Ch. 5 (spec ``rajan-thesis.md``
§4.2-4.3) uses the package's eGeMAPS audio (88-d), LGBP-TOP video appearance (168-d) and landmark video
geometry (632-d) features.

Expected layout (the package as distributed; ``.arff``, ``;``/``,``-separated ``.csv`` or ``.npy`` files)::

    ROOT/ratings_gold_standard/{arousal,valence}/<rec>.arff     Instance_name, frameTime, GoldStandard
    ROOT/features_audio/{arousal,valence}/<rec>.arff            Instance_name, frameTime, 88 features
    ROOT/features_video_appearance/{arousal,valence}/<rec>.arff 168 features
    ROOT/features_video_geometric/{arousal,valence}/<rec>.arff  632 features
    ROOT/recordings_audio/<rec>.wav                              (optional; attached as ``audio``)

``<rec>`` is ``train_1`` ... ``dev_9`` / ``test_9``. The package computes each feature set separately for
arousal and valence (window sizes tuned per dimension), so ``dimension`` picks the sub-folder (a feature
folder without ``arousal``/``valence`` sub-folders is read directly). Non-numeric columns and a
``frameTime`` column are metadata; the other numeric columns are the features.

Windows (spec §4.3, following the thesis): ``window`` = 3 s (75 frames of 40 ms) with ``hop`` = 1 s on
train, non-overlapping on dev (``dev_hop`` = ``window``). ``tail="end"`` adds one last full window that
ends on the last frame when the hop leaves frames uncovered (7,501 frames → 298 + 1 = **299** train windows
per recording, the thesis' count); ``"partial"`` adds a shorter one instead, ``"drop"`` none. Every window
is one record, id ``<rec>[<first>:<end>]`` (frame indices), ``start``/``end`` in seconds, ``speaker`` and
``dialogue`` the recording, ``turn`` the window index, and ``features[m] = "<file>.npy#[first:end]"`` so the
reader slices exactly the window's frames. ``extra`` holds ``arousal`` and ``valence`` (the gold standard
averaged over the window's frames), ``dimension`` and ``frames``. ``label`` is the chosen dimension
binarised at 0 (``recola2``: ``low`` < 0 <= ``high``) for UAR / WAR and stratification. SEW (non-sequential,
one record per 40 ms frame): ``window = hop = dev_hop = 0.04``.

ARFF / CSV features are converted once into ``features_dir/<modality>/<dimension>/<rec>.npy`` (float32,
``(frames, D)``; rewritten only when the source is newer); ``.npy`` features are referenced in place.
Splits: train → ``train``; dev → ``dev_split`` (default ``test``: the thesis reports *and* selects on dev,
the SEW configs read it as the test split; ``dev``: a validation split); test recordings have no public gold
standard and are skipped with a note (``dev_split="dev"`` keeps those that have one, as ``test``).
With dev as the test split there is no validation split, so early stopping has nothing to watch:
``val_recordings=N`` moves the last ``N`` train recordings (``train_9``, ``train_8``, ...) to ``dev`` (a
speaker-disjoint validation split, windowed like train).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.labels import LabelScheme, register_scheme
from emofuse.data.manifest import Utterance, validate_records
from emofuse.utils.progress import track

__all__ = ["FEATURE_FOLDERS", "RECOLA2", "prepare_recola", "read_frame_table", "window_bounds"]

RECOLA2 = register_scheme(
    LabelScheme(
        "recola2",
        ("low", "high"),
        {"low": "low", "high": "high"},
        "RECOLA arousal / valence window mean binarised at 0 (low < 0 <= high)",
    )
)
#: modality name → feature folder of the AVEC 2016 package.
FEATURE_FOLDERS = {
    "audio": "features_audio",
    "video_app": "features_video_appearance",
    "video_geo": "features_video_geometric",
    "ecg": "features_ECG",
    "hrhrv": "features_HRHRV",
    "eda": "features_EDA",
    "scl": "features_SCL",
    "scr": "features_SCR",
}
DIMENSIONS = ("arousal", "valence")
_SUFFIXES = (".arff", ".csv", ".npy")
_PARTITIONS = ("train", "dev", "test")


def read_frame_table(path: Path) -> np.ndarray:
    """Numeric frame-level columns of an AVEC ``.arff`` / ``.csv`` (or a ``.npy``) file, ``(frames, D)`` float32.

    Non-numeric attributes (``Instance_name``) and ``frameTime`` are dropped; ``?`` is NaN.

    Raises:
        CorpusError: The file is not ARFF / CSV, a data row has the wrong number of values or a value is
            not a number (the message names file and line), or it holds no data rows.
    """
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2 or not len(arr):
            raise CorpusError(f"{path}: expected a (frames, D) array, found {arr.shape}")
        return np.asarray(arr, dtype=np.float32)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keep: list[int] = []
    n_cols = 0
    rows: list[list[float]] = []
    first_data = 0
    if path.suffix.lower() == ".arff":
        for i, line in enumerate(lines):
            s = line.strip()
            low = s.lower()
            if low.startswith("@attribute"):
                parts = s.split(None, 2)
                if len(parts) < 3:
                    raise CorpusError(f"{path}:{i + 1}: malformed @attribute line: {s!r}")
                name, kind = parts[1].strip("'\""), parts[2].strip().lower()
                if kind in ("numeric", "real", "integer") and name.lower() not in ("frametime", "time"):
                    keep.append(n_cols)
                n_cols += 1
            elif low.startswith("@data"):
                first_data = i + 1
                break
        else:
            raise CorpusError(f"{path}: not an ARFF file (no @data line)")
        sep = ","
    elif path.suffix.lower() == ".csv":
        header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
        if header_at is None:
            raise CorpusError(f"{path}: empty file")
        header = lines[header_at]
        sep = ";" if header.count(";") >= header.count(",") else ","
        names = [c.strip().strip("'\"") for c in header.split(sep)]
        n_cols = len(names)
        first_data = header_at + 1
        probe = next((line for line in lines[first_data:] if line.strip()), "")
        values = probe.split(sep)
        for j, name in enumerate(names):
            if name.lower() in ("frametime", "time", "name", "instance_name"):
                continue
            try:
                float(values[j])
            except (IndexError, ValueError):
                continue
            keep.append(j)
    else:
        raise CorpusError(f"{path}: unsupported feature file type (expected {', '.join(_SUFFIXES)})")
    if not keep:
        raise CorpusError(f"{path}: no numeric feature column")
    for i in range(first_data, len(lines)):
        s = lines[i].strip()
        if not s or s.startswith("%"):
            continue
        values = s.split(sep)
        if len(values) != n_cols:
            raise CorpusError(f"{path}:{i + 1}: {len(values)} values, expected {n_cols}: {s[:80]!r}")
        try:
            rows.append([math.nan if values[j].strip() == "?" else float(values[j]) for j in keep])
        except ValueError:
            raise CorpusError(f"{path}:{i + 1}: a value is not a number: {s[:80]!r}") from None
    if not rows:
        raise CorpusError(f"{path}: no data rows")
    return np.asarray(rows, dtype=np.float32)


def window_bounds(n: int, width: int, hop: int, tail: str = "end") -> list[tuple[int, int]]:
    """``[first, end)`` frame ranges of windows of ``width`` frames every ``hop`` frames over ``n`` frames.

    Args:
        n: Number of frames.
        width: Window length in frames.
        hop: Step in frames.
        tail: What to do with frames after the last full window: ``end`` (one more full window ending on the
            last frame), ``partial`` (one shorter window from the next hop to the end) or ``drop``. A sequence
            shorter than ``width`` gives one window ``[0, n)`` unless ``tail="drop"``.

    Example:
        >>> len(window_bounds(7501, 75, 25)), window_bounds(7501, 75, 25)[-2:]
        (299, [(7425, 7500), (7426, 7501)])
        >>> len(window_bounds(7501, 75, 25, "drop")), window_bounds(10, 4, 4, "partial")
        (298, [(0, 4), (4, 8), (8, 10)])
    """
    if width <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {width} and {hop} frames")
    if tail not in ("end", "partial", "drop"):
        raise ValueError(f"tail must be end, partial or drop, got {tail!r}")
    if n < width:
        return [] if tail == "drop" or n == 0 else [(0, n)]
    out = [(s, s + width) for s in range(0, n - width + 1, hop)]
    last_end = out[-1][1]
    if last_end < n:
        if tail == "end":
            out.append((n - width, n))
        elif tail == "partial":
            out.append((out[-1][0] + hop, n))
    return out


def _files(folder: Path) -> dict[str, Path]:
    """Recording name → file (``.npy`` preferred over ``.arff`` over ``.csv`` for the same name)."""
    found: dict[str, Path] = {}
    for suffix in (".csv", ".arff", ".npy"):
        for p in sorted(folder.glob(f"*{suffix}")):
            if not p.name.startswith("."):
                found[p.stem] = p
    return found


def _dim_folder(folder: Path, dimension: str) -> Path:
    sub = folder / dimension
    return sub if sub.is_dir() else folder


def prepare_recola(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = True,
    progress: bool = True,
    dimension: Literal["arousal", "valence"] = "arousal",
    modalities: str | list[str] | None = None,
    features_dir: str | Path | None = None,
    window: float = 3.0,
    hop: float = 1.0,
    dev_hop: float | None = None,
    frame: float = 0.04,
    tail: Literal["end", "partial", "drop"] = "end",
    dev_split: Literal["test", "dev"] = "test",
    val_recordings: int = 0,
) -> PreparedCorpus:
    """Build the RECOLA window manifest from the AVEC 2016 package (layout in the module docstring).

    Args:
        root: The package folder (holding ``ratings_gold_standard`` and the ``features_*`` folders).
        labels: ``recola2`` (the only scheme; default).
        allow_missing_audio: Accepted for the CLI; audio is optional here (attached when the wav exists).
        progress: Show a progress bar.
        dimension: Which gold standard gives ``label`` and which feature sub-folder is read.
        modalities: Feature modalities (names of :data:`FEATURE_FOLDERS`; a comma-separated string works);
            default ``audio``, ``video_app``, ``video_geo``.
        features_dir: Where ``.npy`` copies of ARFF / CSV features are written (required for those).
        window: Window length in seconds (3 s).
        hop: Hop in seconds on train (1 s).
        dev_hop: Hop on dev and test (default ``window``: non-overlapping).
        frame: Frame period in seconds (40 ms).
        tail: Frames after the last full window: ``end``, ``partial`` or ``drop`` (see :func:`window_bounds`).
        dev_split: Split of the dev recordings (``test`` or ``dev``).
        val_recordings: Train recordings moved to the ``dev`` split (the last ones by number; needs
            ``dev_split="test"``).

    Returns:
        The prepared corpus; the report's notes count recordings and windows per partition, skipped
        recordings and recordings with an absent modality.

    Raises:
        CorpusError: ``root`` or ``ratings_gold_standard/<dimension>`` or a requested feature folder is
            missing, ARF / CSV features need ``features_dir``, or a label / feature file is malformed (file
            and line named).
        ValueError: Bad ``labels``, ``dimension``, ``modalities``, ``dev_split`` or window settings.
    """
    if labels not in (None, "recola2"):
        raise ValueError(f"label scheme {labels!r} does not apply to RECOLA; use recola2")
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be arousal or valence, got {dimension!r}")
    if dev_split not in ("test", "dev"):
        raise ValueError(f"dev_split must be test or dev, got {dev_split!r}")
    if val_recordings and dev_split != "test":
        raise ValueError("val_recordings needs dev_split='test' (the dev partition is already the validation split)")
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    mods = list(modalities or ("audio", "video_app", "video_geo"))
    unknown = [m for m in mods if m not in FEATURE_FOLDERS]
    if unknown or not mods:
        raise ValueError(f"unknown RECOLA modalities {unknown or mods}; choose from {', '.join(FEATURE_FOLDERS)}")
    width, step = round(window / frame), round(hop / frame)
    dev_step = round((dev_hop if dev_hop is not None else window) / frame)
    if min(width, step, dev_step) <= 0:
        raise ValueError(f"window / hop / dev_hop must be at least one frame of {frame} s")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CorpusError(f"{root}: not a folder; expected ratings_gold_standard/ and features_*/ under it")
    gs_root = root / "ratings_gold_standard"
    if not (gs_root / dimension).is_dir():
        raise CorpusError(f"{gs_root / dimension}: missing; expected ratings_gold_standard/{dimension}/<rec>.arff")
    feature_files: dict[str, dict[str, Path]] = {}
    for m in mods:
        folder = root / FEATURE_FOLDERS[m]
        if not folder.is_dir():
            raise CorpusError(
                f"{folder}: missing feature folder for modality {m!r} (choose others with modalities=...)"
            )
        feature_files[m] = _files(_dim_folder(folder, dimension))
        if not feature_files[m]:
            raise CorpusError(f"{_dim_folder(folder, dimension)}: no .arff / .csv / .npy feature files")
    needs_copy = any(p.suffix.lower() != ".npy" for files in feature_files.values() for p in files.values())
    out_dir = Path(features_dir).expanduser().resolve() if features_dir is not None else None
    if needs_copy and out_dir is None:
        raise CorpusError(
            f"{root}: the features are ARFF / CSV; pass features_dir=DIR (CLI: --option features_dir=DIR) for the "
            ".npy copies the window records point at"
        )

    notes: list[str] = []
    gold = {d: _files(gs_root / d) for d in DIMENSIONS if (gs_root / d).is_dir()}
    if len(gold) < 2:
        notes.append(f"{gs_root}: only {', '.join(gold)} gold standard present")
    names = sorted(
        {n for files in feature_files.values() for n in files} | set(gold[dimension]),
        key=lambda n: (n.split("_")[0], int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else 0, n),
    )
    split_of = {"train": "train", "dev": dev_split, "test": "test"}
    train_names = [n for n in names if n.startswith("train_") and n in gold[dimension]]
    if not 0 <= val_recordings < max(len(train_names), 1):
        raise ValueError(f"val_recordings must be in [0, {len(train_names) - 1}], got {val_recordings}")
    to_val = set(train_names[len(train_names) - val_recordings :]) if val_recordings else set()
    records: list[Utterance] = []
    skipped: Counter[str] = Counter()
    absent: Counter[str] = Counter()
    windows: Counter[str] = Counter()
    recordings: Counter[str] = Counter()
    for name in track(names, "RECOLA recordings", disable=not progress):
        part = name.split("_")[0]
        if part not in _PARTITIONS:
            notes.append(f"{name}: not a train_/dev_/test_ recording name; skipped")
            skipped["unknown-name"] += 1
            continue
        if name not in gold[dimension]:
            skipped[f"{part}: no gold standard"] += 1
            continue
        if part == "test" and dev_split == "test":
            skipped["test: dev is the test split"] += 1
            continue
        curves = {d: read_frame_table(files[name])[:, -1] for d, files in gold.items() if name in files}
        n = len(curves[dimension])
        refs: dict[str, Path] = {}
        for m in mods:
            src = feature_files[m].get(name)
            if src is None:
                absent[m] += 1
                continue
            if src.suffix.lower() == ".npy":
                dst, frames_m = src, int(np.load(src, mmap_mode="r").shape[0])
            else:
                assert out_dir is not None
                dst = out_dir / m / dimension / f"{name}.npy"
                if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
                    frames_m = int(np.load(dst, mmap_mode="r").shape[0])
                else:
                    arr = read_frame_table(src)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    np.save(dst, arr)
                    frames_m = len(arr)
            if frames_m != n:
                notes.append(
                    f"{src}: {frames_m} frames, gold standard has {n}; windows use the first {min(n, frames_m)}"
                )
                n = min(n, frames_m)
            refs[m] = dst
        bounds = window_bounds(n, width, step if part == "train" else dev_step, tail)
        if not bounds:
            skipped[f"{part}: shorter than one window"] += 1
            continue
        wav = root / "recordings_audio" / f"{name}.wav"
        recordings[part] += 1
        for turn, (a, b) in enumerate(bounds):
            extra: dict[str, object] = {d: float(np.nanmean(c[a:b])) for d, c in curves.items()}
            target = extra[dimension]
            label = None if not isinstance(target, float) or math.isnan(target) else ("high" if target >= 0 else "low")
            extra.update(dimension=dimension, frames=[a, b])
            records.append(
                Utterance(
                    id=f"{name}[{a}:{b}]",
                    audio=str(wav) if wav.is_file() else None,
                    start=round(a * frame, 6),
                    end=round(b * frame, 6),
                    label=label,
                    raw_label=label,
                    speaker=name,
                    session=part,
                    dialogue=name,
                    turn=turn,
                    split="dev" if name in to_val else split_of[part],
                    features={m: f"{p}#[{a}:{b}]" for m, p in refs.items()},
                    extra=extra,
                )
            )
            windows[part] += 1

    if not records:
        raise CorpusError(f"{root}: no window could be built (no recording has both gold standard and frames)")
    has_audio = any(r.audio is not None for r in records)
    report = validate_records(records, labels=RECOLA2.classes, check_audio=has_audio)
    report.empty_text = []  # feature corpus: no transcripts
    summary = ", ".join(
        f"{p}: {recordings[p]} recording(s) / {windows[p]} window(s)" for p in _PARTITIONS if recordings[p]
    )
    notes.append(f"RECOLA {dimension}, {width}-frame windows (hop {step} train / {dev_step} dev+test): {summary}")
    if skipped:
        notes.append("skipped recordings: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    if absent:
        notes.append(
            "recordings without a feature file (absent modality): "
            + ", ".join(f"{k}={v}" for k, v in sorted(absent.items()))
        )
    if to_val:
        notes.append(f"validation (split=dev): train recordings {', '.join(sorted(to_val))}")
    report.notes += notes
    return PreparedCorpus("recola", records, RECOLA2.classes, RECOLA2.name, report, {})
