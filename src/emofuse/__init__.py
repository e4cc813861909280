"""emofuse: multimodal emotion recognition from speech audio, transcripts and visual features."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__", "create_model", "list_models"]

# Public API loaded on first access, so ``import emofuse`` stays fast (no torch import).
_LAZY = {"create_model": "emofuse.models", "list_models": "emofuse.models", "Predictor": "emofuse.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emofuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
