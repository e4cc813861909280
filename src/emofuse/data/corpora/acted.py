"""Acted emotional speech corpora whose labels are coded in the file names: RAVDESS, CREMA-D, TESS, EmoDB.

Each recipe scans ``root`` recursively for audio files (hidden files ignored; when the same name
exists in several formats, wav > flac > others), decodes speaker, emotion and sentence from the
file name exactly as the corpus documents it, and keeps the corpus order (sorted paths). Names that
do not match the corpus pattern are skipped with a note naming the file. ``raw_label`` is the
corpus' own emotion name (the file-name code is in ``extra["emotion_code"]``). The 4-class schemes
use CMD's order neutral, happy, sad, angry; the larger ones put those four first except
``ravdess8``, which keeps RAVDESS' code order (class id = code - 1). No corpus has an official split.

- **RAVDESS** (Livingstone & Russo 2018, PLoS ONE 13(5):e0196391; zenodo.org/record/1188976):
  ``Actor_12/03-01-05-02-01-01-12.wav`` = Modality-VocalChannel-Emotion-Intensity-Statement-
  Repetition-Actor. Modality 01 full-AV, 02 video-only (skipped), 03 audio-only; a full-AV file is
  skipped when the audio-only file of the same take exists. Odd actors male, even female.
  ``ravdess8``: neutral, calm, happy, sad, angry, fearful, disgust, surprised; ``ravdess4``.
- **CREMA-D** (Cao et al. 2014, IEEE TAC 5(4); github.com/CheyneyComputerScience/CREMA-D):
  ``AudioWAV/1001_DFA_ANG_XX.wav`` = ActorID_Sentence_Emotion_Level; gender, age, race and
  ethnicity come from ``VideoDemographics.csv`` (root or one level below) when present.
  ``cremad6``: neutral, happy, sad, angry, fear, disgust; ``cremad4``.
- **TESS** (Dupuis & Pichora-Fuller 2010, Toronto emotional speech set; doi:10.5683/SP2/E8H2MF):
  ``OAF_angry/OAF_back_angry.wav`` = Speaker_Word_Emotion, speakers OAF (64 y) and YAF (26 y), both
  female, carrier phrase "Say the word <word>"; ``ps`` = pleasant surprise.
  ``tess7``: neutral, happy, sad, angry, fear, disgust, surprise; ``tess4``.
- **EmoDB** (Burkhardt et al., Interspeech 2005; emodb.bilderbar.info): ``wav/03a01Fa.wav`` =
  speaker (2 digits), text code (3), emotion letter (German initial), version letter.
  ``emodb7``: neutral, happy, sad, angry, fear, disgust, boredom; ``emodb4``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.corpora.table import RecordBuilder, iter_progress, read_csv_rows, resolve_scheme
from emofuse.data.labels import LabelScheme, register_scheme

__all__ = ["prepare_cremad", "prepare_emodb", "prepare_ravdess", "prepare_tess"]

_FOUR = ("neutral", "happy", "sad", "angry")


def _scheme(name: str, classes: tuple[str, ...], mapping: dict[str, str], description: str) -> LabelScheme:
    return register_scheme(LabelScheme(name, classes, mapping, description))


def _pick(mapping: dict[str, str], classes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in mapping.items() if v in classes}


# ------------------------------------------------------------------------------------- RAVDESS
RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS_MODALITY = {"01": "full-AV", "02": "video-only", "03": "audio-only"}
_RAVDESS_CHANNEL = {"01": "speech", "02": "song"}
_RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_RAVDESS = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
_R8 = tuple(RAVDESS_EMOTIONS.values())
_r_map = {v: v for v in _R8}
RAVDESS8 = _scheme("ravdess8", _R8, _r_map, "RAVDESS 8 emotions (1,440 speech files, 24 actors)")
RAVDESS4 = _scheme("ravdess4", _FOUR, _pick(_r_map, _FOUR), "RAVDESS neutral/happy/sad/angry (calm etc. dropped)")

# ------------------------------------------------------------------------------------- CREMA-D
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}  # fmt: skip
CREMAD_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_c_map = {"neutral": "neutral", "happy": "happy", "sad": "sad", "anger": "angry", "fear": "fear", "disgust": "disgust"}
_c_map.update({code: _c_map[name] for code, name in CREMAD_EMOTIONS.items()})
_C6 = (*_FOUR, "fear", "disgust")
CREMAD6 = _scheme("cremad6", _C6, _c_map, "CREMA-D 6 emotions (7,442 clips, 91 actors)")
CREMAD4 = _scheme("cremad4", _FOUR, _pick(_c_map, _FOUR), "CREMA-D neutral/happy/sad/angry")

# ---------------------------------------------------------------------------------------- TESS
TESS_EMOTIONS = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "neutral": "neutral", "ps": "pleasant surprise", "sad": "sad",
}  # fmt: skip
_TESS_AGE = {"OAF": 64, "YAF": 26}
_TESS = re.compile(r"^(OAF|YAF)_([^_]+)_(angry|disgust|fear|happy|neutral|ps|sad)$", re.IGNORECASE)
_t_map = {v: v for v in ("neutral", "happy", "sad", "angry", "fear", "disgust")} | {"pleasant surprise": "surprise"}
_t_map["ps"] = "surprise"
_T7 = (*_FOUR, "fear", "disgust", "surprise")
TESS7 = _scheme("tess7", _T7, _t_map, "TESS 7 emotions, ps (pleasant surprise) as surprise (2,800 files)")
TESS4 = _scheme("tess4", _FOUR, _pick(_t_map, _FOUR), "TESS neutral/happy/sad/angry")

# --------------------------------------------------------------------------------------- EmoDB
EMODB_SPEAKERS = {  # speaker: (gender, age), from the EmoDB documentation (5 female, 5 male)
    "03": ("male", 31), "08": ("female", 34), "09": ("female", 21), "10": ("male", 32), "11": ("male", 26),
    "12": ("male", 30), "13": ("female", 32), "14": ("female", 35), "15": ("male", 25), "16": ("female", 31),
}  # fmt: skip
EMODB_TEXTS = {  # text code: German sentence, as in the EmoDB documentation
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
EMODB_EMOTIONS = {  # letter (German initial): emotion
    "W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral",
}  # fmt: skip
_EMODB = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")
_e_map = {"neutral": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry"}
_e_map |= {"fear": "fear", "disgust": "disgust", "boredom": "boredom"}
_e_map |= {code: _e_map[name] for code, name in EMODB_EMOTIONS.items()}
_E7 = (*_FOUR, "fear", "disgust", "boredom")
EMODB7 = _scheme("emodb7", _E7, _e_map, "EmoDB 7 emotions (535 utterances, 10 speakers)")
EMODB4 = _scheme("emodb4", _FOUR, _pick(_e_map, _FOUR), "EmoDB neutral/happy/sad/angry")


# ------------------------------------------------------------------------------------- driver
class _Malformed(ValueError):
    """The file name does not follow the corpus pattern."""


class _Skipped(ValueError):
    """A well-formed file the recipe deliberately leaves out; the message is the reason."""


_EXT_RANK = {".wav": 0, ".flac": 1, ".ogg": 2, ".mp3": 3, ".mp4": 4}


def _scan(root: Path, exts: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """Audio files under ``root`` in sorted order, one per file stem (best format wins)."""
    best: dict[str, Path] = {}
    shadowed = 0
    for p in sorted(root.rglob("*"), key=lambda q: q.relative_to(root).as_posix()):
        if p.name.startswith(".") or p.suffix.lower() not in exts or not p.is_file():
            continue
        if p.stem in best:
            shadowed += 1
            if _EXT_RANK[p.suffix.lower()] >= _EXT_RANK[best[p.stem].suffix.lower()]:
                continue
        best[p.stem] = p
    notes = [f"{shadowed} file(s) skipped: same name as a file in a preferred format or folder"] if shadowed else []
    return sorted(best.values(), key=lambda q: q.relative_to(root).as_posix()), notes


def _run(
    corpus: str,
    root: str | Path,
    scheme: LabelScheme,
    exts: tuple[str, ...],
    parse: Callable[[Path], dict[str, Any]],
    opts: dict[str, Any],
    filter_files: Callable[[list[Path]], tuple[list[Path], list[str]]] | None = None,
    setup_notes: list[str] | None = None,
) -> PreparedCorpus:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: {corpus} root folder not found")
    progress = opts.pop("progress")
    builder = RecordBuilder(corpus, scheme, **opts)
    builder.notes.extend(setup_notes or [])
    files, notes = _scan(root, exts)
    builder.notes.extend(notes)
    if filter_files is not None:
        files, notes = filter_files(files)
        builder.notes.extend(notes)
    if not files:
        raise CorpusError(f"{root}: no {corpus} audio files ({', '.join(exts)}) found")
    skipped: dict[str, list[str]] = {}
    for path in iter_progress(files, f"{corpus}: checking audio", progress):
        rel = path.relative_to(root).as_posix()
        try:
            info = parse(path)
        except _Malformed as e:
            builder.notes.append(f"{rel}: malformed {corpus} file name ({e}); skipped")
            continue
        except _Skipped as e:
            skipped.setdefault(str(e), []).append(rel)
            continue
        builder.add(path.stem, path, info.pop("raw"), **info)
    for reason, rels in skipped.items():
        builder.notes.append(f"skipped {len(rels)} {reason} file(s), e.g. {rels[0]}")
    return builder.finish()


def _opts(allow_missing_audio: bool, progress: bool, check_audio: bool, decode_audio: bool) -> dict[str, Any]:
    return dict(
        allow_missing_audio=allow_missing_audio, progress=progress, check_audio=check_audio, decode_audio=decode_audio
    )


# ------------------------------------------------------------------------------------- recipes
def _parse_ravdess(path: Path) -> dict[str, Any]:
    m = _RAVDESS.match(path.stem)
    if m is None or not 1 <= int(m.group(7)) <= 24:
        raise _Malformed("expected MM-VV-EE-II-SS-RR-AA, e.g. 03-01-05-02-01-01-12")
    modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
    if modality == "02":
        raise _Skipped("video-only (modality 02)")
    return {
        "raw": RAVDESS_EMOTIONS[emotion],
        "speaker": f"Actor_{actor}",
        "text": RAVDESS_STATEMENTS[statement],
        "extra": {
            "gender": "male" if int(actor) % 2 else "female",
            "intensity": _RAVDESS_INTENSITY[intensity],
            "statement": statement,
            "repetition": repetition,
            "vocal_channel": _RAVDESS_CHANNEL[channel],
            "modality": _RAVDESS_MODALITY[modality],
            "emotion_code": emotion,
        },
    }


def _ravdess_dedupe(files: list[Path]) -> tuple[list[Path], list[str]]:
    audio_only = {p.stem[3:] for p in files if p.stem.startswith("03-")}
    kept = [p for p in files if not (p.stem.startswith("01-") and p.stem[3:] in audio_only)]
    n = len(files) - len(kept)
    return kept, [f"skipped {n} full-AV (modality 01) file(s) whose audio-only take is present"] if n else []


def prepare_ravdess(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
) -> PreparedCorpus:
    """Prepare RAVDESS (speech and song; wav, flac, or full-AV mp4) from its ``Actor_XX/`` folders.

    Args:
        root: Corpus folder (searched recursively).
        labels: Registered label scheme name (default ``ravdess8``).
        allow_missing_audio: Keep files whose audio cannot be read (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each file's header so corrupt files land in ``report.bad_audio``.
        decode_audio: Decode each file completely (slow).

    Returns:
        The prepared corpus, records in sorted path order.

    Raises:
        CorpusError: ``root`` is not a folder or holds no audio file of the corpus.
    """
    opts = _opts(allow_missing_audio, progress, check_audio, decode_audio)
    scheme = resolve_scheme(labels, "ravdess8")
    return _run("ravdess", root, scheme, (".wav", ".flac", ".mp4"), _parse_ravdess, opts, _ravdess_dedupe)


def _load_demographics(root: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    candidates = [root / "VideoDemographics.csv", *sorted(root.glob("*/VideoDemographics.csv"))]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return {}, [f"VideoDemographics.csv not found in {root}: gender, age, race and ethnicity unknown"]
    header, rows, notes, _ = read_csv_rows(path)
    need = ("ActorID", "Age", "Sex", "Race", "Ethnicity")
    if header is None or any(c not in header for c in need):
        return {}, [*notes, f"{path}: expected columns {', '.join(need)}, found {header}; demographics ignored"]
    table: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        if len(row) != len(header):
            notes.append(f"{path.name}:{line}: expected {len(header)} fields, got {len(row)}; row skipped")
            continue
        r = dict(zip(header, (c.strip() for c in row), strict=True))
        age: int | str = int(r["Age"]) if r["Age"].isdigit() else r["Age"]
        table[r["ActorID"]] = {"gender": r["Sex"].lower(), "age": age, "race": r["Race"], "ethnicity": r["Ethnicity"]}
    return table, notes


def prepare_cremad(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
) -> PreparedCorpus:
    """Prepare CREMA-D from ``AudioWAV/`` (or ``AudioMP3/``) plus ``VideoDemographics.csv``.

    Args:
        root: Corpus folder (searched recursively).
        labels: Registered label scheme name (default ``cremad6``).
        allow_missing_audio: Keep files whose audio cannot be read (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each file's header so corrupt files land in ``report.bad_audio``.
        decode_audio: Decode each file completely (slow).

    Returns:
        The prepared corpus, records in sorted path order.

    Raises:
        CorpusError: ``root`` is not a folder or holds no audio file of the corpus.
    """
    root = Path(root)
    demographics, notes = _load_demographics(root) if root.is_dir() else ({}, [])
    unknown: set[str] = set()

    def parse(path: Path) -> dict[str, Any]:
        m = _CREMAD.match(path.stem)
        if m is None:
            raise _Malformed("expected ActorID_Sentence_Emotion_Level, e.g. 1001_DFA_ANG_XX")
        actor, sentence, emotion, level = m.groups()
        for code, table, what in ((sentence, CREMAD_SENTENCES, "sentence"), (emotion, CREMAD_EMOTIONS, "emotion")):
            if code not in table:
                raise _Malformed(f"unknown {what} code {code!r}")
        if level not in _CREMAD_LEVELS:
            raise _Malformed(f"unknown level code {level!r}")
        extra = {"sentence_code": sentence, "level": level, "intensity": _CREMAD_LEVELS[level], "emotion_code": emotion}
        if demographics and actor not in demographics:
            unknown.add(actor)
        extra.update(demographics.get(actor, {}))
        return {"raw": CREMAD_EMOTIONS[emotion], "speaker": actor, "text": CREMAD_SENTENCES[sentence], "extra": extra}

    opts = _opts(allow_missing_audio, progress, check_audio, decode_audio)
    scheme = resolve_scheme(labels, "cremad6")
    corpus = _run("cremad", root, scheme, (".wav", ".flac", ".ogg", ".mp3"), parse, opts, setup_notes=notes)
    if unknown:
        corpus.report.notes.append(
            f"actor(s) {', '.join(sorted(unknown))} not in VideoDemographics.csv: demographics unknown"
        )
    return corpus


def _parse_tess(path: Path) -> dict[str, Any]:
    m = _TESS.match(path.stem)
    if m is None:
        raise _Malformed("expected OAF|YAF_<word>_<angry|disgust|fear|happy|neutral|ps|sad>")
    speaker, word, emotion = m.group(1).upper(), m.group(2), m.group(3).lower()
    return {
        "raw": TESS_EMOTIONS[emotion],
        "speaker": speaker,
        "text": f"Say the word {word}",
        "extra": {"gender": "female", "age": _TESS_AGE[speaker], "word": word, "emotion_code": emotion},
    }


def prepare_tess(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
) -> PreparedCorpus:
    """Prepare TESS from its ``OAF_<emotion>/`` and ``YAF_<emotion>/`` folders.

    Args:
        root: Corpus folder (searched recursively).
        labels: Registered label scheme name (default ``tess7``).
        allow_missing_audio: Keep files whose audio cannot be read (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each file's header so corrupt files land in ``report.bad_audio``.
        decode_audio: Decode each file completely (slow).

    Returns:
        The prepared corpus, records in sorted path order.

    Raises:
        CorpusError: ``root`` is not a folder or holds no audio file of the corpus.
    """
    opts = _opts(allow_missing_audio, progress, check_audio, decode_audio)
    return _run("tess", root, resolve_scheme(labels, "tess7"), (".wav", ".flac"), _parse_tess, opts)


def _parse_emodb(path: Path) -> dict[str, Any]:
    m = _EMODB.match(path.stem)
    if m is None:
        raise _Malformed("expected <speaker 2 digits><text code><emotion letter><version>, e.g. 03a01Fa")
    speaker, text_code, emotion, version = m.groups()
    if speaker not in EMODB_SPEAKERS:
        raise _Malformed(f"unknown speaker {speaker!r}")
    if text_code not in EMODB_TEXTS:
        raise _Malformed(f"unknown text code {text_code!r}")
    gender, age = EMODB_SPEAKERS[speaker]
    extra = {"gender": gender, "age": age, "text_code": text_code, "version": version, "emotion_code": emotion}
    return {"raw": EMODB_EMOTIONS[emotion], "speaker": speaker, "text": EMODB_TEXTS[text_code], "extra": extra}


def prepare_emodb(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    check_audio: bool = True,
    decode_audio: bool = False,
) -> PreparedCorpus:
    """Prepare the Berlin Database of Emotional Speech (EmoDB) from its ``wav/`` folder.

    Args:
        root: Corpus folder (searched recursively).
        labels: Registered label scheme name (default ``emodb7``).
        allow_missing_audio: Keep files whose audio cannot be read (with ``audio=None``).
        progress: Show a progress bar while checking audio.
        check_audio: Read each file's header so corrupt files land in ``report.bad_audio``.
        decode_audio: Decode each file completely (slow).

    Returns:
        The prepared corpus, records in sorted path order.

    Raises:
        CorpusError: ``root`` is not a folder or holds no audio file of the corpus.
    """
    opts = _opts(allow_missing_audio, progress, check_audio, decode_audio)
    return _run("emodb", root, resolve_scheme(labels, "emodb7"), (".wav", ".flac"), _parse_emodb, opts)
