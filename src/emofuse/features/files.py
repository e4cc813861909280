"""Pre-extracted feature files named by the manifest (``Utterance.features``): readers and a store.

A record points at one array per modality (spec ``rajan-thesis.md``: ResNet-101 face features at 3 Hz,
OpenFace / FACET, COVAREP, eGeMAPS, GloVe, ...)::

    {"id": "u1", "features": {"video": "faces/u1.npy", "audio": "covarep.h5#/u1", "text": null}, ...}

A reference is ``FILE`` (the whole file is the array) or ``FILE#KEY`` (one array inside a container).
Readers are registered per file suffix with :func:`register_feature_reader`; built in:

========================  =============================================================
suffix                    reference
========================  =============================================================
``.npy``                  ``u1.npy`` (``#KEY`` not allowed)
``.npz``                  ``video.npz#u1`` (member name; no key: the only member)
``.safetensors``          ``video.safetensors#u1`` (tensor name; no key: the only tensor)
``.h5`` / ``.hdf5``       ``video.h5#/clips/u1`` (dataset path; no key: the only dataset)
========================  =============================================================

An array is ``(T, D)`` (a sequence of ``T`` frames) or ``(D,)`` (one vector, served as ``T = 1``).
A reference may end in a *frame slice* ``[START:END]`` (0-based, ``END`` exclusive) that keeps only those
rows: ``recola/train_1.npy#[75:150]`` (a 3 s window of a 40 ms frame-level file; ``.npy`` files are
memory-mapped, so only the window is read), ``covarep.h5#/u1[10:20]``, ``mosi_text.npy#[17:18]``.
:class:`FileFeatureStore` serves one modality to :class:`~emofuse.pipeline.MultimodalDataset` with
the same ``get(id) -> (T, D)`` interface as the encoder cache, and it *allows absence*: a record
without a reference for the modality is absent (``id not in store``), which the dataset turns into an
all-False mask and ``batch["present"][m] = False``, never into zeros that pretend to be data.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from emofuse.data.manifest import Utterance
    >>> root = Path(tempfile.mkdtemp())
    >>> np.save(root / "a.npy", np.ones((4, 3), dtype=np.float32))
    >>> recs = [Utterance(id="a", features={"video": "a.npy"}), Utterance(id="b")]
    >>> store = FileFeatureStore(recs, "video", root=root)
    >>> tuple(store.get("a").shape), "b" in store, store.output_dim
    ((4, 3), False, 3)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from emofuse.data.manifest import Utterance

__all__ = [
    "FeatureFileError",
    "FileFeatureStore",
    "feature_readers",
    "read_feature",
    "register_feature_reader",
    "split_frame_slice",
]

#: ``reader(path, key) -> np.ndarray``; ``key`` is ``None`` for a whole-file reference.
FeatureReader = Callable[[Path, "str | None"], np.ndarray]
_READERS: dict[str, FeatureReader] = {}


class FeatureFileError(ValueError):
    """A feature file is missing, unreadable, lacks the key, or holds an array of the wrong shape.

    The message names the utterance (when known), the file and the key.
    """


def register_feature_reader(*suffixes: str) -> Callable[[FeatureReader], FeatureReader]:
    """Register ``reader(path, key) -> array`` for file suffixes (``".npy"``; lower case, with the dot)."""

    def deco(fn: FeatureReader) -> FeatureReader:
        for suffix in suffixes:
            if not suffix.startswith("."):
                raise ValueError(f"suffix must start with '.', got {suffix!r}")
            _READERS[suffix.lower()] = fn
        return fn

    return deco


def feature_readers() -> list[str]:
    """Suffixes that have a reader."""
    return sorted(_READERS)


def _only(path: Path, names: Sequence[str], what: str) -> str:
    if len(names) != 1:
        shown = ", ".join(list(names)[:5]) + (" ..." if len(names) > 5 else "")
        raise FeatureFileError(f"{path}: holds {len(names)} {what}s ({shown}); name one with {path.name}#KEY")
    return names[0]


@register_feature_reader(".npy")
def _read_npy(path: Path, key: str | None) -> np.ndarray:
    if key is not None:
        raise FeatureFileError(f"{path}: a .npy file holds one array; drop '#{key}' from the reference")
    return np.load(path, allow_pickle=False)


@register_feature_reader(".npz")
def _read_npz(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        name = key if key is not None else _only(path, z.files, "array")
        if name not in z.files:
            raise FeatureFileError(f"{path}: no array {name!r} (has {', '.join(z.files[:5])})")
        return z[name]


@register_feature_reader(".safetensors")
def _read_safetensors(path: Path, key: str | None) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        names = list(f.keys())
        name = key if key is not None else _only(path, names, "tensor")
        if name not in names:
            raise FeatureFileError(f"{path}: no tensor {name!r} (has {', '.join(names[:5])})")
        return f.get_tensor(name)


@register_feature_reader(".h5", ".hdf5")
def _read_hdf5(path: Path, key: str | None) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if key is None:
            found: list[str] = []
            f.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
            key = _only(path, found, "dataset")
        obj = f.get(key)
        if not isinstance(obj, h5py.Dataset):
            raise FeatureFileError(f"{path}: no dataset {key!r}" + (" (it is a group)" if obj is not None else ""))
        return np.asarray(obj[()])


_SLICE = re.compile(r"^(.*?)\[(\d+):(\d+)\]$")


def split_frame_slice(key: str | None) -> tuple[str | None, tuple[int, int] | None]:
    """Split a trailing frame slice ``[START:END]`` off a reference key.

    Example:
        >>> split_frame_slice("[75:150]"), split_frame_slice("/a/u1[0:3]"), split_frame_slice("u1")
        ((None, (75, 150)), ('/a/u1', (0, 3)), ('u1', None))
    """
    if key is None:
        return None, None
    m = _SLICE.match(key)
    if m is None:
        return key, None
    return (m.group(1) or None), (int(m.group(2)), int(m.group(3)))


def read_feature(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read one feature array ``(T, D)`` or ``(D,)`` from a registered file type.

    Args:
        path: Feature file.
        key: In-file key (``None``: the whole file), optionally ending in a frame slice ``[START:END]``
            that keeps rows ``START`` to ``END - 1`` of a ``(T, D)`` array.

    Raises:
        FeatureFileError: Unknown suffix, missing file, missing key, a file that cannot be parsed, or a frame
            slice that is empty, not within the array's ``T`` frames, or applied to a ``(D,)`` vector.
    """
    path = Path(path)
    key, frames = split_frame_slice(key)
    if frames is not None:
        start, end = frames
        where = f"{path}#{key or ''}[{start}:{end}]"
        if end <= start:
            raise FeatureFileError(f"{where}: empty frame slice (END must be greater than START)")
        if path.suffix.lower() == ".npy" and key is None and path.is_file():
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as e:
                raise FeatureFileError(f"{path}: cannot read features ({type(e).__name__}: {e})") from e
        else:
            arr = read_feature(path, key)
        if arr.ndim != 2:
            raise FeatureFileError(f"{where}: a frame slice needs a (T, D) array, the file holds {arr.shape}")
        if end > arr.shape[0]:
            raise FeatureFileError(f"{where}: the slice ends past the array's {arr.shape[0]} frames")
        return np.array(arr[start:end])
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise FeatureFileError(
            f"{path}: no feature reader for {suffix or 'files without a suffix'!r}; "
            f"known: {', '.join(feature_readers())}"
        )
    if not path.is_file():
        raise FeatureFileError(f"feature file not found: {path}")
    try:
        return reader(path, key)
    except FeatureFileError:
        raise
    except Exception as e:  # corrupt container: name the file
        raise FeatureFileError(f"{path}: cannot read features ({type(e).__name__}: {e})") from e


class FileFeatureStore:
    """One modality's pre-extracted features, read from the files the records name.

    Args:
        records: Records whose :attr:`~emofuse.data.manifest.Utterance.features` name the files.
        modality: Key in ``Utterance.features`` (``"video"``, ``"audio"``, ...).
        root: Folder that relative references are resolved against (the manifest's folder).
        dim: Feature dimension; ``None``: read from the first record that has the modality.
        max_frames: Keep at most this many leading frames (``None``: all).
        dtype: Tensor dtype served.

    Attributes:
        allow_missing: Always ``True``: an id without a reference is an absent modality, not an error
            (the dataset marks it in ``batch["present"]``).

    Raises:
        FeatureFileError: No record has the modality and ``dim`` is not given (the dimension of the
            absent placeholders would be unknown), or the first file cannot be read.
    """

    allow_missing = True

    def __init__(
        self,
        records: Iterable[Utterance],
        modality: str,
        root: str | Path | None = None,
        dim: int | None = None,
        max_frames: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if max_frames is not None and max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.modality = modality
        self.root = Path(root) if root is not None else None
        self.max_frames = max_frames
        self.dtype = dtype
        self.name = "file"
        self._refs: dict[str, tuple[Path, str | None]] = {}
        for rec in records:
            ref = rec.feature_ref(modality, self.root)
            if ref is not None:
                self._refs[rec.id] = ref
        if dim is None:
            if not self._refs:
                raise FeatureFileError(
                    f"no record has a {modality!r} feature file, so its dimension is unknown; "
                    f"pass dim= (or check the manifest's 'features' field)"
                )
            first = next(iter(self._refs))
            dim = int(self.get(first).shape[-1])
        self.output_dim = int(dim)

    @property
    def ids(self) -> list[str]:
        """Ids that have the modality."""
        return list(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._refs

    def __repr__(self) -> str:
        return f"FileFeatureStore({self.modality!r}, {len(self)} items, dim={getattr(self, 'output_dim', '?')})"

    def get(self, utt_id: str) -> Tensor:
        """The ``(T, D)`` features of ``utt_id``.

        Raises:
            KeyError: ``utt_id`` has no reference for this modality (absent).
            FeatureFileError: The file cannot be read or its array is not ``(T, D)`` / ``(D,)`` with the
                store's ``D`` (the message names id, file and shape).
        """
        try:
            path, key = self._refs[utt_id]
        except KeyError:
            raise KeyError(f"{utt_id!r} has no {self.modality!r} feature file") from None
        where = f"{path}#{key}" if key is not None else str(path)
        try:
            arr = read_feature(path, key)
        except FeatureFileError as e:
            raise FeatureFileError(f"utterance {utt_id!r}, {self.modality}: {e}") from e
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise FeatureFileError(
                f"utterance {utt_id!r}, {self.modality}: {where} holds shape {arr.shape}; expected (T, D) or (D,)"
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise FeatureFileError(f"utterance {utt_id!r}, {self.modality}: {where} is not numeric ({arr.dtype})")
        expected = getattr(self, "output_dim", None)
        if expected is not None and arr.shape[1] != expected:
            raise FeatureFileError(
                f"utterance {utt_id!r}, {self.modality}: {where} has dimension {arr.shape[1]}, expected {expected}"
            )
        if self.max_frames is not None:
            arr = arr[: self.max_frames]
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.dtype)
        if not bool(torch.isfinite(x).all()):
            raise FeatureFileError(f"utterance {utt_id!r}, {self.modality}: {where} contains NaN or inf")
        return x

    def missing_file(self, utt_id: str) -> Path | None:
        """The feature file of ``utt_id`` when it does not exist (``None``: present, or the modality is absent)."""
        ref = self._refs.get(utt_id)
        return ref[0] if ref is not None and not ref[0].is_file() else None

    def num_frames(self, utt_id: str) -> int:
        """Frames of ``utt_id`` after ``max_frames`` (reads the file)."""
        return int(self.get(utt_id).shape[0])
