"""CMU-MOSEI and CMU-MOSI: opinion videos from YouTube with segment-level sentiment (and emotion) labels.

A. Zadeh, P. P. Liang, S. Poria, E. Cambria, L.-P. Morency, "Multimodal Language Analysis in the Wild:
CMU-MOSEI Dataset and Interpretable Dynamic Fusion Graph", ACL 2018. A. Zadeh, R. Zellers, E. Pincus,
L.-P. Morency, "MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity Analysis in Online Opinion
Videos", IEEE Intelligent Systems 31(6), 2016. Labels and words come as CMU-MultimodalSDK computational
sequences (``.csd``, HDF5: ``<sequence name>/data/<video_id>/{features,intervals}`` plus ``metadata``).

Files are found by name anywhere under ``root`` (any sub-folders)::

    CMU_MOSEI_Labels.csd            "All Labels": [sentiment, happy, sad, anger, surprise, disgust, fear]
    CMU_MOSI_Opinion_Labels.csd     "Opinion Segment Labels": [sentiment]
    CMU_MOSEI_TimestampedWords.csd  "words" (optional; CMU_MOSI_TimestampedWords.csd for MOSI)
    .../WAV_16000/<video_id>.wav    full-video audio (files under a ``Segmented`` folder are ignored)
    .../Transcript/Segmented/Combined/<video_id>.txt   "<vid>___<idx>___<start>___<end>___<text>" (optional)
    folds.json                      {"train": [...], "valid": [...], "test": [...]} video ids (optional), or
                                    three text files (standard_)train_fold.txt / valid / test (or train.txt,
                                    valid.txt or dev.txt, test.txt in root), or the SDK's
                                    cmu_mosei_std_folds.py / cmu_mosi_std_folds.py (read, never executed).

A segment's id is ``<video_id>[<row>]`` with ``row`` its row in the video's label intervals; ``audio`` is the
full-video wav with ``start``/``end`` set to the interval, ``dialogue`` the video id and ``turn`` the rank by
start time within the video. ``speaker`` is ``None`` (the corpora do not give speaker ids). Text comes from
the Combined transcript of the video when present (the line whose interval overlaps the segment most, IoU >=
0.5), else from the words sequence (words inside the interval, ``sp`` skipped). The raw scores are kept in
``extra`` (``sentiment``, and for MOSEI ``happy``, ``sad``, ``anger``, ``surprise``, ``disgust``, ``fear``)
for regression. Splits are ``train``/``dev``/``test`` from the official folds, or ``None`` with a note.

Label schemes: ``mosei4-cmd`` (MOSEI default; neutral, happy, sad, angry; see :func:`mosei_cmd_label`),
``sentiment2`` (MOSI default; negative, positive with sentiment >= 0 positive) and ``sentiment7``
("-3" ... "3"). ``raw_label`` is the rule's outcome before the scheme mapping (``happy``, ``anger``,
``neutral``, ``tie``, ``below-threshold``, ``positive``, ``-2``, ...); dropped segments are counted by it.
CMD's exclusion of non-English and transcript-less samples is not applied here: segments without text are
listed in ``report.empty_text``.

CMU-MOSI also comes as Poria et al.'s utterance-level feature release (ACL 2017; the features of Rajan's
thesis Ch. 5, SeqSEW: text 100-d CNN, audio 73-d openSMILE, video 100-d 3D-CNN), used when no
``CMU_MOSI_Opinion_Labels.csd`` is found::

    ROOT/.../{text,audio,video}_2way.pickle   (or text.pickle / audio.pickle / video.pickle)
        (train_data (62, 63, D), train_label (62, 63, 2) one-hot or (62, 63), test_data (31, 63, D),
         test_label, maxlen 63, train_length (62,), test_length (31,)): videos padded to 63 utterances

The pickles are read with a restricted unpickler (NumPy arrays only; nothing else is executed). The release
carries no video or utterance names: records are ``<train|test>_v<video>_u<utt>`` with ``dialogue`` the
video and ``turn`` the utterance; ``label`` is ``negative``/``positive`` (one-hot index 0/1; ``extra.positive``
0.0/1.0 as a regression target); there is no text or audio. Every modality's utterances are stacked into
``features_dir/mosi_<modality>.npy`` ``(utterances, D)`` and a record points at its row (``#[i:i+1]``).
Splits: the release's 31 test videos are ``test``; ``dev_videos`` (10, the thesis' 52/10 split, which names no
videos) of the 62 train videos, drawn with ``seed``, are ``dev``, the rest ``train``.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.labels import LabelScheme, get_scheme, register_scheme
from emofuse.data.manifest import Utterance, validate_records
from emofuse.utils.progress import track

__all__ = ["EMOTIONS", "mosei_cmd_label", "prepare_mosei", "prepare_mosi", "sentiment_label"]

EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
_SPLITS = {"train": "train", "valid": "dev", "dev": "dev", "val": "dev", "test": "test"}

register_scheme(
    LabelScheme(
        "mosei4-cmd",
        ("neutral", "happy", "sad", "angry"),
        {"neutral": "neutral", "happy": "happy", "sad": "sad", "anger": "angry"},
        "CMU-MOSEI 4-class by CMD's rule: top of happy/sad/anger if >= 1, all six zero -> neutral, else dropped",
    )
)
register_scheme(
    LabelScheme(
        "sentiment2",
        ("negative", "positive"),
        {"negative": "negative", "positive": "positive"},
        "binary sentiment, non-negative split: sentiment >= 0 -> positive, < 0 -> negative (zeros are positive)",
    )
)
_S7 = tuple(str(i) for i in range(-3, 4))
register_scheme(
    LabelScheme(
        "sentiment7", _S7, {c: c for c in _S7}, "7-class sentiment: sentiment clipped to [-3, 3], rounded half to even"
    )
)


def mosei_cmd_label(emotions: Sequence[float]) -> str:
    """CMD's MOSEI rule (``specs/cmd.md`` §4.2) on the six emotion scores.

    Args:
        emotions: Scores in [0, 3] in :data:`EMOTIONS` order (happy, sad, anger, surprise, disgust, fear).

    Returns:
        ``neutral`` when all six are zero; else the highest of happy / sad / anger when it is >= 1 and unique
        (``happy``, ``sad`` or ``anger``); else ``tie`` (several at the top) or ``below-threshold``.

    Example:
        >>> mosei_cmd_label([0, 0, 0, 0, 0, 0]), mosei_cmd_label([0, 1.0, 0.33, 2.0, 0, 0])
        ('neutral', 'sad')
        >>> mosei_cmd_label([1.0, 0, 1.0, 0, 0, 0]), mosei_cmd_label([0.67, 0, 0, 0, 0, 0])
        ('tie', 'below-threshold')
    """
    scores = [float(x) for x in emotions[:6]]
    if any(math.isnan(x) for x in scores):
        return "nan"
    if all(abs(x) < 1e-6 for x in scores):
        return "neutral"
    three = dict(zip(EMOTIONS[:3], scores[:3], strict=True))
    best = max(three.values())
    if best < 1.0 - 1e-6:
        return "below-threshold"
    top = [e for e, v in three.items() if abs(v - best) < 1e-6]
    return top[0] if len(top) == 1 else "tie"


def sentiment_label(sentiment: float, classes: int = 2) -> str:
    """Sentiment class name for ``sentiment2`` (``negative``/``positive``) or ``sentiment7`` (``"-3"``..``"3"``).

    Args:
        sentiment: Score in [-3, 3].
        classes: 2 (``>= 0`` is positive) or 7 (clipped to [-3, 3], rounded half to even as ``np.round``).

    Returns:
        The class name (``nan`` for a missing score).
    """
    if math.isnan(sentiment):
        return "nan"
    if classes == 2:
        return "positive" if sentiment >= 0 else "negative"
    return str(int(np.round(np.clip(sentiment, -3.0, 3.0))))


def _read_csd(path: Path, notes: list[str], only: set[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Video id → (features, intervals) of a computational sequence; broken entries become notes."""
    import h5py

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        tops = [k for k in f if isinstance(f[k], h5py.Group) and "data" in f[k]]
        if not tops:
            raise CorpusError(f"{path}: not a CMU-MultimodalSDK sequence (no '<name>/data' group)")
        data = f[tops[0]]["data"]
        for vid in data:
            if only is not None and vid not in only:
                continue
            item = data[vid]
            try:
                feats, iv = np.asarray(item["features"][()]), np.asarray(item["intervals"][()], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as e:
                notes.append(f"{path.name}: video {vid!r} skipped: unreadable features/intervals ({e})")
                continue
            if iv.ndim != 2 or iv.shape[1] != 2 or len(feats) != len(iv):
                notes.append(f"{path.name}: video {vid!r} skipped: intervals {iv.shape} do not match {feats.shape}")
                continue
            out[vid] = (feats.reshape(len(iv), -1), iv)
    return out


def _walk(root: Path) -> list[Path]:
    """All files under ``root``, shallowest first (one walk serves every lookup)."""
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: (len(p.parts), str(p)))


def _find(files: list[Path], name: str) -> Path | None:
    return next((p for p in files if p.name == name), None)


def _index_audio(files: list[Path]) -> dict[str, Path]:
    audio: dict[str, Path] = {}
    for p in files:
        if p.suffix.lower() == ".wav" and "WAV_16000" in p.parts and "Segmented" not in p.parts:
            audio.setdefault(p.stem, p)
    return audio


def _read_combined(path: Path, notes: list[str]) -> list[tuple[float, float, str]]:
    lines: list[tuple[float, float, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("___", 4)
        try:
            start, end = float(parts[2]), float(parts[3])
            lines.append((start, end, parts[4].strip()))
        except (IndexError, ValueError):
            notes.append(f"{path}:{lineno}: malformed transcript line: {line.strip()!r}")
    return lines


def _best_line(lines: list[tuple[float, float, str]], start: float, end: float) -> str | None:
    best, best_iou = None, 0.5
    for s, e, text in lines:
        inter = min(e, end) - max(s, start)
        union = max(e, end) - min(s, start)
        iou = inter / union if union > 0 else 0.0
        if iou >= best_iou:
            best, best_iou = text, iou
    return best


def _words_in(words: tuple[np.ndarray, np.ndarray] | None, start: float, end: float, eps: float = 1e-3) -> str:
    if words is None:
        return ""
    feats, iv = words
    out = []
    for w, (s, e) in zip(feats[:, 0], iv, strict=True):
        token = w.decode("utf-8", errors="replace") if isinstance(w, bytes) else str(w)
        if s >= start - eps and e <= end + eps and token.strip() and token != "sp":
            out.append(token.strip())
    return " ".join(out)


def _tokens(text: str) -> list[str]:
    text = re.sub(r"#.*", "", text)
    return re.findall(r"[^\s,'\"\[\]]+", text)


def _load_folds(root: Path, files: list[Path], corpus: str, notes: list[str]) -> dict[str, str] | None:
    """Video id → split (train/dev/test) from ``folds.json``, three text files or the SDK's folds module."""
    folds: dict[str, list[str]] = {}
    source: Path | None = _find(files, "folds.json")
    if source is not None:
        obj = json.loads(source.read_text(encoding="utf-8"))
        folds = {k: [str(v) for v in obj[k]] for k in obj if k in _SPLITS}
    else:
        for key in ("train", "valid", "test"):
            names = [f"standard_{key}_fold.txt", f"{key}_fold.txt"]
            alt = [f"{key}.txt"] + (["dev.txt", "val.txt"] if key == "valid" else [])
            hit = next((p for n in names if (p := _find(files, n)) is not None), None)
            hit = hit or next((root / n for n in alt if (root / n).is_file()), None)
            if hit is not None:
                folds[key] = _tokens(hit.read_text(encoding="utf-8"))
                source = hit.parent
        if not folds:
            source = _find(files, f"cmu_{corpus}_std_folds.py")
            if source is not None:
                for node in ast.parse(source.read_text(encoding="utf-8")).body:
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                        m = re.fullmatch(r"standard_(train|valid|test)_fold", node.targets[0].id)
                        if m:
                            folds[m.group(1)] = [str(v) for v in ast.literal_eval(node.value)]
    if not folds:
        notes.append(f"{root}: no official folds found (folds.json, *_fold.txt, cmu_{corpus}_std_folds.py); split=None")
        return None
    split_of: dict[str, str] = {}
    for key, vids in folds.items():
        for vid in vids:
            if split_of.setdefault(vid, _SPLITS[key]) != _SPLITS[key]:
                notes.append(f"{source}: video {vid!r} is in several folds; kept {split_of[vid]!r}")
    return split_of


_PORIA_MODALITIES = ("text", "audio", "video")
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


def _load_numpy_pickle(path: Path) -> object:
    """Unpickle a (Python 2 or 3) pickle holding only NumPy arrays, tuples, lists and numbers."""
    import importlib
    import pickle

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) not in _NUMPY_GLOBALS:
                raise CorpusError(f"{path}: refuses to unpickle {module}.{name} (only NumPy arrays are read)")
            if module.startswith("numpy.core") and hasattr(np, "_core"):
                module = module.replace("numpy.core", "numpy._core", 1)
            return getattr(importlib.import_module(module), name)

    with open(path, "rb") as f:
        try:
            return _Restricted(f, encoding="latin1").load()
        except CorpusError:
            raise
        except Exception as e:
            raise CorpusError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def _poria_file(files: list[Path], modality: str) -> Path | None:
    return _find(files, f"{modality}_2way.pickle") or _find(files, f"{modality}.pickle")


def _read_poria(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"train"|"test": (data (V, U, D), labels (V, U) 0/1, lengths (V,))}`` of one modality pickle."""
    obj = _load_numpy_pickle(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 7:
        raise CorpusError(
            f"{path}: expected the tuple (train_data, train_label, test_data, test_label, maxlen, train_length, "
            f"test_length), found {type(obj).__name__}" + (f" of {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        )
    out = {}
    for part, (data, lab, length) in {"train": (obj[0], obj[1], obj[5]), "test": (obj[2], obj[3], obj[6])}.items():
        data, lab, length = np.asarray(data, dtype=np.float32), np.asarray(lab), np.asarray(length).astype(int)
        if lab.ndim == 3:
            lab = lab.argmax(-1)
        if data.ndim != 3 or lab.shape != data.shape[:2] or length.shape != (data.shape[0],):
            raise CorpusError(
                f"{path}: {part} arrays do not fit: data {data.shape}, labels {lab.shape}, lengths {length.shape}; "
                "expected (videos, utterances, D), (videos, utterances[, 2]), (videos,)"
            )
        if (length < 0).any() or (length > data.shape[1]).any():
            raise CorpusError(f"{path}: {part} lengths outside [0, {data.shape[1]}]")
        out[part] = (data, lab.astype(int), length)
    return out


def _prepare_mosi_poria(
    root: Path,
    files: list[Path],
    scheme_name: str,
    features_dir: str | Path | None,
    dev_videos: int,
    seed: int,
) -> PreparedCorpus:
    if scheme_name != "sentiment2":
        raise ValueError("Poria's MOSI release has binary labels only: use labels=sentiment2")
    found = {m: p for m in _PORIA_MODALITIES if (p := _poria_file(files, m)) is not None}
    if features_dir is None:
        raise CorpusError(
            f"{root}: Poria MOSI pickles found; pass features_dir=DIR (CLI: --option features_dir=DIR) for the "
            "mosi_<modality>.npy files the records point at"
        )
    notes = [f"Poria MOSI release: {', '.join(f'{m} {p.name}' for m, p in found.items())}"]
    missing = [m for m in _PORIA_MODALITIES if m not in found]
    if missing:
        notes.append(f"{root}: no pickle for {', '.join(missing)}; those modalities are absent")
    parts = {m: _read_poria(p) for m, p in found.items()}
    first = next(iter(found))
    for m in found:
        for part in ("train", "test"):
            a, b = parts[first][part], parts[m][part]
            if not (np.array_equal(a[2], b[2]) and a[1].shape == b[1].shape and np.array_equal(a[1], b[1])):
                raise CorpusError(f"{found[m]}: {part} labels or lengths differ from {found[first]}")
    train_n = parts[first]["train"][0].shape[0]
    if not 0 <= dev_videos < train_n:
        raise ValueError(f"dev_videos must be in [0, {train_n - 1}], got {dev_videos}")
    dev = set(np.random.default_rng(seed).permutation(train_n)[:dev_videos].tolist())
    out_dir = Path(features_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, int]] = []  # (part, video, utt)
    for part in ("train", "test"):
        _, _, length = parts[first][part]
        rows += [(part, v, u) for v in range(len(length)) for u in range(int(length[v]))]
    paths: dict[str, Path] = {}
    for m in found:
        stacked = np.stack([parts[m][part][0][v, u] for part, v, u in rows]) if rows else np.zeros((0, 1))
        paths[m] = out_dir / f"mosi_{m}.npy"
        np.save(paths[m], stacked.astype(np.float32))
    records: list[Utterance] = []
    for i, (part, v, u) in enumerate(rows):
        label = "positive" if int(parts[first][part][1][v, u]) == 1 else "negative"
        split = "test" if part == "test" else ("dev" if v in dev else "train")
        video = f"{part}_v{v:02d}"
        records.append(
            Utterance(
                id=f"{video}_u{u:02d}",
                label=label,
                raw_label=label,
                dialogue=video,
                turn=u,
                split=split,
                features={m: f"{p}#[{i}:{i + 1}]" for m, p in paths.items()},
                extra={"positive": 1.0 if label == "positive" else 0.0},
            )
        )
    report = validate_records(records, labels=("negative", "positive"), check_audio=False)
    report.empty_text = []  # a feature release: no transcripts
    counts = Counter(r.split for r in records)
    videos = {s: len({r.dialogue for r in records if r.split == s}) for s in ("train", "dev", "test")}
    notes.append(
        "utterances (videos): "
        + ", ".join(f"{s} {counts[s]} ({videos[s]})" for s in ("train", "dev", "test"))
        + f"; dev = {dev_videos} train video(s) drawn with seed {seed} (the thesis does not name its 10)"
    )
    report.notes += notes
    scheme = get_scheme("sentiment2")
    return PreparedCorpus("mosi", records, scheme.classes, scheme.name, report, {})


def _prepare_cmu(
    corpus: str,
    root: str | Path,
    labels: str | None,
    allow_missing_audio: bool,
    progress: bool,
    features_dir: str | Path | None = None,
    dev_videos: int = 10,
    seed: int = 0,
) -> PreparedCorpus:
    root = Path(root).expanduser().resolve()
    upper = corpus.upper()
    label_name = "CMU_MOSEI_Labels.csd" if corpus == "mosei" else "CMU_MOSI_Opinion_Labels.csd"
    allowed = ("mosei4-cmd", "sentiment2", "sentiment7") if corpus == "mosei" else ("sentiment2", "sentiment7")
    scheme = get_scheme(labels or allowed[0])
    if scheme.name not in allowed:
        raise ValueError(f"label scheme {scheme.name!r} does not apply to {upper}; choose one of {', '.join(allowed)}")
    if not root.is_dir():
        raise CorpusError(f"{root}: not a folder; expected {label_name} and .../WAV_16000/<video_id>.wav under it")
    files = _walk(root)
    label_file = _find(files, label_name)
    if label_file is None and corpus == "mosi" and any(_poria_file(files, m) for m in _PORIA_MODALITIES):
        return _prepare_mosi_poria(root, files, scheme.name, features_dir, dev_videos, seed)
    if label_file is None:
        alt = " nor Poria's {text,audio,video}_2way.pickle" if corpus == "mosi" else ""
        raise CorpusError(
            f"{root}: {label_name}{alt} not found (searched all sub-folders); see emofuse.data.corpora.mosei"
        )
    notes: list[str] = []
    labelled = _read_csd(label_file, notes)
    width = 7 if corpus == "mosei" else 1
    words_file = _find(files, f"CMU_{upper}_TimestampedWords.csd")
    words = _read_csd(words_file, notes, only=set(labelled)) if words_file else {}
    combined = {p.stem: p for p in files if p.suffix == ".txt" and p.parent.name == "Combined"}
    if not words and not combined:
        notes.append(f"{root}: no transcripts (CMU_{upper}_TimestampedWords.csd or Transcript/.../Combined/*.txt)")
    audio = _index_audio(files)
    split_of = _load_folds(root, files, corpus, notes)

    records: list[Utterance] = []
    dropped: Counter[str] = Counter()
    missing_audio: list[str] = []
    for vid in track(sorted(labelled), f"{upper} videos", disable=not progress):
        feats, iv = labelled[vid]
        if feats.shape[1] < width:
            notes.append(f"{label_file.name}: video {vid!r} skipped: {feats.shape[1]} label columns, expected {width}")
            continue
        lines = _read_combined(combined[vid], notes) if vid in combined else []
        order = sorted(range(len(iv)), key=lambda i: (iv[i, 0], iv[i, 1], i))
        for turn, row in enumerate(order):
            seg_id = f"{vid}[{row}]"
            start, end = max(float(iv[row, 0]), 0.0), float(iv[row, 1])
            if not end > start:
                notes.append(f"{label_file.name}: segment {seg_id} skipped: empty interval [{start}, {end}]")
                continue
            scores = [float(x) for x in feats[row, :width]]
            if scheme.name == "mosei4-cmd":
                raw = mosei_cmd_label(scores[1:])
            else:
                raw = sentiment_label(scores[0], classes=scheme.num_classes)
            label = scheme.map(raw)
            if label is None:
                dropped[raw] += 1
                continue
            wav = audio.get(vid)
            if wav is None:
                missing_audio.append(seg_id)
                if not allow_missing_audio:
                    continue
            text = _best_line(lines, start, end) if lines else None
            if text is None:
                text = _words_in(words.get(vid), start, end)
            extra: dict[str, object] = dict(zip(("sentiment", *EMOTIONS), scores, strict=False))
            records.append(
                Utterance(
                    id=seg_id,
                    audio=str(wav) if wav is not None else None,
                    start=start,
                    end=end,
                    text=text,
                    label=label,
                    raw_label=raw,
                    dialogue=vid,
                    turn=turn,
                    split=split_of.get(vid) if split_of is not None else None,
                    extra=extra,
                )
            )

    if split_of is not None:
        unsplit = sorted({r.dialogue for r in records if r.split is None and r.dialogue})
        if unsplit:
            notes.append(f"{len(unsplit)} video(s) are in no official fold (split=None): {', '.join(unsplit[:5])}")
    report = validate_records(records, labels=scheme.classes)
    report.missing_audio = list(dict.fromkeys(missing_audio + report.missing_audio))
    if missing_audio and not allow_missing_audio:
        vids = sorted({i.rsplit("[", 1)[0] for i in missing_audio})
        shown = ", ".join(vids[:5]) + (" ..." if len(vids) > 5 else "")
        notes.append(f"dropped {len(missing_audio)} segment(s) of {len(vids)} video(s) with no WAV_16000 wav: {shown}")
    if dropped:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(dropped.items()))
        notes.append(f"{scheme.name}: dropped {sum(dropped.values())} segment(s): {kinds}")
    report.notes += notes
    return PreparedCorpus(corpus, records, scheme.classes, scheme.name, report, dict(sorted(dropped.items())))


def prepare_mosei(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
) -> PreparedCorpus:
    """Build the CMU-MOSEI manifest from the SDK's label sequence, full-video audio and transcripts.

    Args:
        root: Folder holding ``CMU_MOSEI_Labels.csd`` and the ``WAV_16000`` audio (any sub-folders).
        labels: ``mosei4-cmd`` (default), ``sentiment2`` or ``sentiment7``.
        allow_missing_audio: Keep segments whose video wav is missing, with ``audio=None`` (reported in
            ``report.missing_audio`` either way).
        progress: Show a progress bar.

    Returns:
        The prepared corpus; ``dropped`` counts segments per rule outcome (``tie``, ``below-threshold``, ...).

    Raises:
        CorpusError: ``CMU_MOSEI_Labels.csd`` is not found under ``root`` or is not a computational sequence.
        ValueError: ``labels`` does not apply to MOSEI.
    """
    return _prepare_cmu("mosei", root, labels, allow_missing_audio, progress)


def prepare_mosi(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    features_dir: str | Path | None = None,
    dev_videos: int = 10,
    seed: int = 0,
) -> PreparedCorpus:
    """Build the CMU-MOSI manifest (sentiment only) from the SDK's opinion labels, audio and transcripts.

    Args:
        root: Folder holding ``CMU_MOSI_Opinion_Labels.csd`` and the ``WAV_16000`` audio (any sub-folders).
        labels: ``sentiment2`` (default) or ``sentiment7``.
        allow_missing_audio: Keep segments whose video wav is missing, with ``audio=None``.
        progress: Show a progress bar.
        features_dir: Poria release only: where ``mosi_<modality>.npy`` are written (required there).
        dev_videos: Poria release only: train videos moved to ``dev`` (10, the thesis' 52 / 10 split).
        seed: Poria release only: seed of the ``dev`` video draw.

    Returns:
        The prepared corpus.

    Raises:
        CorpusError: Neither ``CMU_MOSI_Opinion_Labels.csd`` nor Poria's ``*_2way.pickle`` is found under
            ``root``, or a pickle is malformed (named).
        ValueError: ``labels`` does not apply to MOSI (Poria's release: only ``sentiment2``).
    """
    return _prepare_cmu("mosi", root, labels, allow_missing_audio, progress, features_dir, dev_videos, seed)
