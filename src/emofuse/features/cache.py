"""Feature cache layout, cache keys and the reader (:class:`FeatureStore`).

Teacher features are computed once (:func:`emofuse.features.extract.extract_features`) and read by
every training epoch. One cache folder holds the features of exactly one *encoder key*::

    <out>/                                   shared by several encoders
      <encoder-slug>-<key12>/                one folder per encoder key
        meta.json                            encoder key, provenance, status, last run's counts, failed items
        index.json                           {"shards": [file, ...], "items": {id: [shard, tensor, frames, input hash]}}
        shard-00000.safetensors              fp16 tensors "<pos>" (T, D) and "<pos>.pooled" (D,);
        shard-00001.safetensors              the header metadata lists ids, input hashes, frames, key
        .lock                                held (flock) while an extraction writes

The **encoder key** hashes everything that changes the features: the encoder's name, class,
modality, output size, frame rate, a weights fingerprint (:func:`state_fingerprint` of the whole
encoder, salted with :attr:`Provenance.fingerprint` and ``architecture``, which encoders use for
their own settings), the hidden layer, and the preprocessing (sample rate, maximum duration, storage dtype,
the encoder's public scalar options). Each **entry** also records a hash of its input (audio path,
segment, file size and mtime; or the transcript), so a changed input is recomputed. Features
written under one key are never returned for another: :class:`FeatureStore` raises
:class:`FeatureCacheError` on a mismatch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emofuse.data.audio import SAMPLE_RATE
from emofuse.encoders.base import Encoder, state_fingerprint

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "EncoderKey",
    "FeatureCacheError",
    "FeatureStore",
    "encoder_key",
    "resolve_cache_dir",
]

FORMAT = "emofuse-features"
FORMAT_VERSION = 1
META = "meta.json"
INDEX = "index.json"
_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_SKIP_ATTRS = {"training", "name", "output_dim", "provenance"}


class FeatureCacheError(ValueError):
    """A feature cache is missing, unfinished, corrupt, or belongs to another encoder key. Names the folder."""


def _scalar_options(encoder: Encoder) -> dict[str, Any]:
    """Public, JSON-able settings stored on the encoder instance (dataclass configs included)."""
    out: dict[str, Any] = {}
    for k, v in sorted(vars(encoder).items()):
        if k.startswith("_") or k in _SKIP_ATTRS:
            continue
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out[k] = json.loads(json.dumps(dataclasses.asdict(v), default=str))
        elif v is None or isinstance(v, (bool, int, float, str, Path)):
            out[k] = str(v) if isinstance(v, Path) else v
        elif isinstance(v, (tuple, list)) and len(v) <= 64 and all(isinstance(x, (bool, int, float, str)) for x in v):
            out[k] = list(v)
    return out


@dataclass
class EncoderKey:
    """Everything that determines the cached features of one encoder, and its hash.

    Attributes:
        name: Registered encoder name.
        modality: ``audio`` or ``text``.
        encoder_class: Qualified class name of the encoder.
        output_dim: Feature size ``D``.
        frame_rate: Frames per second (audio), ``None`` for text.
        fingerprint: Hash of the weights (all parameters and buffers) and the encoder's own settings.
        layer: Hidden layer the encoder runs with (``None`` = its default).
        preprocessing: Sample rate, maximum duration, storage dtype and the encoder's scalar options.
        provenance: :meth:`Provenance.to_dict` (informational, not hashed: the fingerprint covers it).
    """

    name: str
    modality: str
    encoder_class: str
    output_dim: int
    frame_rate: float | None
    fingerprint: str
    layer: int | str | None
    preprocessing: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The hashed part (everything but the provenance)."""
        d = dataclasses.asdict(self)
        d.pop("provenance")
        return {"format_version": FORMAT_VERSION, **d}

    @property
    def digest(self) -> str:
        """SHA-256 hex digest of :meth:`identity` (canonical JSON)."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def slug(self) -> str:
        """Folder name ``<encoder-slug>-<first 12 hex digits of the digest>``."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-.") or "encoder"
        return f"{base}-{self.digest[:12]}"

    def describe(self) -> str:
        """One line naming the encoder, its layer, fingerprint and key."""
        return f"{self.name!r} (layer={self.layer}, fingerprint={self.fingerprint}, key={self.digest[:12]})"

    def differences(self, other: EncoderKey) -> list[str]:
        """Names of the hashed fields that differ from ``other`` (nested preprocessing keys dotted)."""
        a, b = self.identity(), other.identity()
        diff = [k for k in a if k != "preprocessing" and a[k] != b.get(k)]
        pa, pb = a["preprocessing"], b["preprocessing"]
        diff += [f"preprocessing.{k}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
        return diff

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (as stored in ``meta.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderKey:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def encoder_key(
    encoder: Encoder, layer: int | str | None = None, max_duration: float | None = None, dtype: str = "float16"
) -> EncoderKey:
    """The cache key of ``encoder`` with the given preprocessing.

    Args:
        encoder: The encoder that computes the features (its weights are hashed).
        layer: Layer the encoder was built with; defaults to ``encoder.layer`` when it has one. A
            value that contradicts ``encoder.layer`` is an error.
        max_duration: Audio longer than this many seconds is cut (``None``: never).
        dtype: Storage dtype, ``float16`` (default) or ``float32``.

    Returns:
        The :class:`EncoderKey`.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    own = getattr(encoder, "layer", None)
    if layer is not None and own is not None and layer != own:
        raise ValueError(f"layer={layer!r} but encoder {encoder.name!r} was built with layer={own!r}")
    prov = encoder.provenance
    prep: dict[str, Any] = {"dtype": dtype, "max_duration": max_duration, "options": _scalar_options(encoder)}
    if encoder.modality == "audio":
        prep["sample_rate"] = SAMPLE_RATE
    return EncoderKey(
        name=encoder.name,
        modality=encoder.modality,
        encoder_class=f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        output_dim=int(encoder.output_dim),
        frame_rate=encoder.frame_rate,
        fingerprint=state_fingerprint(encoder, extra=f"{prov.fingerprint}|{prov.architecture}"),
        layer=layer if layer is not None else own,
        preprocessing=prep,
        provenance=prov.to_dict(),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise FeatureCacheError(f"{path}: unreadable ({e})") from None
    if not isinstance(obj, dict):
        raise FeatureCacheError(f"{path}: expected a JSON object")
    return obj


def _mismatch(path: Path, cached: EncoderKey, requested: EncoderKey) -> FeatureCacheError:
    diff = ", ".join(cached.differences(requested)) or "key"
    return FeatureCacheError(
        f"feature cache {path} holds features of encoder {cached.describe()}, not of the requested "
        f"{requested.describe()} (differs in: {diff}); stale features are never reused: extract into the "
        f"parent folder (one sub-folder per encoder key) or a fresh --out folder"
    )


def resolve_cache_dir(out_dir: str | Path, key: EncoderKey) -> Path:
    """Folder that holds (or will hold) the features of ``key`` under ``out_dir``.

    ``out_dir`` is either a root shared by several encoders (→ ``out_dir/<key.slug>``) or an
    existing cache folder (it has a ``meta.json``), which must then belong to ``key``.

    Raises:
        FeatureCacheError: ``out_dir`` is a cache folder of another encoder key.
    """
    out = Path(out_dir)
    if (out / META).is_file():
        meta = _read_json(out / META)
        cached = EncoderKey.from_dict(meta["encoder"])
        if meta.get("key") != key.digest:
            raise _mismatch(out, cached, key)
        return out
    return out / key.slug


def _find_cache_dir(path: Path) -> Path:
    if (path / META).is_file():
        return path
    if not path.is_dir():
        raise FeatureCacheError(f"feature cache {path} not found: run `emofuse extract` first")
    subs = sorted(p for p in path.iterdir() if (p / META).is_file())
    if len(subs) == 1:
        return subs[0]
    if not subs:
        raise FeatureCacheError(f"{path} holds no feature cache (no meta.json): run `emofuse extract` first")
    raise FeatureCacheError(
        f"{path} holds features of {len(subs)} encoder keys ({', '.join(p.name for p in subs)}): open one of "
        "them, or use FeatureStore.for_encoder(root, encoder)"
    )


class FeatureStore:
    """Read-only access to one finished feature cache.

    Args:
        path: A cache folder (with ``meta.json``), or a root holding exactly one.
        expected: When given, the key the caller needs; a cache written under another key raises.

    Raises:
        FeatureCacheError: No cache there, the extraction did not finish, or the key does not match.

    Example:
        >>> import tempfile
        >>> from emofuse.data.manifest import Utterance
        >>> from emofuse.features import extract_features
        >>> from emofuse.testing.dummies import DummyTextEncoder
        >>> records = [Utterance(id="u1", text="hi there")]
        >>> store = extract_features(records, DummyTextEncoder(dim=4), tempfile.mkdtemp(), progress=False)
        >>> store.ids, tuple(store.get("u1").shape), store.get("u1").dtype
        (['u1'], (8, 4), torch.float32)
    """

    def __init__(self, path: str | Path, expected: EncoderKey | None = None, max_open: int = 16) -> None:
        self.path = _find_cache_dir(Path(path))
        meta = _read_json(self.path / META)
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise FeatureCacheError(f"{self.path}: not an {FORMAT} v{FORMAT_VERSION} cache")
        self.meta = meta
        self.key = EncoderKey.from_dict(meta["encoder"])
        if expected is not None and expected.digest != meta["key"]:
            raise _mismatch(self.path, self.key, expected)
        if meta.get("status") != "complete":
            raise FeatureCacheError(
                f"extraction into {self.path} did not finish (status: {meta.get('status')}): run the same "
                "`emofuse extract` again to resume it"
            )
        try:
            index = _read_json(self.path / INDEX)
        except FileNotFoundError:
            raise FeatureCacheError(f"{self.path}: index.json is missing; re-run `emofuse extract`") from None
        self._shards: list[str] = list(index["shards"])
        self._items: dict[str, list[Any]] = index["items"]
        self._max_open = max_open
        self._handles: OrderedDict[int, Any] = OrderedDict()

    @classmethod
    def for_encoder(
        cls,
        root: str | Path,
        encoder: Encoder | EncoderKey,
        layer: int | str | None = None,
        max_duration: float | None = None,
        dtype: str = "float16",
    ) -> FeatureStore:
        """Open the cache of ``encoder`` (with these preprocessing settings) under ``root``.

        Raises:
            FeatureCacheError: ``root`` has no cache for that key (the message lists the ones it has).
        """
        key = encoder if isinstance(encoder, EncoderKey) else encoder_key(encoder, layer, max_duration, dtype)
        root = Path(root)
        target = resolve_cache_dir(root, key)
        if not (target / META).is_file():
            have = sorted(p.name for p in root.iterdir() if (p / META).is_file()) if root.is_dir() else []
            raise FeatureCacheError(
                f"no features of encoder {key.describe()} under {root} (it has: {', '.join(have) or 'none'}); "
                "run `emofuse extract` for it"
            )
        return cls(target, expected=key)

    @property
    def name(self) -> str:
        """Encoder name."""
        return self.key.name

    @property
    def modality(self) -> str:
        """``audio`` or ``text``."""
        return self.key.modality

    @property
    def output_dim(self) -> int:
        """Feature size ``D``."""
        return self.key.output_dim

    @property
    def frame_rate(self) -> float | None:
        """Frames per second of the features (``None`` for text)."""
        return self.key.frame_rate

    @property
    def ids(self) -> list[str]:
        """Utterance ids with features, in manifest order."""
        return list(self._items)

    @property
    def shards(self) -> list[str]:
        """Shard files holding the current items (older shards may also hold superseded entries)."""
        used = {e[0] for e in self._items.values()}
        return [s for i, s in enumerate(self._shards) if i in used]

    @property
    def failed(self) -> dict[str, str]:
        """Ids the extraction skipped, with the reason."""
        return dict(self.meta.get("failed", {}))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._items

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, encoder={self.name!r}, items={len(self)}, dim={self.output_dim})"

    def num_frames(self, utt_id: str) -> int:
        """Number of frames (tokens) ``T`` stored for ``utt_id``."""
        return int(self._entry(utt_id)[2])

    def get(self, utt_id: str) -> Tensor:
        """Frame- or token-level features of one utterance.

        Returns:
            ``(T, D)`` float32.

        Raises:
            KeyError: No features for ``utt_id`` (the message says why when the extraction skipped it).
            FeatureCacheError: The stored values hold NaN or inf (names the shard).
        """
        shard, key = self._entry(utt_id)[:2]
        return self._finite(self._handle(shard).get_tensor(str(key)).to(torch.float32), shard, utt_id)

    def get_pooled(self, utt_id: str) -> Tensor:
        """The encoder's utterance-level vector ``(D,)`` float32 (its ``pooled`` output).

        Raises:
            FeatureCacheError: The stored values hold NaN or inf (names the shard).
        """
        shard, key = self._entry(utt_id)[:2]
        return self._finite(self._handle(shard).get_tensor(f"{key}.pooled").to(torch.float32), shard, utt_id)

    def _finite(self, x: Tensor, shard: int, utt_id: str) -> Tensor:
        """``x``, or an error naming the shard when it holds NaN / inf (a damaged cache is never reused)."""
        if not bool(torch.isfinite(x).all()):
            raise FeatureCacheError(
                f"{self.path / self._shards[shard]}: the features of {utt_id!r} hold NaN or infinite values; run "
                "`emofuse extract` again (it sets the shard aside and recomputes its utterances)"
            )
        return x

    def _entry(self, utt_id: str) -> list[Any]:
        try:
            return self._items[utt_id]
        except KeyError:
            why = self.meta.get("failed", {}).get(utt_id)
            reason = f"extraction failed: {why}" if why else "not in the manifest it was extracted from"
            raise KeyError(f"no cached features for {utt_id!r} in {self.path} ({reason})") from None

    def _handle(self, shard: int) -> Any:
        from safetensors import safe_open

        h = self._handles.get(shard)
        if h is None:
            p = self.path / self._shards[shard]
            try:
                h = safe_open(str(p), framework="pt")
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
                raise FeatureCacheError(f"{p}: cannot read shard ({e}); re-run `emofuse extract`") from e
            self._handles[shard] = h
            if len(self._handles) > self._max_open:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(shard)
        return h

    def close(self) -> None:
        """Release open shard files (they reopen on the next read)."""
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # memory maps do not pickle (DataLoader workers reopen them)
        return state
