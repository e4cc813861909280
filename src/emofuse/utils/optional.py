"""Optional dependencies: import lazily, and say what to install when one is missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["MissingDependencyError", "is_available", "require"]


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""


def is_available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` with an install hint.

    Args:
        module: Importable module name, e.g. ``"opensmile"``.
        extra: The emofuse extra that installs it, e.g. ``"features"``.
        purpose: What it is needed for, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = f"pip install 'emofuse[{extra}]'" if extra else f"pip install {module}"
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"optional dependency {module!r} is not installed{why}; install it with: {hint}"
        ) from e
