"""What the synthetic corpus says and how it sounds: espeak-ng voices, emotion prosody, affect, lexicon, frames.

The tables :mod:`emofuse.data.corpora.synthetic` draws utterances from (re-exported there): each speaker's
:class:`Voice`, each emotion's :class:`EmotionProsody` and its jitter, the valence / arousal of each emotion
(``AFFECT``), :func:`vocal_arousal` of a rendered prosody, and the emotion words and sentence frames of the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["AFFECT", "EMOTION_WORDS", "PROSODY", "VOICES", "EmotionProsody", "Voice", "vocal_arousal"]


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice acting as one speaker.

    Attributes:
        name: eSpeak voice name, ``language+variant``.
        gender: ``"female"`` or ``"male"``.
        accent: Accent of the language voice (``us``, ``gb``, ...).
    """

    name: str
    gender: str
    accent: str


# Speaker spk<i> uses VOICES[i]; the first four alternate gender and US / British English.
VOICES: tuple[Voice, ...] = (
    Voice("en-us+f3", "female", "us"),
    Voice("en+m3", "male", "gb"),
    Voice("en+f2", "female", "gb"),
    Voice("en-us+m1", "male", "us"),
    Voice("en-gb-scotland+f4", "female", "gb-scotland"),
    Voice("en-gb-x-rp+m4", "male", "gb-rp"),
    Voice("en-029+f5", "female", "caribbean"),
    Voice("en-us-nyc+m7", "male", "us-nyc"),
)


@dataclass(frozen=True)
class EmotionProsody:
    """Base eSpeak prosody of an emotion (before jitter).

    Attributes:
        pitch: Base pitch, 0-100.
        rate: Words per minute.
        volume: Amplitude, 0-200.
        range: Pitch range, 0-100.
    """

    pitch: int
    rate: int
    volume: int
    range: int


PROSODY: dict[str, EmotionProsody] = {
    "neutral": EmotionProsody(pitch=50, rate=160, volume=110, range=50),
    "happy": EmotionProsody(pitch=75, rate=190, volume=170, range=80),
    "sad": EmotionProsody(pitch=25, rate=110, volume=70, range=20),
    "angry": EmotionProsody(pitch=50, rate=210, volume=200, range=70),
}
# Per-utterance jitter (standard deviations): absolute for pitch and range, relative for rate and volume.
_JITTER_SD = {"pitch": 8.0, "range": 10.0, "rate": 0.08, "volume": 0.12}
_LIMITS = {"pitch": (0, 100), "range": (0, 100), "rate": (80, 450), "volume": (0, 200)}
#: (valence, arousal) of each emotion on Russell's circumplex, in [-1, 1]: the ``valence`` / ``arousal`` targets.
AFFECT: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.6),
    "angry": (-0.6, 0.8),
}
_AROUSAL_CUES = ("rate", "volume", "range")  # prosody parameters that rise with arousal


def vocal_arousal(prosody: Mapping[str, float]) -> float:
    """Arousal of a rendered voice: the mean of its rate, volume and pitch range, each scaled to [-1, 1].

    Each cue is mapped linearly from its span in :data:`PROSODY` (rate 110-210, volume 70-200, range 20-80)
    to [-1, 1]; the mean is clipped to [-1, 1] (jitter can leave the span) and rounded to 4 decimals.

    Args:
        prosody: The prosody actually used (``extra["prosody"]``): ``rate``, ``volume``, ``range`` (others ignored).

    Returns:
        The vocal arousal in [-1, 1].

    Raises:
        KeyError: A cue is missing.

    Example:
        >>> vocal_arousal({"pitch": 25, "rate": 110, "volume": 70, "range": 20})
        -1.0
        >>> vocal_arousal({"pitch": 50, "rate": 160, "volume": 135, "range": 50})
        0.0
    """
    zs = []
    for cue in _AROUSAL_CUES:
        values = [getattr(p, cue) for p in PROSODY.values()]
        lo, hi = min(values), max(values)
        zs.append(2.0 * (float(prosody[cue]) - lo) / (hi - lo) - 1.0)
    return round(float(np.clip(np.mean(zs), -1.0, 1.0)), 4)


# Emotion words: adjectives and nouns per emotion (NRC-lexicon-like; neutral gets neutral carriers).
EMOTION_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "neutral": {
        "adj": ("fine", "ready", "informed", "prepared", "aware", "busy", "okay", "done", "available"),
        "noun": ("meeting", "report", "schedule", "document", "package", "train", "kitchen", "window", "office"),
    },
    "happy": {
        "adj": ("happy", "delighted", "thrilled", "glad", "cheerful", "joyful", "overjoyed", "grateful", "pleased"),
        "noun": ("celebration", "party", "gift", "vacation", "wedding", "victory", "reunion", "holiday", "promotion"),
    },
    "sad": {
        "adj": ("sad", "miserable", "lonely", "heartbroken", "gloomy", "depressed", "hopeless", "unhappy", "grieving"),
        "noun": ("funeral", "loss", "farewell", "illness", "tragedy", "breakup", "failure", "divorce", "grief"),
    },
    "angry": {
        "adj": ("angry", "furious", "outraged", "livid", "enraged", "irritated", "annoyed", "hostile", "fuming"),
        "noun": ("insult", "betrayal", "lie", "injustice", "fraud", "cheating", "disrespect", "scam", "threat"),
    },
}
# Shared frames (used by every emotion, so the frame itself says nothing) and emotion-specific ones.
_SHARED_TEMPLATES = (
    "I feel {adj} about the {noun}.",
    "After the {noun} I was {adj} for the rest of the day.",
    "We talked about the {noun} and everyone was {adj}.",
    "She told me about the {noun}, and I am {adj}.",
    "The {noun} this morning left me {adj}.",
)
_EMOTION_TEMPLATES = {
    "neutral": (
        "The {noun} starts at nine o'clock on Tuesday, and I am {adj}.",
        "Please put the {noun} on the table next to the door, I am {adj} now.",
        "According to the notes, the {noun} is on the second floor and we are {adj}.",
    ),
    "happy": (
        "What a {adj} day, I love the {noun}.",
        "I am so {adj}, the {noun} was the best thing this year.",
        "Thank you for the {noun}, it makes me so {adj}.",
    ),
    "sad": (
        "I miss them so much since the {noun}, I am {adj}.",
        "Nothing matters anymore after the {noun}, I feel {adj}.",
        "I cried all night about the {noun}, I am so {adj}.",
    ),
    "angry": (
        "How dare you talk about the {noun}, I am {adj}.",
        "I hate this {noun}, it makes me {adj}.",
        "Stop lying to me about the {noun}, I am {adj}.",
    ),
}
