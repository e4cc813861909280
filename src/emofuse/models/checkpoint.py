"""Self-describing model checkpoints: safetensors weights + the registered name and config to rebuild them.

A checkpoint is one ``.safetensors`` file whose header metadata (key ``"emofuse"``) holds a JSON
document with the model's registered name, its constructor config, the class names and anything the
caller adds (encoder provenance, task settings, epoch, score). The same document, minus the
per-file fields, is also written to ``model.json`` next to it, so a folder of checkpoints
(``best.safetensors``, ``last.safetensors``) is readable by people and tools without torch.
:func:`load_checkpoint` rebuilds the model from that document alone — no YAML, no training code —
which is what inference and ``emofuse evaluate`` use (STYLE.md §3.4). This module never imports
Lightning.

Example:
    >>> import tempfile, torch
    >>> from emofuse.models.probe import LinearProbe
    >>> m = LinearProbe(modality="text", input_dim=4, num_classes=2)
    >>> m.model_name = "probe"
    >>> path = save_checkpoint(m, tempfile.mkdtemp() + "/best.safetensors", {"classes": ["neg", "pos"]})
    >>> m2, meta = load_checkpoint(path)
    >>> meta["model_name"], meta["classes"], torch.equal(m2.head.weight, m.head.weight)
    ('probe', ['neg', 'pos'], True)
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emofuse.models._registry import create_model
from emofuse.models.base import EmotionModel
from emofuse.utils.io import atomic_write, atomic_write_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "MODEL_JSON",
    "CheckpointError",
    "checkpoint_meta",
    "find_checkpoint",
    "load_checkpoint",
    "load_weights",
    "non_finite",
    "read_checkpoint_meta",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "emofuse-checkpoint"
CHECKPOINT_VERSION = 1
MODEL_JSON = "model.json"
_META_KEY = "emofuse"
#: Fields that differ between the files of one folder; kept out of ``model.json``.
_PER_FILE = ("epoch", "score", "monitor", "kind", "global_step")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model it describes. The message names the file."""


def _jsonable(obj: Any) -> Any:
    """Config values as JSON types (tuples → lists, paths → strings); anything else by ``str``."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Tensor):
        return obj.tolist()
    return str(obj)


def checkpoint_meta(model: EmotionModel, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document stored with ``model``'s weights.

    Args:
        model: A model with :attr:`~emofuse.models.base.EmotionModel.model_name` and ``config``.
        meta: Extra fields (``classes``, ``encoders``, ``task``, ``epoch``, ...); they cannot replace
            the model's own name and config.

    Returns:
        ``{"format", "version", "model_name", "model_class", "model_config", **meta}``.
    """
    cls = type(model)
    doc: dict[str, Any] = {k: _jsonable(v) for k, v in (meta or {}).items()}
    doc.update(
        format=CHECKPOINT_FORMAT,
        version=CHECKPOINT_VERSION,
        model_name=model.model_name,
        model_class=f"{cls.__module__}.{cls.__qualname__}",
        model_config=_jsonable(model.config),
    )
    return doc


def save_checkpoint(
    model: EmotionModel, path: str | Path, meta: Mapping[str, Any] | None = None, write_json: bool = True
) -> Path:
    """Write ``model``'s weights and its rebuild document atomically.

    Args:
        model: The model to save (its ``state_dict``, moved to the CPU).
        path: Destination ``.safetensors`` file; parent folders are created.
        meta: Extra fields for the document (see :func:`checkpoint_meta`).
        write_json: Also write ``model.json`` (the document without per-file fields) next to ``path``.

    Returns:
        ``path``.
    """
    from safetensors.torch import save

    path = Path(path)
    doc = checkpoint_meta(model, meta)
    # clone: safetensors refuses tensors that share memory (tied weights)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={_META_KEY: json.dumps(doc)}))
    if write_json:
        atomic_write_json(path.parent / MODEL_JSON, {k: v for k, v in doc.items() if k not in _PER_FILE})
    return path


def find_checkpoint(path: str | Path, which: str = "best") -> Path:
    """Resolve a checkpoint file: ``path`` itself, or ``path/<which>.safetensors`` for a folder.

    Raises:
        CheckpointError: Nothing there (the message lists the checkpoints the folder has).
    """
    path = Path(path)
    if path.is_dir():
        target = path / f"{which}.safetensors"
        if not target.is_file():
            have = sorted(p.name for p in path.glob("*.safetensors"))
            raise CheckpointError(f"no {which}.safetensors in {path} (it has: {', '.join(have) or 'no checkpoints'})")
        return target
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The rebuild document of a checkpoint, without reading its tensors.

    Read from the file's header; for files without one, from ``model.json`` next to it.

    Raises:
        CheckpointError: The file is missing, not safetensors, or has no usable document.
    """
    from safetensors import safe_open

    path = find_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt / truncated files
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if _META_KEY in header:
        try:
            doc = json.loads(header[_META_KEY])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: corrupt model metadata in the header ({e})") from None
    else:
        side = path.parent / MODEL_JSON
        if not side.is_file():
            raise CheckpointError(f"{path}: no model metadata in the header and no {MODEL_JSON} next to it")
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{side}: unreadable model metadata ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an {CHECKPOINT_FORMAT} file (format: {doc.get('format')!r})")
    if int(doc.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {doc['version']} is newer than this emofuse ({CHECKPOINT_VERSION})"
        )
    for key in ("model_name", "model_config"):
        if key not in doc:
            raise CheckpointError(f"{path}: model metadata has no {key!r}")
    return doc


def _rebuild(doc: Mapping[str, Any], path: Path) -> EmotionModel:
    """Build the architecture the document describes (``from_config`` when the class has one)."""
    name, config = doc["model_name"], dict(doc["model_config"])
    cls_path = str(doc.get("model_class", ""))
    module_name, _, qualname = cls_path.rpartition(".")
    try:
        cls = None
        if module_name.startswith("emofuse.models.") and qualname:
            cls = getattr(importlib.import_module(module_name), qualname, None)
        if isinstance(cls, type) and issubclass(cls, EmotionModel) and hasattr(cls, "from_config"):
            model = cls.from_config(config)  # type: ignore[attr-defined]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = create_model(name, **config)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r} from its stored config: {e}") from e
    model.model_name = name
    return model


def load_weights(
    model: EmotionModel, path: str | Path, strict: bool = True, state: Mapping[str, Tensor] | None = None
) -> dict[str, list[str]]:
    """Load a checkpoint's weights into an existing model.

    Args:
        model: Target model.
        path: Checkpoint file.
        strict: Every key must match. With ``False`` keys the model lacks are an error only if *no*
            key matches; missing keys keep the model's values (a new head on a distilled student).
        state: Tensors already read from ``path`` (to avoid reading twice).

    Returns:
        ``{"missing": [...], "unexpected": [...]}``.

    Raises:
        CheckpointError: Unreadable file, non-finite weights (named), mismatched keys (with ``strict``), or
            mismatched shapes.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if state is None:
        try:
            state = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read the weights ({e})") from None
    bad = non_finite(state)
    if bad:
        raise CheckpointError(
            f"{path}: non-finite weights (NaN or inf) in {_few(bad)}; the run that wrote it diverged "
            "(use an earlier checkpoint, or retrain with a lower learning rate)"
        )
    own = model.state_dict()
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if shapes:
        raise CheckpointError(f"{path}: weights do not fit the model; shape mismatch for {_few(shapes)}")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{path}: weights do not fit model {model.model_name!r}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}"
        )
    if not strict and own and not set(own) & set(state):
        raise CheckpointError(f"{path}: no weight in the checkpoint matches model {model.model_name!r}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def non_finite(state: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or an infinity, sorted."""
    return sorted(
        k for k, v in state.items() if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())
    )


def _few(items: list[str], n: int = 8) -> str:
    if not items:
        return "none"
    more = f" ... ({len(items)} in all)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[EmotionModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`, without any config file.

    Args:
        path: A ``.safetensors`` file, or a folder holding ``best.safetensors``.
        map_location: Device to put the model on.

    Returns:
        ``(model in eval mode, document)``.

    Raises:
        CheckpointError: Missing or corrupt file, unknown model name, NaN / inf weights (what a diverged run
            leaves; the tensors are named), or weights that do not fit the rebuilt architecture. Every message
            names the file.
    """
    path = find_checkpoint(path)
    doc = read_checkpoint_meta(path)
    model = _rebuild(doc, path)
    load_weights(model, path, strict=True)
    if doc.get("feature_stats"):  # encoders.standardize: the training split's statistics travel with the model
        model.feature_stats = doc["feature_stats"]
    return model.to(map_location).eval(), doc
