"""Model registry and factory (timm-style): ``@register_model`` functions and ``create_model(name, **kw)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from emofuse.models.base import EmotionModel

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]

F = TypeVar("F", bound=Callable[..., EmotionModel])
_MODELS: dict[str, Callable[..., EmotionModel]] = {}


def register_model(fn: F) -> F:
    """Register a model factory under its function name (``cmd_student`` → ``"cmd_student"``).

    The function takes keyword overrides, merges them over its defaults and returns the model.
    """
    name = fn.__name__
    old = _MODELS.get(name)
    if old is not None and old is not fn and old.__module__.rsplit(".", 1)[-1] != fn.__module__.rsplit(".", 1)[-1]:
        raise ValueError(f"model {name!r} is already registered (by {old.__module__})")
    _MODELS[name] = fn
    return fn


def _load_all() -> None:
    import emofuse.models  # noqa: F401  (model modules register themselves on import)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` filters by substring."""
    _load_all()
    return sorted(n for n in _MODELS if pattern is None or pattern in n)


def get_model_entry(name: str) -> Callable[..., EmotionModel]:
    """The factory function of a registered model; an unknown name lists the known ones."""
    _load_all()
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(sorted(_MODELS))}") from None


def create_model(name: str, **overrides: Any) -> EmotionModel:
    """Build a registered model; ``None`` overrides are dropped (timm convention).

    The returned model's ``config`` holds every constructor argument and ``model_name`` its
    registered name, so checkpoints can rebuild it.
    """
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    model = get_model_entry(name)(**kwargs)
    model.model_name = name
    return model
