import av
import numpy as np
import pytest
import soundfile as sf

from emofuse.data.audio import AudioError, audio_info, load_audio, trim_silence


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("ext", "fmt"), [(".wav", "WAV"), (".flac", "FLAC"), (".ogg", "OGG")])
def test_formats_resampled_to_16k_mono(tmp_path, ext, fmt):
    stereo = np.stack([_tone(22050, 1.0), _tone(22050, 1.0, 220.0)], axis=1)
    p = tmp_path / f"a{ext}"
    sf.write(p, stereo, 22050, format=fmt)
    wav = load_audio(p)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 16000) <= 1
    # mono = channel mean: RMS of the sum of two unit-amplitude-0.5 tones / 2
    assert np.sqrt(np.mean(wav[1000:-1000] ** 2)) == pytest.approx(0.25, abs=0.02)


def _write_m4a(path, sr=16000, seconds=1.0):
    with av.open(str(path), "w", format="mp4") as c:
        st = c.add_stream("aac", rate=sr)
        st.layout = "mono"
        x = _tone(sr, seconds)[None, :]
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="mono")
        frame.sample_rate = sr
        for pkt in st.encode(frame):
            c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)


@pytest.mark.parametrize("ext", [".mp4", ".m4a"])
def test_container_decoded_with_pyav(tmp_path, ext):
    p = tmp_path / f"clip{ext}"
    _write_m4a(p)
    wav = load_audio(p)
    assert abs(len(wav) - 16000) < 2048  # AAC priming/padding
    assert np.sqrt(np.mean(wav[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), abs=0.05)


def test_segment_cutting(tmp_path):
    x = np.concatenate([np.zeros(16000), np.ones(16000) * 0.5, np.zeros(16000)]).astype(np.float32)
    p = tmp_path / "a.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    seg = load_audio(p, start=1.0, end=2.0)
    assert len(seg) == 16000 and np.allclose(seg, 0.5)
    assert len(load_audio(p, start=2.5)) == 8000
    with pytest.raises(AudioError, match=r"a.wav: no audio samples in segment"):
        load_audio(p, start=5.0, end=6.0)


def test_trim_silence():
    x = np.concatenate([np.zeros(8000), _tone(16000, 1.0), np.zeros(8000)]).astype(np.float32)
    y = trim_silence(x, 16000)
    assert 16000 <= len(y) <= 16000 + 2 * 400
    assert trim_silence(np.zeros(100, np.float32)).shape == (100,)


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (b"", "empty.wav", r"empty.wav: file is empty"),
        (b"this is not audio at all" * 10, "text.wav", r"text.wav: cannot decode audio"),
        (b"\x00" * 1000, "junk.mp4", r"junk.mp4: cannot decode audio"),
        (b"abc", "notes.txt", r"notes.txt: unsupported audio format '.txt'"),
    ],
)
def test_bad_audio_named_errors(tmp_path, content, name, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(AudioError, match=match):
        load_audio(p)


def test_zero_length_and_missing(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="zero.wav: no audio samples"):
        load_audio(p)
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        load_audio(tmp_path / "missing.wav")


def test_audio_info(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, np.zeros((8000, 2), np.float32), 8000)
    assert audio_info(p) == {"sample_rate": 8000, "channels": 2, "duration": 1.0}
    (tmp_path / "bad.wav").write_bytes(b"nope")
    with pytest.raises(AudioError, match="bad.wav"):
        audio_info(tmp_path / "bad.wav")
