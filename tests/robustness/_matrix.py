"""Helpers of the robustness matrix: run a command in-process, check its one-line error, snapshot a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from emofuse.cli.main import app

RUNNER = CliRunner()


@dataclass
class Outcome:
    """What a command did: exit code, everything it printed, and the ``error:`` lines among it."""

    code: int
    output: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("error:")]


def invoke(*args: object) -> Outcome:
    """Run ``emofuse *args`` in-process; an exception that escapes the command is a test failure (a traceback)."""
    res = RUNNER.invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"emofuse {' '.join(map(str, args))} raised instead of a one-line error") from (
            res.exception
        )
    return Outcome(res.exit_code, res.output)


def one_line_error(out: Outcome, *names: str) -> str:
    """Assert exit code 2 and exactly one ``error:`` line naming every one of ``names``; returns that line."""
    assert out.code == 2, out.output
    assert len(out.errors) == 1 and "Traceback" not in out.output, out.output
    for name in names:
        assert name in out.errors[0], (name, out.errors[0])
    return out.errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that nothing already written was lost)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_wav(
    path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, value: float | None = None
) -> Path:
    """A short tone (or a constant ``value``: 0 for silence, NaN, inf) as a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wav = np.full(n, value, np.float32) if value is not None else (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
    subtype = "FLOAT" if value is not None and not np.isfinite(value) else "PCM_16"
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def _header_only(path: Path) -> Path:
    write_wav(path)
    path.write_bytes(path.read_bytes()[:44])
    return path


def _truncated(path: Path) -> Path:
    write_wav(path, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still promises the whole second
    return path


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _one_hour(path: Path) -> Path:
    """A valid one-hour 16 kHz WAV of silence, written sparsely (instant, no disk used)."""
    write_wav(path, seconds=0.01)
    header = bytearray(path.read_bytes()[:44])
    samples = 3600 * 16000
    header[4:8] = (36 + 2 * samples).to_bytes(4, "little")
    header[40:44] = (2 * samples).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(44 + 2 * samples)
    return path


def _write(content: bytes):
    def build(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    return build


#: name -> (builder(path) -> path, what the skip / failure message says; None: the clip is usable)
AUDIO = {
    "zero-bytes": (_write(b""), "file is empty (0 bytes)"),
    "header-only": (_header_only, "no audio samples"),
    "not-audio": (_write(b"this is a text file, not audio\n" * 20), "cannot decode audio"),
    "nan-samples": (lambda p: write_wav(p, value=float("nan")), "NaN or infinite samples"),
    "inf-samples": (lambda p: write_wav(p, value=float("inf")), "NaN or infinite samples"),
    "folder": (_folder, "is a folder, not an audio file"),
    "missing": (lambda p: p, "audio file not found"),
    "silent": (lambda p: write_wav(p, value=0.0), None),
    "stereo": (lambda p: write_wav(p, channels=2), None),
    "8khz": (lambda p: write_wav(p, rate=8000), None),
    "96khz": (lambda p: write_wav(p, rate=96000), None),
    "truncated": (_truncated, None),  # usable: what is there is read (predict warns)
}
