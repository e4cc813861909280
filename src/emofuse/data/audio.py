"""Audio loading: any common format to mono float32 at 16 kHz.

WAV / FLAC / OGG (and MP3 where libsndfile supports it) are read with ``soundfile``; containers
(MP4, M4A, MKV, WebM, ...) and anything libsndfile cannot read are decoded with PyAV. Resampling
uses ``soxr``. torchaudio is deliberately not used (it does not load beside torch 2.13).

Example:
    >>> import numpy as np, soundfile as sf, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros(8000, dtype="float32") + 0.1, 8000)
    >>> load_audio(p).shape
    (16000,)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

__all__ = ["SAMPLE_RATE", "AudioError", "AudioWarning", "audio_info", "load_audio", "save_wav", "trim_silence"]

SAMPLE_RATE = 16_000
_SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3"}
_CONTAINER_EXTS = {".mp4", ".m4a", ".mkv", ".webm", ".mov", ".aac", ".opus", ".avi"}
SUPPORTED_EXTS = frozenset(_SOUNDFILE_EXTS | _CONTAINER_EXTS)


class AudioError(ValueError):
    """Audio that is missing, empty, corrupt or in an unsupported format. Names the file."""


class AudioWarning(UserWarning):
    """Audio that loads but is suspect (a truncated file). Names the file."""


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(bytes the WAV header promises, bytes the file holds)`` of a truncated WAV's data chunk, else ``None``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                held = size - pos - 8
                if declared in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return None
                return (declared, held) if declared > held else None
            pos += 8 + declared + (declared & 1)
    return None


def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(int(round(end * sr)), f.frames)
        if first > 0:
            f.seek(min(first, f.frames))
        data = f.read(max(last - first, 0), dtype="float32", always_2d=True)
    return data, sr


def _read_av(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import av

    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        streams = container.streams.audio
        if not streams:
            raise AudioError(f"{path}: no audio stream in the file")
        stream = streams[0]
        sr = stream.rate or stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    first = int(round((start or 0.0) * sr))
    last = len(data) if end is None else min(int(round(end * sr)), len(data))
    return data[first:last, None].astype(np.float32, copy=False), int(sr)


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    start: float | None = None,
    end: float | None = None,
    trim: bool = False,
    trim_db: float = 40.0,
) -> np.ndarray:
    """Load an audio file as mono float32 at ``sample_rate``.

    Args:
        path: Audio or video file (wav, flac, ogg, mp3, mp4, m4a, ...).
        sample_rate: Target rate in Hz (default 16 kHz).
        start: Segment start in seconds (``None``: beginning).
        end: Segment end in seconds (``None``: end of file).
        trim: Trim leading and trailing silence.
        trim_db: Silence threshold in dB below the signal's peak, for ``trim``.

    Returns:
        Waveform of shape ``(num_samples,)``, float32.

    Raises:
        AudioError: The file is missing, not audio, corrupt, empty, or the segment is empty.

    Warns:
        AudioWarning: A WAV file shorter than its header promises (a truncated copy or download).
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTS:
        raise AudioError(f"{path}: unsupported audio format {ext!r} (supported: {', '.join(sorted(SUPPORTED_EXTS))})")
    try:
        if ext in _SOUNDFILE_EXTS:
            try:
                data, sr = _read_soundfile(path, start, end)
            except sf.LibsndfileError:
                data, sr = _read_av(path, start, end)
        else:
            data, sr = _read_av(path, start, end)
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise many types; all mean "cannot decode"
        raise AudioError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    if data.size == 0:
        where = "" if start is None and end is None else f" in segment [{start}, {end}] s"
        raise AudioError(f"{path}: no audio samples{where}")
    if ext == ".wav" and (short := _wav_shortfall(path)) is not None:
        warnings.warn(
            f"{path}: truncated file: its header promises {short[0]} bytes of audio, it holds {short[1]}; "
            "only the part present is used",
            AudioWarning,
            stacklevel=2,
        )
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if sr != sample_rate:
        wav = soxr.resample(wav, sr, sample_rate, quality="HQ")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if trim:
        wav = trim_silence(wav, sample_rate, top_db=trim_db)
    return wav


def trim_silence(
    wav: np.ndarray, sample_rate: int = SAMPLE_RATE, top_db: float = 40.0, frame_ms: float = 25.0
) -> np.ndarray:
    """Remove leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Args:
        wav: Waveform ``(num_samples,)``.
        sample_rate: Its rate in Hz.
        top_db: Threshold in dB relative to the peak frame RMS.
        frame_ms: Frame length for the RMS analysis.

    Returns:
        The trimmed waveform (the input unchanged if it is entirely silent).
    """
    hop = max(1, int(sample_rate * frame_ms / 1000))
    n = len(wav) // hop
    if n == 0:
        return wav
    frames = wav[: n * hop].reshape(n, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return wav
    db = 20 * np.log10(np.maximum(rms, 1e-12) / peak)
    loud = np.flatnonzero(db > -top_db)
    return wav[loud[0] * hop : min(len(wav), (loud[-1] + 1) * hop)]


def audio_info(path: str | Path) -> dict[str, float | int]:
    """Sample rate, channels and duration (seconds) of a file without decoding all of it.

    Raises:
        AudioError: The file cannot be opened as audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
        return {"sample_rate": info.samplerate, "channels": info.channels, "duration": info.duration}
    except Exception:  # noqa: BLE001
        pass
    try:
        import av

        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise AudioError(f"{path}: no audio stream in the file")
            s = c.streams.audio[0]
            dur = float(c.duration / 1_000_000) if c.duration else float("nan")
            return {"sample_rate": int(s.rate or 0), "channels": int(s.channels), "duration": dur}
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001
        raise AudioError(f"{path}: cannot read audio header ({type(e).__name__}: {e})") from e


def save_wav(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a mono float waveform as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sample_rate, subtype="PCM_16")
    return path
