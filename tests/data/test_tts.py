import sys

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from emofuse.data import tts  # noqa: E402
from emofuse.data.tts import EspeakError, Prosody, espeak_sample_rate, synthesize, voice_available  # noqa: E402
from emofuse.utils.optional import MissingDependencyError  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog."


def _rms(w):
    return float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))


def test_native_rate_and_output_format():
    assert espeak_sample_rate() == 22050
    wav = synthesize(TEXT, "en-us")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 1.0 < len(wav) / 16000 < 6.0
    assert np.abs(wav).max() <= 1.0 and _rms(wav) > 0.01
    native = synthesize(TEXT, "en-us", sample_rate=None)
    assert abs(len(native) / 22050 - len(wav) / 16000) < 0.01


def test_deterministic_whatever_was_spoken_before():
    first = synthesize(TEXT, "en-us+f3", rate=150, pitch=70)
    synthesize("Something else entirely, spoken fast.", "en+m3", rate=300, volume=180)
    again = synthesize(TEXT, "en-us+f3", rate=150, pitch=70)
    assert np.array_equal(first, again)


def test_prosody_parameters_take_effect():
    slow = synthesize(TEXT, "en-us", rate=100)
    fast = synthesize(TEXT, "en-us", rate=250)
    assert len(slow) > 1.7 * len(fast)
    quiet = synthesize(TEXT, "en-us", volume=50)
    loud = synthesize(TEXT, "en-us", volume=150)
    assert _rms(loud) > 2.0 * _rms(quiet)


@pytest.mark.parametrize("voice", ["en-us", "en+f2", "en-us+m3", "en-gb-scotland+f4", "en-029+f5"])
def test_voices_exist(voice):
    assert voice_available(voice)


def test_unknown_voice_is_a_clear_error():
    assert not voice_available("xx-nonexistent")
    with pytest.raises(EspeakError, match="no voice 'xx-nonexistent'"):
        synthesize("hello", "xx-nonexistent")


def test_prosody_range_checked():
    with pytest.raises(ValueError, match="rate"):
        Prosody(rate=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize("hello", pitch=150)


def test_missing_loader_names_the_synth_extra(monkeypatch):
    monkeypatch.setattr(tts, "_ENGINE", None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"emofuse\[synth\]"):
        synthesize("hello")
