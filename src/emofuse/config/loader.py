"""Load YAML configs, apply dotted command-line overrides, and validate with clear errors.

Example:
    >>> cfg = load_config(None, overrides=["optim.lr=0.01", "seeds=[1,2]"])
    >>> cfg.optim.lr, cfg.seeds
    (0.01, [1, 2])
"""

from __future__ import annotations

import copy
import difflib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from emofuse.config.schema import ExperimentConfig, ModelConfig, model_options_schema

__all__ = [
    "STAGE_SHADOWED",
    "ConfigError",
    "apply_overrides",
    "dump_config",
    "load_config",
    "load_yaml",
    "parse_override",
]

T = TypeVar("T", bound=BaseModel)
BASE_KEY = "base"
#: Top-level sections a stage can override key by key; a command-line override of one of their keys also
#: replaces the stages' own value of that key (so ``--set trainer.max_epochs=1`` reaches every stage).
STAGE_SHADOWED = ("trainer", "optim")

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the file and the key."""


def load_yaml(path: str | Path, *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, following ``base: other.yaml`` (relative to the file) recursively.

    Raises:
        ConfigError: The file is missing, not UTF-8, not valid YAML, or not a mapping, or its ``base:`` chain
            comes back to a file already in it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base: of {_chain[-1]})" if _chain else ""))
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"{path}: 'base:' files name each other in a cycle ({cycle})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
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
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: 'base:' must be the path of another YAML file, got {base!r}")
        data = _deep_merge(load_yaml(path.parent / base, _chain=(*_chain, path.resolve())), data)
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


def _set(node: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def _stage(stages: Any, key: str, item: str) -> dict[str, Any]:
    """The stage named ``key`` (or at index ``key``) of the config's ``stages`` list."""
    stages = stages if isinstance(stages, list) else []
    names = [s.get("name", "train") if isinstance(s, dict) else None for s in stages]
    if key in names:
        return stages[names.index(key)]  # type: ignore[no-any-return]
    if key.isdigit() and int(key) < len(stages) and isinstance(stages[int(key)], dict):
        return stages[int(key)]  # type: ignore[no-any-return]
    have = ", ".join(map(str, names)) if names else "none (the config trains one stage: set trainer.* / optim.*)"
    raise ConfigError(f"override {item!r}: no stage named {key!r}; the config's stages: {have}")


def _shadowing_stages(data: Mapping[str, Any], section: str, key: str) -> list[dict[str, Any]]:
    stages = data.get("stages")
    return [
        s
        for s in (stages if isinstance(stages, list) else [])
        if isinstance(s, dict) and isinstance(s.get(section), dict) and key in s[section]
    ]


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (a copy is returned).

    ``stages.<name>.<section>.<key>=value`` sets one stage's value (``<name>`` is the stage's name, or
    its index). A top-level ``trainer.<key>`` or ``optim.<key>`` that a stage sets too is applied to that
    stage as well (logged), so a command-line value is never shadowed; a ``model.<key>`` a stage sets is
    refused, naming the per-stage override to use instead.

    Raises:
        ConfigError: A malformed override, a value where a section is needed, an unknown stage, or a
            ``model`` key a stage shadows.
    """
    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        if path[0] == "stages" and len(path) > 2:
            _set(_stage(out.get("stages"), path[1], item), path[2:], value, item)
            continue
        _set(out, path, value, item)
        if len(path) != 2:
            continue
        shadowing = _shadowing_stages(out, path[0], path[1])
        if shadowing and path[0] == "model":
            names = [str(s.get("name", "train")) for s in shadowing]
            raise ConfigError(
                f"override {item!r}: stage(s) {', '.join(names)} set model.{path[1]} themselves, which would "
                f"shadow it; set it per stage instead, e.g. --set stages.{names[0]}.model.{path[1]}={value}"
            )
        if shadowing and path[0] in STAGE_SHADOWED:
            was = ", ".join(f"{s.get('name', 'train')}: {s[path[0]][path[1]]!r}" for s in shadowing)
            logger.warning("override %s also replaces the stages' own %s (%s)", item, ".".join(path), was)
            for s in shadowing:
                s[path[0]][path[1]] = value
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
        elif not loc:  # a whole-config check: its message says it all (the input is the whole config)
            lines.append(f"{source}: {str(err['msg']).removeprefix('Value error, ')}")
        else:
            got = repr(err.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"{source}: bad value for {key!r}: {err['msg']} (got {got})")
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
