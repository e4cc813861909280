"""IEMOCAP: the Interactive Emotional Dyadic Motion Capture database.

C. Busso, M. Bulut, C.-C. Lee, A. Kazemzadeh, E. Mower, S. Kim, J. N. Chang, S. Lee and S. S. Narayanan,
"IEMOCAP: Interactive emotional dyadic motion capture database", *Language Resources and Evaluation*
42(4):335-359, 2008. About 12 h of improvised and scripted dyadic sessions by 10 actors (5 sessions, one
female and one male actor each), segmented into utterances with categorical and [V, A, D] labels.

Expected layout (the release as distributed, ``IEMOCAP_full_release``; ``root`` may also be its parent)::

    ROOT/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt                      consensus label + [V, A, D]
    ROOT/Session{1..5}/dialog/EmoEvaluation/Categorical/<dialog>_e<N>_cat.txt one file per evaluator
    ROOT/Session{1..5}/dialog/transcriptions/<dialog>.txt                     "<utt> [start-end]: text"
    ROOT/Session{1..5}/sentences/wav/<dialog>/<utt>.wav                       one wav per utterance

Label schemes (class id = position):

* ``iemocap4`` (default): neutral, happy, sad, angry; excited merged into happy (5,531 utterances).
* ``iemocap4-cmd``: the CMD vote rule (``specs/cmd.md`` §4.2). Each evaluator's *first listed* category in
  the ``Categorical`` files is one vote; an utterance is kept when exactly one of Neutral state, Happiness,
  Sadness, Anger gets at least 2 votes. ``iemocap4-cmd-exc`` also counts Excited as Happiness
  (``merge_excited``). Votes are kept in ``extra["votes"]``; :attr:`PreparedCorpus.dropped` is keyed by the
  vote outcome (``tie``, ``no-majority``, ``no-votes`` or the winning non-target category, e.g.
  ``Frustration``). Only ``*_e<N>_cat.txt`` files count (actor self-evaluations are ignored).
* ``iemocap6``: neutral, happy, sad, angry, excited, frustrated.
* ``iemocap7`` (Rajan's thesis, Ch. 4; 7,487 utterances): angry, excited, happy, sad, frustrated, surprise,
  neutral.

Records: ``speaker`` is session + speaking actor's gender (``Ses01F_impro01_M003`` → ``Ses01M``),
``session`` the folder (``Session1``), ``dialogue`` the dialog name and ``turn`` the 0-based rank by start time
among all utterances of the dialog (also the unlabelled ones). ``start``/``end`` are ``None`` (every
utterance has its own wav); ``extra`` holds ``gender``, ``mode`` (improvised/scripted), ``valence``,
``activation``, ``dominance``, ``dialog_start``, ``dialog_end`` (and ``votes`` for the CMD schemes).

A partial release (e.g. ``Session3`` absent) is prepared with a note naming the missing sessions; a root
without any ``Session*/dialog/EmoEvaluation`` raises :class:`CorpusError`.

Visual features (``video_features``, CLI ``--option video_features=DIR``): pre-extracted per-utterance arrays
(e.g. ResNet-101 face features at 3 Hz, ``(frames, 2048)``, the thesis' Ch. 4 input) named ``<utt>.npy`` (or
``.npz`` / ``.safetensors`` / ``.h5``) anywhere under ``DIR``: a folder of its own, the ``wav`` folders themselves
(files next to the wavs) or, for a relative name found in no other way, ``Session*/sentences/<DIR>/`` (a folder
parallel to ``sentences/wav``). Each utterance with a file gets ``features["video"]``; one without has the
modality absent (no key; masked, never zeros) and is counted in the report's notes. ``video_required=True``
drops utterances without a file or with a 0-frame ``.npy`` instead (the thesis code deletes samples with
``video_seqN == 0``), also counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.labels import LabelScheme, get_scheme, register_scheme
from emofuse.data.manifest import Utterance, validate_records
from emofuse.utils.progress import track

__all__ = ["DEFAULT_SCHEME", "SCHEMES", "cmd_vote", "prepare_iemocap"]

DEFAULT_SCHEME = "iemocap4"
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
_LAYOUT = "ROOT/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt and ROOT/Session{1..5}/sentences/wav/<dialog>/<utt>.wav"

_CMD4 = {"neutral state": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry"}
_CMD_SCHEME = register_scheme(
    LabelScheme(
        "iemocap4-cmd",
        ("neutral", "happy", "sad", "angry"),
        _CMD4,
        "IEMOCAP 4-class by CMD's vote rule: exactly one of neutral/happiness/sadness/anger has >= 2 first votes",
    )
)
_CMD_EXC_SCHEME = register_scheme(
    LabelScheme(
        "iemocap4-cmd-exc",
        ("neutral", "happy", "sad", "angry"),
        {**_CMD4, "excited": "happy"},
        "IEMOCAP 4-class by CMD's vote rule, Excited votes counted as Happiness",
    )
)
register_scheme(
    LabelScheme(
        "iemocap6",
        ("neutral", "happy", "sad", "angry", "excited", "frustrated"),
        {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited", "fru": "frustrated"},
        "IEMOCAP 6-class: neutral, happy, sad, angry, excited, frustrated (no merge)",
    )
)
register_scheme(
    LabelScheme(
        "iemocap7",
        ("angry", "excited", "happy", "sad", "frustrated", "surprise", "neutral"),
        {
            "ang": "angry",
            "exc": "excited",
            "hap": "happy",
            "sad": "sad",
            "fru": "frustrated",
            "sur": "surprise",
            "neu": "neutral",
        },
        "IEMOCAP 7-class of Rajan's thesis (fear, disgust, other removed; 7,487 utterances)",
    )
)
SCHEMES = ("iemocap4", "iemocap4-cmd", "iemocap4-cmd-exc", "iemocap6", "iemocap7")
_VOTE_SCHEMES = {"iemocap4-cmd": False, "iemocap4-cmd-exc": True}  # name -> merge_excited

_UTT_ID = re.compile(r"^(Ses\d{2})[FM]_(.+)_([FM])\d{3}$")
_EVAL_LINE = re.compile(
    r"^\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)\s+"
    r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]\s*$"
)
_EVALUATOR_LINE = re.compile(r"^[A-Z]+-[A-Z]+\d*\s*:")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s*:\s?(.*)$")
_CAT_FILE = re.compile(r"^(.+)_e\d+_cat\.txt$")


@dataclass(frozen=True)
class _Turn:
    id: str
    start: float
    end: float
    code: str
    vad: tuple[float, float, float]


def _malformed(path: Path, lineno: int, what: str, line: str) -> str:
    return f"{path}:{lineno}: malformed {what} line: {line.strip()!r}"


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _parse_emo_eval(path: Path, notes: list[str]) -> list[_Turn]:
    """Utterance lines of one ``EmoEvaluation/<dialog>.txt`` (header and evaluator lines are skipped)."""
    turns: list[_Turn] = []
    for lineno, line in enumerate(_read_lines(path), 1):
        s = line.strip()
        if not s or s.startswith("%") or _EVALUATOR_LINE.match(s):
            continue
        m = _EVAL_LINE.match(s)
        if m is None or not _UTT_ID.match(m.group(3)):
            notes.append(_malformed(path, lineno, "label", line))
            continue
        try:
            start, end = float(m.group(1)), float(m.group(2))
            vad = (float(m.group(5)), float(m.group(6)), float(m.group(7)))
        except ValueError:
            notes.append(_malformed(path, lineno, "label", line))
            continue
        turns.append(_Turn(m.group(3), start, end, m.group(4).lower(), vad))
    return turns


def _parse_transcripts(path: Path, notes: list[str]) -> dict[str, str]:
    """Utterance id → text; noise lines (ids that are not utterance ids, e.g. ``MXX``) are skipped."""
    texts: dict[str, str] = {}
    for lineno, line in enumerate(_read_lines(path), 1):
        s = line.strip()
        if not s or not _UTT_ID.match(s.split()[0].rstrip(":")):
            continue
        m = _TRANSCRIPT_LINE.match(s)
        if m is None:
            notes.append(_malformed(path, lineno, "transcript", line))
            continue
        texts[m.group(1)] = m.group(2).strip()
    return texts


def _parse_categorical(folder: Path, notes: list[str]) -> tuple[dict[str, Counter[str]], int]:
    """First-listed category of every evaluator line → votes per utterance; also the number of ignored files."""
    votes: dict[str, Counter[str]] = {}
    ignored = 0
    for path in sorted(folder.glob("*.txt")):
        if not _CAT_FILE.match(path.name) or path.name.startswith("."):
            ignored += 1
            continue
        for lineno, line in enumerate(_read_lines(path), 1):
            if not line.strip():
                continue
            utt, sep, rest = line.partition(":")
            utt = utt.strip()
            first = next((c.strip() for c in rest.split("(")[0].split(";") if c.strip()), "")
            first = first.split(":")[0].strip()  # "Other:curious" -> "Other"
            if not sep or not _UTT_ID.match(utt) or not first:
                notes.append(_malformed(path, lineno, "categorical", line))
                continue
            votes.setdefault(utt, Counter())[first] += 1
    return votes, ignored


def cmd_vote(votes: Mapping[str, int], merge_excited: bool = False) -> tuple[str | None, str]:
    """CMD's IEMOCAP rule: keep when exactly one of neutral/happiness/sadness/anger has >= 2 votes.

    Args:
        votes: Category as written in the ``Categorical`` files (``"Neutral state"``, ``"Happiness"``, ...)
            → number of evaluators who listed it first.
        merge_excited: Count ``Excited`` votes as ``Happiness``.

    Returns:
        ``(class, outcome)``: the class (``neutral``/``happy``/``sad``/``angry``) and the same name as outcome
        when kept; otherwise ``None`` and why: ``tie`` (several target classes have >= 2 votes),
        ``no-votes``, the non-target category that has >= 2 votes (e.g. ``Frustration``), or ``no-majority``.

    Example:
        >>> cmd_vote({"Happiness": 1, "Excited": 1, "Anger": 1})
        (None, 'no-majority')
        >>> cmd_vote({"Happiness": 1, "Excited": 1, "Anger": 1}, merge_excited=True)
        ('happy', 'happy')
    """
    scheme = _CMD_EXC_SCHEME if merge_excited else _CMD_SCHEME
    per_class: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for category, n in votes.items():
        cls = scheme.map(category)
        if cls is None:
            others[category] += n
        else:
            per_class[cls] += n
    winners = [c for c in scheme.classes if per_class[c] >= 2]
    if len(winners) == 1:
        return winners[0], winners[0]
    if winners:
        return None, "tie"
    if not sum(votes.values()):
        return None, "no-votes"
    strong = sorted(c for c, n in others.items() if n >= 2)
    return None, strong[0] if len(strong) == 1 else "no-majority"


def _find_sessions(root: Path, notes: list[str]) -> list[Path]:
    def sessions_in(folder: Path) -> list[Path]:
        found = [p for p in folder.glob("Session*") if p.is_dir() and re.fullmatch(r"Session\d+", p.name)]
        return sorted(found, key=lambda p: int(p.name[7:]))

    sessions = sessions_in(root)
    if not sessions and (root / "IEMOCAP_full_release").is_dir():
        sessions = sessions_in(root / "IEMOCAP_full_release")
    usable = []
    for s in sessions:
        if (s / "dialog" / "EmoEvaluation").is_dir():
            usable.append(s)
        else:
            notes.append(f"{s}: no dialog/EmoEvaluation folder; session skipped")
    if not usable:
        raise CorpusError(f"{root}: no IEMOCAP session found; expected {_LAYOUT}")
    missing = [n for n in SESSIONS if n not in {s.name for s in usable}]
    if missing:
        notes.append(f"{root}: sessions missing or unusable: {', '.join(missing)}; prepared the others")
    return usable


_FEATURE_SUFFIXES = (".npy", ".npz", ".safetensors", ".h5", ".hdf5")


def _zero_frames(path: Path) -> bool:
    """True for a ``.npy`` whose array has no frames (other formats are not opened here)."""
    if path.suffix.lower() != ".npy":
        return False
    import numpy as np

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape[:1] == (0,)
    except (OSError, ValueError):
        return False  # unreadable: left to the feature reader, which names the file


def _index_video(folder: str | Path, sessions: list[Path], notes: list[str]) -> dict[str, Path]:
    """Utterance id → visual feature file under ``folder`` (or ``Session*/sentences/<folder>``)."""
    given = Path(folder).expanduser()
    if given.is_dir():
        roots = [given.resolve()]
    else:
        roots = [s / "sentences" / given for s in sessions if not given.is_absolute()]
        roots = [r for r in roots if r.is_dir()]
        if not roots:
            raise CorpusError(
                f"video_features: {given} is not a folder (nor Session*/sentences/{given}); expected "
                "<utt>.npy feature files under it"
            )
    index: dict[str, Path] = {}
    duplicates = 0
    for r in roots:
        for p in sorted(r.rglob("*"), key=lambda q: (len(q.parts), str(q))):
            if p.suffix.lower() in _FEATURE_SUFFIXES and _UTT_ID.match(p.stem) and p.is_file():
                if p.stem in index:
                    duplicates += 1
                    continue
                index[p.stem] = p
    if not index:
        raise CorpusError(
            f"video_features: no <utt>.npy / .npz / .safetensors / .h5 file under {', '.join(map(str, roots))}"
        )
    if duplicates:
        notes.append(f"video features: {duplicates} duplicate file name(s) ignored (kept the shallowest)")
    return index


def prepare_iemocap(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    video_features: str | Path | None = None,
    video_required: bool = False,
) -> PreparedCorpus:
    """Build the IEMOCAP manifest from the release in its original layout.

    Args:
        root: ``IEMOCAP_full_release`` (the folder holding ``Session1`` ... ``Session5``) or its parent.
        labels: Label scheme name (one of :data:`SCHEMES`; default ``iemocap4``).
        allow_missing_audio: Keep utterances whose wav is missing, with ``audio=None`` (they are reported
            in ``report.missing_audio`` either way; without this flag they are dropped).
        progress: Show a progress bar.
        video_features: Folder of per-utterance visual feature files (module docstring); ``None``: no video.
        video_required: Drop utterances without visual features (or with a 0-frame ``.npy``) instead of
            keeping them with the modality absent.

    Returns:
        The prepared corpus: records in session / dialog / turn order, the scheme's classes, the report
        (validation findings plus notes on malformed lines and missing sessions or files) and the
        number of utterances dropped per raw label (per vote outcome for the CMD schemes).

    Raises:
        CorpusError: ``root`` holds no ``Session*/dialog/EmoEvaluation`` folder, or ``video_features`` is
            neither a folder nor ``Session*/sentences/<name>``.
        ValueError: ``labels`` is not an IEMOCAP scheme.
    """
    root = Path(root).expanduser().resolve()
    scheme = get_scheme(labels or DEFAULT_SCHEME)
    if scheme.name not in SCHEMES:
        raise ValueError(f"label scheme {scheme.name!r} does not apply to IEMOCAP; choose one of {', '.join(SCHEMES)}")
    vote_rule = scheme.name in _VOTE_SCHEMES
    notes: list[str] = []
    sessions = _find_sessions(root, notes)
    video = _index_video(video_features, sessions, notes) if video_features is not None else None
    if video_required and video is None:
        raise ValueError("video_required needs video_features=DIR")
    no_video: list[str] = []

    jobs: list[tuple[Path, Path]] = []
    for session in sessions:
        eval_dir = session / "dialog" / "EmoEvaluation"
        files = sorted(p for p in eval_dir.glob("*.txt") if _UTT_ID.match(p.stem + "_F000"))
        if not files:
            notes.append(f"{eval_dir}: no <dialog>.txt label files")
        jobs.extend((session, p) for p in files)

    votes: dict[str, Counter[str]] = {}
    if vote_rule:
        for session in sessions:
            folder = session / "dialog" / "EmoEvaluation" / "Categorical"
            if not folder.is_dir():
                notes.append(f"{folder}: missing; utterances of {session.name} get no votes")
                continue
            session_votes, ignored = _parse_categorical(folder, notes)
            votes.update(session_votes)
            if ignored:
                notes.append(f"{folder}: ignored {ignored} file(s) not named <dialog>_e<N>_cat.txt")

    records: list[Utterance] = []
    dropped: Counter[str] = Counter()
    missing_audio: list[str] = []
    for session, eval_file in track(jobs, "IEMOCAP dialogs", disable=not progress):
        dialog = eval_file.stem
        turns = sorted(_parse_emo_eval(eval_file, notes), key=lambda t: (t.start, t.end, t.id))
        tfile = session / "dialog" / "transcriptions" / f"{dialog}.txt"
        if tfile.is_file():
            texts = _parse_transcripts(tfile, notes)
        else:
            texts = {}
            notes.append(f"{tfile}: transcription file missing; texts of {dialog} are empty")
        for turn_idx, t in enumerate(turns):
            extra: dict[str, object] = {}
            if vote_rule:
                utt_votes = dict(sorted(votes.get(t.id, Counter()).items()))
                label, outcome = cmd_vote(utt_votes, merge_excited=_VOTE_SCHEMES[scheme.name])
                extra["votes"] = utt_votes
            else:
                label, outcome = scheme.map(t.code), t.code
            if label is None:
                dropped[outcome] += 1
                continue
            wav = session / "sentences" / "wav" / dialog / f"{t.id}.wav"
            if not wav.is_file():
                missing_audio.append(t.id)
                if not allow_missing_audio:
                    continue
            m = _UTT_ID.match(t.id)
            assert m is not None  # checked while parsing
            gender = m.group(3)
            extra = {
                "gender": gender,
                "mode": "improvised" if "impro" in dialog else "scripted",
                "valence": t.vad[0],
                "activation": t.vad[1],
                "dominance": t.vad[2],
                "dialog_start": t.start,
                "dialog_end": t.end,
                **extra,
            }
            video_file = video.get(t.id) if video is not None else None
            if video_required and (video_file is None or _zero_frames(video_file)):
                no_video.append(t.id)
                continue
            records.append(
                Utterance(
                    id=t.id,
                    audio=str(wav) if wav.is_file() else None,
                    text=texts.get(t.id, ""),
                    label=label,
                    raw_label=t.code,
                    speaker=m.group(1) + gender,
                    session=session.name,
                    dialogue=dialog,
                    turn=turn_idx,
                    features={"video": str(video_file)} if video_file is not None else {},
                    extra=extra,
                )
            )

    report = validate_records(records, labels=scheme.classes)
    report.missing_audio = list(dict.fromkeys(missing_audio + report.missing_audio))
    if missing_audio and not allow_missing_audio:
        notes.append(f"dropped {len(missing_audio)} utterance(s) without a wav (allow_missing_audio=False)")
    if dropped:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(dropped.items()))
        what = "vote outcome" if vote_rule else "raw label"
        notes.append(f"{scheme.name}: dropped {sum(dropped.values())} utterance(s) by {what}: {kinds}")
    if no_video:
        shown = ", ".join(no_video[:5]) + (" ..." if len(no_video) > 5 else "")
        notes.append(f"video_required: dropped {len(no_video)} utterance(s) without video frames: {shown}")
    if video is not None:
        without = [r.id for r in records if "video" not in r.features]
        shown = ", ".join(without[:5]) + (" ..." if len(without) > 5 else "")
        notes.append(
            f"video features: {len(records) - len(without)} of {len(records)} utterance(s) have a file; "
            f"{len(without)} without (video modality absent){': ' + shown if without else ''}"
        )
    if vote_rule:
        notes.append(f"{scheme.name}: kept {len(records)} utterance(s) (CMD reports 7,487 on the full corpus)")
    report.notes += notes
    return PreparedCorpus("iemocap", records, scheme.classes, scheme.name, report, dict(sorted(dropped.items())))
