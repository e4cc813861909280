"""Atomic file writes: a reader never sees half a file, and a crash never leaves one behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_json", "read_utf8"]


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    Args:
        path: Destination file; parent folders are created.
        data: Bytes, or text (written as UTF-8).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON and write it atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading BOM dropped).

    Raises:
        ValueError: The file is not UTF-8; the message names the file, line and column of the first bad byte.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {data[start]:#04x} at column {column}); save the file as UTF-8"
        ) from None
