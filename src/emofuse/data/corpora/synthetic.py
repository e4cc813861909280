"""Synthetic emotional speech corpus, generated offline with eSpeak NG (the ``synth`` extra).

Emotion-bearing sentences are spoken by several eSpeak NG voices (the speakers) with emotion-dependent
prosody (specs/offline-resources.md, strategy (b)), then given seeded noise and a small gain change.
The corpus is the embedded default that makes the quickstart and the tests run anywhere: ~200
utterances in a few seconds on a CPU, byte-identical for a given seed.

**What carries the emotion.** The *text* uses emotion words (small hand-written lists in the spirit of
the NRC lexicon: ``delighted``, ``heartbroken``, ``furious``, ...) in shared and emotion-specific
templates; neutral sentences use neutral carrier words. The *speech* uses the prosody table below
(eSpeak pitch 0-100, rate in words per minute, volume 0-200, pitch range 0-100), jittered per utterance.

=========  =====  ====  ======  =====
emotion    pitch  rate  volume  range
=========  =====  ====  ======  =====
neutral    50     160   110     50
happy      75     190   170     80
sad        25     110   70      20
angry      50     210   200     70
=========  =====  ====  ======  =====

**Conflicts and the label rule.** The label is the emotion the utterance is meant to convey. For a
share ``conflict_rate`` of each class the two modalities disagree, half of them each way:

* ``conflict_type="text"``: the words belong to another emotion; the voice (prosody) carries the label;
* ``conflict_type="prosody"``: the voice uses another emotion's prosody; the words carry the label.

So neither modality alone can reach 100 % (each is wrong on about ``conflict_rate / 2`` of the data),
and jitter plus noise make the acoustic classes overlap further. These conflicts *contradict*: given
words of one emotion and prosody of another, either may carry the label, so no model can resolve them
and fusing the modalities cannot beat the better one at its best.

``conflict_mode="neutral"`` makes the disagreeing modality *uninformative* instead, as in real speech
("okay" said angrily, a furious sentence read flatly): the words of a text conflict are a neutral
sentence, the voice of a prosody conflict has neutral prosody, and only the emotional classes have
conflicts (``conflict_rate`` of each; neutral utterances are neutral in both). One modality alone cannot
tell a neutral utterance from an emotion carried by the other channel only, while both together can
(the emotional channel carries the label): the setting in which fusion should beat either modality.

Every record says what it holds in ``extra``: ``text_emotion``, ``prosody_emotion``, ``conflict``,
``conflict_type``, the voice, its gender and accent, the prosody actually used and its jitter, the SNR
and the gain.

**Continuous targets** (for the regression tasks, ``data.target: extra.<field>``), all in [-1, 1]:

* ``valence`` / ``arousal``: the label's place on Russell's circumplex (:data:`AFFECT`: neutral (0, 0),
  happy (0.8, 0.5), sad (-0.7, -0.6), angry (-0.6, 0.8)); both modalities carry it where they carry the label;
* ``vocal_arousal``: the arousal of the voice as rendered (:func:`vocal_arousal`): the mean of rate, volume
  and pitch range actually used, each mapped linearly from the prosody table's span to [-1, 1], clipped. It
  follows the jittered prosody (continuous, and the prosody emotion in a prosody conflict), so only the
  audio carries it.

Ids and file names (``spk0_007``) do not reveal the label: the utterances of a speaker are numbered
in a seeded random order.

Example:
    >>> import tempfile
    >>> prep = prepare_synthetic(tempfile.mkdtemp(), num_speakers=1, per_class=1, progress=False)
    >>> len(prep.records), prep.classes
    (4, ('neutral', 'happy', 'sad', 'angry'))
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.audio import SAMPLE_RATE, audio_info, save_wav, trim_silence
from emofuse.data.corpora._base import CorpusError, PreparedCorpus
from emofuse.data.corpora._synthetic_voices import (
    _EMOTION_TEMPLATES,
    _JITTER_SD,
    _LIMITS,
    _SHARED_TEMPLATES,
    AFFECT,
    EMOTION_WORDS,
    PROSODY,
    VOICES,
    EmotionProsody,
    Voice,
    vocal_arousal,
)
from emofuse.data.labels import LabelScheme, get_scheme, register_scheme
from emofuse.data.manifest import Utterance, validate_records
from emofuse.utils.io import atomic_write_json
from emofuse.utils.progress import track

__all__ = [
    "AFFECT",
    "CONFLICT_MODES",
    "EMOTIONS",
    "EMOTION_WORDS",
    "GENERATOR_VERSION",
    "PROSODY",
    "SYNTHETIC4",
    "VOICES",
    "EmotionProsody",
    "Voice",
    "prepare_synthetic",
    "vocal_arousal",
]

GENERATOR_VERSION = 1
CACHE_FILE = "synthetic.json"
EMOTIONS = ("neutral", "happy", "sad", "angry")
NEUTRAL = "neutral"
#: How a conflict's disagreeing modality is made (module docstring): another emotion, or neutral.
CONFLICT_MODES = ("other", "neutral")

SYNTHETIC4 = register_scheme(
    LabelScheme(
        "synthetic4",
        EMOTIONS,
        {
            **{e: e for e in EMOTIONS},
            **{"neu": "neutral", "hap": "happy", "joy": "happy", "ang": "angry", "anger": "angry", "sadness": "sad"},
        },
        "Synthetic espeak-ng corpus: neutral, happy, sad, angry (with deliberate text/prosody conflicts)",
    )
)


_HEADROOM = 0.8  # scale before the gain change so that the loudest voices do not clip
_GAIN_DB = 1.5  # gain change drawn uniformly from [-_GAIN_DB, _GAIN_DB]


@dataclass(frozen=True)
class _Params:
    seed: int
    num_speakers: int
    per_class: int
    conflict_rate: float
    noise_snr_db: tuple[float, float] | None
    conflict_mode: str = "other"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["noise_snr_db"] = list(self.noise_snr_db) if self.noise_snr_db is not None else None
        if self.conflict_mode == "other":  # the original default: generations made before the option match
            del d["conflict_mode"]
        return d


@dataclass(frozen=True)
class _Item:
    """Everything needed to render one utterance (the manifest record minus the audio path)."""

    id: str
    speaker: int
    label: str
    text: str
    text_emotion: str
    prosody_emotion: str
    conflict_type: str | None
    prosody: dict[str, int]
    jitter: dict[str, float]
    snr_db: float | None
    gain_db: float
    noise_seed: int


def _check_params(
    seed: int,
    num_speakers: int,
    per_class: int,
    conflict_rate: float,
    noise_snr_db: float | Sequence[float] | None,
    conflict_mode: str = "other",
) -> _Params:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or not 1 <= num_speakers <= len(VOICES):
        raise ValueError(
            f"num_speakers must be an integer in [1, {len(VOICES)}] (one voice each), got {num_speakers!r}"
        )
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    if not 0.0 <= float(conflict_rate) <= 1.0:
        raise ValueError(f"conflict_rate must be in [0, 1], got {conflict_rate!r}")
    if conflict_mode not in CONFLICT_MODES:
        raise ValueError(f"conflict_mode must be one of {', '.join(CONFLICT_MODES)}, got {conflict_mode!r}")
    snr: tuple[float, float] | None
    if noise_snr_db is None:
        snr = None
    elif isinstance(noise_snr_db, (int, float)):
        snr = (float(noise_snr_db), float(noise_snr_db))
    else:
        values = tuple(float(v) for v in noise_snr_db)
        if len(values) != 2 or values[0] > values[1]:
            raise ValueError(f"noise_snr_db must be a number, a (low, high) pair or None, got {noise_snr_db!r}")
        snr = (values[0], values[1])
    if snr is not None and not all(math.isfinite(v) for v in snr):
        raise ValueError(f"noise_snr_db must be finite, got {noise_snr_db!r}")
    return _Params(int(seed), num_speakers, per_class, float(conflict_rate), snr, conflict_mode)


def _jittered(base: EmotionProsody, rng: np.random.Generator) -> tuple[dict[str, int], dict[str, float]]:
    z = rng.standard_normal(4)
    raw = {
        "pitch": base.pitch + _JITTER_SD["pitch"] * z[0],
        "rate": base.rate * (1.0 + _JITTER_SD["rate"] * z[1]),
        "volume": base.volume * (1.0 + _JITTER_SD["volume"] * z[2]),
        "range": base.range + _JITTER_SD["range"] * z[3],
    }
    prosody = {k: int(np.clip(round(v), *_LIMITS[k])) for k, v in raw.items()}
    jitter = {k: float(prosody[k] - getattr(base, k)) for k in prosody}
    return prosody, jitter


def _sentence(emotion: str, rng: np.random.Generator) -> str:
    templates = _SHARED_TEMPLATES + _EMOTION_TEMPLATES[emotion]
    template = templates[int(rng.integers(len(templates)))]
    words = EMOTION_WORDS[emotion]
    return template.format(adj=rng.choice(words["adj"]), noun=rng.choice(words["noun"]))


def _plan(p: _Params) -> list[_Item]:
    """Decide every utterance (labels, conflicts, texts, prosody, noise) from the seed alone."""
    rng = np.random.default_rng([p.seed, 0])
    cells = [(s, e) for s in range(p.num_speakers) for e in EMOTIONS for _ in range(p.per_class)]
    # Conflicts: exactly round(rate * n) items of every class, alternating which modality disagrees.
    conflict: dict[int, tuple[str | None, str]] = {}
    neutral_mode = p.conflict_mode == "neutral"
    for emotion in EMOTIONS:
        if neutral_mode and emotion == NEUTRAL:
            continue  # the uninformative channel is neutral: a neutral utterance cannot disagree with it
        idx = [i for i, (_, e) in enumerate(cells) if e == emotion]
        n_conflict = int(round(p.conflict_rate * len(idx)))
        others = [NEUTRAL] if neutral_mode else [e for e in EMOTIONS if e != emotion]
        start = int(rng.integers(2))
        for k, i in enumerate(rng.permutation(idx)[:n_conflict]):
            conflict[int(i)] = (("text", "prosody")[(k + start) % 2], others[int(rng.integers(len(others)))])
    items: list[_Item] = []
    for s in range(p.num_speakers):
        idx = [i for i, (spk, _) in enumerate(cells) if spk == s]
        for j, i in enumerate(rng.permutation(idx)):
            label = cells[int(i)][1]
            kind, other = conflict.get(int(i), (None, label))
            text_emotion = other if kind == "text" else label
            prosody_emotion = other if kind == "prosody" else label
            u = np.random.default_rng([p.seed, 1, s, j])  # per-utterance stream: independent of the others
            text = _sentence(text_emotion, u)
            prosody, jitter = _jittered(PROSODY[prosody_emotion], u)
            snr = None if p.noise_snr_db is None else round(float(u.uniform(*p.noise_snr_db)), 3)
            gain = round(float(u.uniform(-_GAIN_DB, _GAIN_DB)), 3)
            items.append(
                _Item(
                    id=f"spk{s}_{j:03d}",
                    speaker=s,
                    label=label,
                    text=text,
                    text_emotion=text_emotion,
                    prosody_emotion=prosody_emotion,
                    conflict_type=kind,
                    prosody=prosody,
                    jitter=jitter,
                    snr_db=snr,
                    gain_db=gain,
                    noise_seed=int(u.integers(2**31)),
                )
            )
    return items


def _record(item: _Item, audio: str, duration: float) -> Utterance:
    voice = VOICES[item.speaker]
    speaker = f"spk{item.speaker}"
    return Utterance(
        id=item.id,
        audio=audio,
        text=item.text,
        label=item.label,
        raw_label=item.label,
        speaker=speaker,
        session=speaker,
        extra={
            "voice": voice.name,
            "gender": voice.gender,
            "accent": voice.accent,
            "text_emotion": item.text_emotion,
            "prosody_emotion": item.prosody_emotion,
            "conflict": item.conflict_type is not None,
            "conflict_type": item.conflict_type,
            "prosody": item.prosody,
            "jitter": item.jitter,
            "snr_db": item.snr_db,
            "gain_db": item.gain_db,
            "duration": round(duration, 4),
            "valence": AFFECT[item.label][0],
            "arousal": AFFECT[item.label][1],
            "vocal_arousal": vocal_arousal(item.prosody),
        },
    )


def _render(item: _Item) -> np.ndarray:
    from emofuse.data.tts import synthesize

    pr = item.prosody
    wav = synthesize(
        item.text,
        VOICES[item.speaker].name,
        rate=pr["rate"],
        volume=pr["volume"],
        pitch=pr["pitch"],
        pitch_range=pr["range"],
        sample_rate=SAMPLE_RATE,
    ).astype(np.float64)  # (N,)
    wav *= _HEADROOM * 10.0 ** (item.gain_db / 20.0)
    if item.snr_db is not None and wav.size:
        active = trim_silence(wav.astype(np.float32), SAMPLE_RATE, top_db=40.0)
        power = float(np.mean(active.astype(np.float64) ** 2)) if active.size else 0.0
        if power > 0:
            noise = np.random.default_rng(item.noise_seed).standard_normal(wav.size)
            wav += noise * math.sqrt(power / 10.0 ** (item.snr_db / 10.0))
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


def _write_wav_atomic(path: Path, wav: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.wav")
    os.close(fd)
    try:
        save_wav(tmp, wav, SAMPLE_RATE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _describe_difference(old: dict[str, Any] | None, new: _Params) -> str:
    if old is None:
        return "it is unreadable"
    if old.get("version") != GENERATOR_VERSION:
        return f"it was made by generator version {old.get('version')!r} (this is version {GENERATOR_VERSION})"
    params = old.get("params") or {}
    diffs = [f"{k}: {params.get(k)!r} -> {v!r}" for k, v in new.to_json().items() if params.get(k) != v]
    return "it was generated with different parameters (" + ", ".join(diffs) + ")"


def _remove_listed_wavs(root: Path, cache: dict[str, Any] | None) -> None:
    # With overwrite=True, delete only the wavs a previous generation listed, never anything else.
    wav_dir = (root / "wav").resolve()
    for rec in (cache or {}).get("records", []):
        audio = rec.get("audio") if isinstance(rec, dict) else None
        if not isinstance(audio, str):
            continue
        p = (root / audio).resolve()
        if p.suffix == ".wav" and wav_dir in p.parents:
            p.unlink(missing_ok=True)


def _payload(p: _Params, records: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    return {
        "version": GENERATOR_VERSION,
        "generator": "emofuse.data.corpora.synthetic",
        "complete": complete,
        "sample_rate": SAMPLE_RATE,
        "params": p.to_json(),
        "voices": [asdict(v) for v in VOICES[: p.num_speakers]],
        "prosody": {e: asdict(v) for e, v in PROSODY.items()},
        "records": records,
    }


def _generate(root: Path, p: _Params, progress: bool, resume: bool) -> tuple[list[Utterance], int]:
    """Synthesise the plan's wavs (with ``resume``, only the missing ones); return records and count made."""
    items = _plan(p)
    atomic_write_json(root / CACHE_FILE, _payload(p, [], complete=False))
    records: list[Utterance] = []
    made = 0
    for item in track(items, "synthesising speech", disable=not progress):
        rel = f"wav/spk{item.speaker}/{item.id}.wav"
        path = root / rel
        if resume and path.is_file():  # written atomically by an earlier call with the same parameters
            duration = float(audio_info(path)["duration"])
        else:
            wav = _render(item)
            _write_wav_atomic(path, wav)
            duration = len(wav) / SAMPLE_RATE
            made += 1
        records.append(_record(item, rel, duration))
    atomic_write_json(root / CACHE_FILE, _payload(p, [r.model_dump() for r in records], complete=True))
    return records, made


def prepare_synthetic(
    root: str | Path,
    labels: str | None = None,
    allow_missing_audio: bool = False,
    progress: bool = True,
    *,
    seed: int = 0,
    num_speakers: int = 4,
    per_class: int = 12,
    conflict_rate: float = 0.2,
    noise_snr_db: float | tuple[float, float] | None = (15.0, 35.0),
    conflict_mode: str = "other",
    overwrite: bool = False,
) -> PreparedCorpus:
    """Generate (or reload) the synthetic corpus in ``root`` and return its records.

    Writes ``root/wav/spk<i>/<id>.wav`` (16 kHz mono PCM16) and ``root/synthetic.json`` (generator
    version, parameters and records). A second call with the same parameters finds every wav and
    returns at once without synthesising; missing wavs are re-made (each utterance depends only on
    the seed, so they come out identical). The same seed gives byte-identical wavs and records.

    Args:
        root: Output folder (created). It must be empty, or hold an earlier generation.
        labels: Label scheme (default ``synthetic4``); raw labels it does not map are dropped and counted.
        allow_missing_audio: Keep records whose wav is missing instead of raising (cannot normally
            happen, since missing wavs are re-made).
        progress: Show a progress bar while synthesising.
        seed: Random seed for texts, conflicts, prosody jitter, noise, gain and utterance order.
        num_speakers: Number of speakers, one eSpeak voice each (1-8, see :data:`VOICES`).
        per_class: Utterances per speaker and class (default 4 x 4 x 12 = 192 utterances).
        conflict_rate: Share of each class whose text and prosody disagree (half each way; see the
            module docstring for the label rule).
        noise_snr_db: White-noise SNR in dB relative to the active speech: a number, a ``(low, high)``
            range drawn per utterance, or ``None`` for no noise.
        conflict_mode: ``other`` (a conflict uses another emotion's words or prosody: contradictory) or
            ``neutral`` (the disagreeing modality is neutral: uninformative; emotional classes only). See
            the module docstring.
        overwrite: Regenerate in a folder that holds a generation with other parameters (its listed
            wavs are deleted) or other files (left alone). Without it such a folder is an error.

    Returns:
        A :class:`PreparedCorpus` named ``synthetic`` with absolute audio paths.

    Raises:
        FileExistsError: ``root`` holds other files or another generation, and ``overwrite`` is False.
        ValueError: A parameter is out of range, or ``labels`` is not a known scheme.
        MissingDependencyError: ``espeakng-loader`` is not installed (``pip install 'emofuse[synth]'``).
        CorpusError: A wav is missing after generation and ``allow_missing_audio`` is False.

    Example:
        >>> import tempfile
        >>> prep = prepare_synthetic(tempfile.mkdtemp(), num_speakers=2, per_class=2, progress=False)
        >>> prep.label_counts()
        {'neutral': 4, 'happy': 4, 'sad': 4, 'angry': 4}
        >>> sorted({r.speaker for r in prep.records}), prep.records[0].extra["voice"]
        (['spk0', 'spk1'], 'en-us+f3')
    """
    params = _check_params(seed, num_speakers, per_class, conflict_rate, noise_snr_db, conflict_mode)
    scheme = get_scheme(labels or SYNTHETIC4.name)
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder; give a folder to generate the corpus into")
    root = root.resolve()
    cache_path = root / CACHE_FILE
    notes: list[str] = []
    records: list[Utterance] | None = None
    resume = False
    if cache_path.is_file():
        cache = _read_cache(cache_path)
        same = (
            cache is not None and cache.get("version") == GENERATOR_VERSION and cache.get("params") == params.to_json()
        )
        if same and cache is not None and cache.get("complete"):
            try:
                cached = [Utterance.model_validate(r) for r in cache.get("records", [])]
            except ValueError:
                cached = []
            if cached and all((root / r.audio).is_file() for r in cached if r.audio):
                records = cached
                notes.append(f"loaded {len(records)} utterances from {cache_path} (nothing synthesised)")
        if same:
            resume = True
        else:
            if not overwrite:
                raise FileExistsError(
                    f"{root} holds a synthetic corpus, but {_describe_difference(cache, params)}; "
                    "pass overwrite=True (CLI: --option overwrite=true) to regenerate it, or choose another folder"
                )
            _remove_listed_wavs(root, cache)
            notes.append(f"overwrote an earlier generation in {root}")
    elif root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{root} is not empty and holds no {CACHE_FILE}; refusing to generate into it "
            "(choose an empty or new folder, or pass overwrite=True)"
        )
    if records is None:
        root.mkdir(parents=True, exist_ok=True)
        records, made = _generate(root, params, progress, resume)
        notes.append(f"synthesised {made} of {len(records)} utterances into {root}")

    absolute: list[Utterance] = []
    dropped: Counter[str] = Counter()
    for r in records:
        label = scheme.map(r.raw_label)
        if label is None:
            dropped[str(r.raw_label)] += 1
            continue
        audio = str(root / r.audio) if r.audio else None
        if audio is not None and allow_missing_audio and not Path(audio).is_file():
            audio = None
        absolute.append(r.model_copy(update={"audio": audio, "label": label}))
    report = validate_records(absolute, labels=scheme.classes)
    report.notes.extend(notes)
    if report.missing_audio and not allow_missing_audio:
        raise CorpusError(
            f"{root}: {len(report.missing_audio)} wav(s) missing after generation, e.g. {report.missing_audio[0]}"
        )
    return PreparedCorpus(
        name="synthetic",
        records=absolute,
        classes=scheme.classes,
        scheme=scheme.name,
        report=report,
        dropped=dict(dropped),
    )
