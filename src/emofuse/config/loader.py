"""Load YAML configs, apply dotted command-line overrides, and validate with clear errors.

Example:
    >>> cfg = load_config(None, overrides=["optim.lr=0.01", "seeds=[1,2]"])
    >>> cfg.optim.lr, cfg.seeds
    (0.01, [1, 2])
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from emofuse.config.schema import ExperimentConfig, ModelConfig, model_options_schema

__all__ = ["ConfigError", "apply_overrides", "dump_config", "load_config", "load_yaml", "parse_override"]

T = TypeVar("T", bound=BaseModel)
BASE_KEY = "base"


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the file and the key."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, following ``base: other.yaml`` (relative to the file) recursively.

    Raises:
        ConfigError: The file is missing, not valid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is not None:
        data = _deep_merge(load_yaml(path.parent / base), data)
    return data


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into the key path and the YAML-parsed value."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (a copy is returned)."""
    out = _deep_merge({}, data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _known_keys(schema: type[BaseModel], loc: tuple[Any, ...], data: Mapping[str, Any]) -> list[str]:
    model: Any = schema
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    keys = list(getattr(model, "model_fields", {}))
    if model is ModelConfig:  # the model's own options, when it registered a schema
        section = data.get("model")
        name = section.get("name", ModelConfig().name) if isinstance(section, Mapping) else None
        options = model_options_schema(name) if isinstance(name, str) else None
        keys += list(options.model_fields) if options is not None else []
    return keys


def _format_errors(e: ValidationError, schema: type[BaseModel], source: str, data: Mapping[str, Any]) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            known = _known_keys(schema, loc, data)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))!r}?)" if close else ""
            lines.append(f"{source}: unknown key {key!r}{hint}; allowed here: {', '.join(known)}")
        else:
            lines.append(f"{source}: bad value for {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    schema: type[T] = ExperimentConfig,  # type: ignore[assignment]
) -> T:
    """Load ``path`` (or the defaults when ``None``), apply overrides, and validate.

    Args:
        path: YAML file holding overrides of the schema's defaults.
        overrides: ``section.key=value`` strings (values parsed as YAML).
        schema: Config class (default :class:`ExperimentConfig`).

    Returns:
        The validated config.

    Raises:
        ConfigError: Unknown key (with a suggestion) or bad value, naming the file and the key.
    """
    overrides = list(overrides)
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    source = str(path) if path is not None else "config"
    if overrides:
        source += " (with --set overrides)"
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, schema, source, data)) from None


def dump_config(cfg: BaseModel, path: str | Path | None = None) -> str:
    """Serialise a config to YAML (written atomically to ``path`` when given)."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    if path is not None:
        from emofuse.utils.io import atomic_write

        atomic_write(path, text)
    return text
