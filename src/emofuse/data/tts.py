"""Offline text-to-speech with the eSpeak NG library shipped in the ``espeakng-loader`` wheel.

A small :mod:`ctypes` wrapper around ``libespeak-ng`` (the C API of ``speak_lib.h``): no ``espeak-ng``
binary, no apt package and no network are needed, only ``pip install 'emofuse[synth]'``. The library
runs in synchronous mode; samples arrive through the synthesis callback as 16-bit integers at the
engine's native rate (22,050 Hz) and are resampled to 16 kHz with ``soxr``.

**Determinism.** eSpeak NG's wave generator keeps state between utterances (pitch flutter phase,
automatic gain, echo buffer, ``rand()`` for breathy voices), so the same call can give different
samples depending on what was spoken before. To make the output a function of the arguments only,
emofuse loads a *private copy* of the library (so it never shares state with another user of
``libespeak-ng`` in the process, e.g. a phonemizer) and, with ``reset=True`` (the default), reloads
that copy before each utterance and reseeds both eSpeak's and libc's random generators. A reload
costs about 3 ms. eSpeak NG is a C singleton, so calls are serialised with a lock.

Example:
    >>> from emofuse.data.tts import synthesize
    >>> wav = synthesize("Hello there.", voice="en-us+f3", rate=160, pitch=60)
    >>> wav.dtype, wav.ndim, 0.3 < len(wav) / 16000 < 3.0
    (dtype('float32'), 1, True)
    >>> bool((synthesize("Hello there.", voice="en-us+f3", rate=160, pitch=60) == wav).all())
    True
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from emofuse.data.audio import SAMPLE_RATE
from emofuse.utils.optional import require

__all__ = ["EspeakError", "Prosody", "espeak_sample_rate", "synthesize", "voice_available"]

# speak_lib.h: espeak_AUDIO_OUTPUT, espeak_POSITION_TYPE, espeak_PARAMETER and flags.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when the data is broken
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EE_OK = 0
_RAND_SEED = 12345

# int callback(short* wav, int numsamples, espeak_EVENT* events); return 0 to continue, 1 to abort.
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """The eSpeak NG library failed to load or initialise, does not know a voice, or failed to synthesise."""


@dataclass(frozen=True)
class Prosody:
    """eSpeak NG prosody parameters (the ``espeak_SetParameter`` scales).

    Attributes:
        rate: Speaking rate in words per minute (80-450; eSpeak's default is 175).
        volume: Amplitude (0-200; default 100).
        pitch: Base pitch (0-100; default 50).
        range: Pitch range, i.e. how much the intonation moves (0-100; default 50, 0 is monotone).
    """

    rate: int = 175
    volume: int = 100
    pitch: int = 50
    range: int = 50

    def __post_init__(self) -> None:
        for name, lo, hi in (("rate", 80, 450), ("volume", 0, 200), ("pitch", 0, 100), ("range", 0, 100)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"prosody {name} must be in [{lo}, {hi}], got {value}")


def _libc_srand() -> Any:
    if sys.platform == "win32":
        return None
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):
        return None


class _Engine:
    """A private, reloadable copy of ``libespeak-ng`` (eSpeak NG is a singleton in C)."""

    def __init__(self) -> None:
        loader = require("espeakng_loader", extra="synth", purpose="offline text-to-speech (the synthetic corpus)")
        try:
            self._source = Path(loader.get_library_path())
            self._data_path = os.fsencode(loader.get_data_path())
        except RuntimeError as e:
            raise EspeakError(f"espeakng-loader is installed but broken: {e}") from e
        if not self._source.is_file():
            raise EspeakError(f"espeakng-loader is installed but its library is missing: {self._source}")
        self._copy: Path | None = None
        self._srand = _libc_srand()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        self.lib: Any = None
        self.sample_rate = 0
        self._voice: str | None = None
        self._load()

    def _private_copy(self) -> Path:
        # A copy has its own inode, so the dynamic loader maps it separately from any other user of
        # libespeak-ng in this process, and unloading it really resets its static state.
        if self._copy is None or not self._copy.is_file():
            folder = Path(tempfile.mkdtemp(prefix="emofuse-espeak-"))
            atexit.register(shutil.rmtree, folder, True)
            self._copy = folder / self._source.name
            shutil.copy2(self._source, self._copy)
        return self._copy

    def _load(self) -> None:
        path = self._private_copy()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise EspeakError(f"cannot load the eSpeak NG library {self._source}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size in bytes, terminator included
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position (0: none)
            ctypes.c_uint,  # flags
            ctypes.POINTER(ctypes.c_uint),  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)  # espeak-ng >= 1.52
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            _unload(lib)
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data path {self._data_path!r}")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib = lib
        self.sample_rate = int(rate)
        self._voice = None
        self.pristine = True  # nothing spoken or set since the library was loaded

    def reset(self) -> None:
        """Unload and reload the library so that no state carries over from earlier utterances."""
        if self.lib is not None:
            self.lib.espeak_Terminate()
            _unload(self.lib)
            self.lib = None
        self._load()

    def _collect(self, wav: Any, numsamples: int, events: Any) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        self.pristine = False
        status = self.lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            self._voice = None
            raise EspeakError(
                f"eSpeak NG has no voice {voice!r} (status {status}); use language[+variant], "
                "e.g. 'en-us', 'en+f2', 'en-gb-scotland+m3'"
            )
        self._voice = voice

    def synth(self, text: str, voice: str, prosody: Prosody) -> np.ndarray:
        self.set_voice(voice)
        self.pristine = False
        for param, value in (
            (_RATE, prosody.rate),
            (_VOLUME, prosody.volume),
            (_PITCH, prosody.pitch),
            (_RANGE, prosody.range),
        ):
            self.lib.espeak_SetParameter(param, int(value), 0)
        if self._set_rand_seed is not None:
            self._set_rand_seed(_RAND_SEED)
        if self._srand is not None:
            self._srand(_RAND_SEED)  # breathy voices call libc rand()
        payload = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(payload, len(payload))
        self._chunks = []
        status = self.lib.espeak_Synth(buf, len(payload), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        self.lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status} for text {text[:60]!r}")
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)


def _unload(lib: Any) -> None:
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def espeak_sample_rate() -> int:
    """Native output rate of the eSpeak NG library in Hz (loads the library on first use).

    Raises:
        MissingDependencyError: ``espeakng-loader`` is not installed (``pip install 'emofuse[synth]'``).
        EspeakError: The library could not be loaded or initialised.
    """
    with _LOCK:
        return _engine().sample_rate


def voice_available(voice: str) -> bool:
    """True when eSpeak NG accepts ``voice`` (``language[+variant]``, e.g. ``"en+m3"``).

    Raises:
        MissingDependencyError: ``espeakng-loader`` is not installed (``pip install 'emofuse[synth]'``).
    """
    with _LOCK:
        try:
            _engine().set_voice(voice)
        except EspeakError:
            return False
    return True


def synthesize(
    text: str,
    voice: str = "en-us",
    *,
    rate: int = 175,
    volume: int = 100,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int | None = SAMPLE_RATE,
    reset: bool = True,
) -> np.ndarray:
    """Speak ``text`` with eSpeak NG and return the waveform.

    Args:
        text: Text to speak (UTF-8 plain text, no SSML).
        voice: ``language[+variant]``, e.g. ``"en-us"``, ``"en+f2"``, ``"en-us+m3"``.
        rate: Words per minute (80-450).
        volume: Amplitude (0-200, eSpeak's default 100). Loud settings are limited by eSpeak's
            automatic gain control, so the peak stays below full scale.
        pitch: Base pitch (0-100, default 50).
        pitch_range: Pitch range (0-100, default 50).
        sample_rate: Output rate in Hz; ``None`` keeps the engine's native rate (see
            :func:`espeak_sample_rate`).
        reset: Reload the engine first, so that the samples depend only on the arguments
            (deterministic); ``False`` saves about 3 ms per call.

    Returns:
        Mono float32 waveform, shape ``(num_samples,)``, clipped to [-1, 1].

    Raises:
        MissingDependencyError: ``espeakng-loader`` is not installed (``pip install 'emofuse[synth]'``).
        EspeakError: Unknown voice, or the library failed.
        ValueError: A prosody parameter is out of range.
    """
    prosody = Prosody(rate=rate, volume=volume, pitch=pitch, range=pitch_range)
    with _LOCK:
        engine = _engine()
        if reset and not engine.pristine:
            engine.reset()
        pcm = engine.synth(text, voice, prosody)
        native = engine.sample_rate
    wav = pcm.astype(np.float32) / 32768.0  # (N,) at the native rate
    if sample_rate is not None and sample_rate != native and wav.size:
        wav = soxr.resample(wav, native, sample_rate, quality="HQ")
    return np.ascontiguousarray(np.clip(wav, -1.0, 1.0), dtype=np.float32)
