"""Shared CLI plumbing: consoles, clean one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "err_console", "handle_errors", "parse_device", "print_json", "print_wide"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# Errors that mean "bad input": shown as one clear line, not a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, ImportError, OSError)


def handle_errors(fn: F) -> F:
    """Turn user-input errors into ``error: <message>`` on stderr and exit code 2.

    Set ``EMOFUSE_DEBUG=1`` to see the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _USER_ERRORS as e:
            if os.environ.get("EMOFUSE_DEBUG"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _json_safe(obj: Any) -> Any:
    """``obj`` with NaN / infinite floats as ``None``: JSON has no NaN, and an undefined metric is ``null``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """Write ``obj`` as valid JSON to stdout (plain, no rich markup, so it can be piped); NaN / inf become null."""
    sys.stdout.write(json.dumps(_json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def print_wide(renderable: Any) -> None:
    """Print a table at its natural width, even when wider than the terminal (never squash columns)."""
    from rich.measure import Measurement

    width = Measurement.get(console, console.options.update(max_width=1000), renderable).maximum
    if width <= console.width:
        console.print(renderable)
    else:
        Console(width=width).print(renderable)


def parse_device(device: str, option: str = "--device") -> Any:
    """The ``torch.device`` a ``--device`` value names (``auto``: CUDA when present), checked to exist here.

    Raises:
        ValueError: Not a device name, or a device this machine does not have (one line, with the fix).
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{option} {device!r} is not a device name (use cpu, cuda, cuda:1, mps or auto)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ValueError(f"{option} {device}: no CUDA GPU on this machine (torch {build}); use {option} cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{option} {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{option} {device}: MPS is not available on this machine; use {option} cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{option} {device}: unsupported device type {dev.type!r} (use cpu, cuda or mps)")
    return dev
