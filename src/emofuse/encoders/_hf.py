"""Shared plumbing of the Hugging Face encoders: quiet offline loading, architecture checks, random init.

``transformers`` is imported inside the functions, so importing :mod:`emofuse.encoders` stays cheap.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emofuse.encoders.base import EncoderError

__all__ = ["architecture", "build_random", "load_pretrained", "quiet_transformers", "read_config"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence ``transformers`` logging and progress bars for the duration (load reports are re-emitted by us)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def read_config(path: Path, name: str, expected: dict[str, str] | None) -> Any:
    """Read ``config.json`` from a weights folder and check it is the expected architecture.

    Args:
        path: The weights folder.
        name: Encoder name, for messages.
        expected: ``{model_type: class name}`` accepted for ``name``; ``None`` accepts anything.

    Returns:
        The ``transformers`` config.

    Raises:
        EncoderError: No ``config.json``, an unreadable one, or another architecture; the message names the
            folder, what was expected and what was found.
    """
    from transformers import AutoConfig

    want = " or ".join(f"a {cls} checkpoint (model_type {mt!r})" for mt, cls in (expected or {}).items())
    if not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) if path.is_dir() else "not a folder"
        raise EncoderError(
            f"weights folder {path} for encoder {name!r} has no config.json; expected {want or 'a transformers model'}"
            f" (found: {found or 'an empty folder'})"
        )
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - unknown model_type, bad JSON, ...
        raise EncoderError(f"weights folder {path} for encoder {name!r}: cannot read config.json ({e})") from e
    if expected is not None and config.model_type not in expected:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
        raise EncoderError(
            f"weights folder {path} does not match encoder {name!r}: expected {want}, "
            f"found model_type {config.model_type!r} ({archs})"
        )
    return config


def load_pretrained(model_cls: Any, path: Path, name: str, **kwargs: Any) -> tuple[nn.Module, list[str]]:
    """Load weights offline, quietly, and report what did not load.

    Unused checkpoint weights (heads, poolers) are ignored. Missing ones mean part of the model is randomly
    initialised: that is warned about and returned as a note.

    Returns:
        ``(model in eval mode, notes)``.

    Raises:
        EncoderError: The weights cannot be read (corrupt or truncated file); names the file.
    """
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True, **kwargs
            )
    except Exception as e:  # noqa: BLE001 - safetensors / torch / transformers raise many types for bad files
        files = sorted(p.name for p in path.glob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        where = path / files[0] if len(files) == 1 else path
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EncoderError(
            f"{where}: cannot load the weights of encoder {name!r} ({type(e).__name__}: {first}); the file is "
            "corrupt or incomplete: copy or download it again"
        ) from None
    notes = []
    missing = sorted(info.get("missing_keys", ())) + sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        note = f"{len(missing)} weights not in {path} were randomly initialised: {shown}"
        warnings.warn(f"encoder {name!r}: {note}", UserWarning, stacklevel=3)
        notes.append(note)
    return model.eval(), notes


def build_random(model_cls: Any, config: Any, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """Random init from a config (no download). A ``seed`` makes it reproducible without touching the global RNG."""
    if seed is None:
        return model_cls(config, **kwargs).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config, **kwargs).eval()


def architecture(model: nn.Module) -> str:
    """Short description, e.g. ``BertModel L12/H768 (108.9M params)``."""
    c: Any = model.config
    n = sum(p.numel() for p in model.parameters())
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
    return f"{type(model).__name__} L{c.num_hidden_layers}/H{c.hidden_size} ({size} params)"
