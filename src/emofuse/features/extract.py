"""Compute encoder features for a manifest once, streaming, into a resumable sharded cache.

:func:`extract_features` walks the manifest in batches and never holds more than one shard of
features: a shard (``shard_size`` utterances, fp16 safetensors) is written atomically (temporary
file, fsync, rename) as soon as it fills. Each shard's header lists its utterance ids and input
hashes, so a killed run is resumed by reading those headers: utterances already in a finished
shard, with an unchanged input, are not recomputed. ``index.json`` and the final ``meta.json``
are written (atomically) when the run ends. Bad items (undecodable audio, empty transcripts,
encoder errors on one item) are counted, listed in ``meta.json`` under ``failed`` and skipped.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emofuse import __version__
from emofuse.data.audio import SAMPLE_RATE, AudioError, load_audio
from emofuse.data.manifest import ManifestError, Utterance, iter_manifest
from emofuse.encoders.base import Encoder
from emofuse.features.cache import (
    _DTYPES,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    META,
    EncoderKey,
    FeatureCacheError,
    FeatureStore,
    encoder_key,
    resolve_cache_dir,
)
from emofuse.utils.io import atomic_write, atomic_write_json
from emofuse.utils.progress import track

__all__ = ["ShardCallback", "extract_features"]

log = logging.getLogger(__name__)

#: Called after each shard is written, with its path and the utterance ids it holds.
ShardCallback = Callable[[Path, list[str]], None]
_SHARD_PREFIX = "shard-"
_SHARD_SUFFIX = ".safetensors"


class _ItemError(Exception):
    """One utterance cannot be encoded; the message is the reason stored in ``meta.json``."""


def _input_hash(rec: Utterance, modality: str, root: Path | None) -> str:
    """Content hash of an utterance's input, without decoding it."""
    if modality == "text":
        if not rec.text.strip():
            raise _ItemError("empty transcript")
        return hashlib.sha256(b"text\0" + rec.text.encode("utf-8")).hexdigest()[:24]
    path = rec.audio_path(root)
    if path is None:
        raise _ItemError("no audio path in the record")
    try:
        st = path.stat()
    except OSError:
        raise _ItemError(f"audio file not found: {path}") from None
    blob = f"audio\0{path.resolve()}\0{rec.start}\0{rec.end}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _load_input(rec: Utterance, modality: str, root: Path | None, max_duration: float | None) -> Any:
    if modality == "text":
        return rec.text
    try:
        wav = load_audio(rec.audio_path(root), start=rec.start, end=rec.end)  # type: ignore[arg-type]
    except AudioError as e:
        raise _ItemError(str(e)) from None
    if max_duration is not None:
        wav = wav[: int(round(max_duration * SAMPLE_RATE))]
    return wav


def _shard_number(p: Path) -> int | None:
    stem = p.name[len(_SHARD_PREFIX) : -len(_SHARD_SUFFIX)]
    return int(stem) if stem.isdigit() else None


def _scan_shards(cache_dir: Path, digest: str) -> tuple[list[str], dict[str, list[Any]], int]:
    """Read the headers of finished shards; a shard that cannot be read or holds NaN / inf is set aside.

    Returns:
        Shard file names, ``{id: [shard position, tensor key, frames, input hash]}`` (later shards
        win) and the next free shard number.
    """
    from safetensors import safe_open

    files = [(n, p) for p in cache_dir.glob(f"{_SHARD_PREFIX}*{_SHARD_SUFFIX}") if (n := _shard_number(p)) is not None]
    names: list[str] = []
    entries: dict[str, list[Any]] = {}
    next_no = 0
    for n, p in sorted(files):
        next_no = n + 1
        try:
            with safe_open(str(p), framework="pt") as f:
                md = f.metadata() or {}
                ids, hashes, frames = (json.loads(md[k]) for k in ("ids", "hashes", "frames"))
                bad = next((k for k in f.keys() if not bool(torch.isfinite(f.get_tensor(k)).all())), None)
            if bad is not None:
                raise ValueError(f"tensor {bad!r} holds NaN or infinite values")
        except Exception as e:  # noqa: BLE001 - any unreadable or non-finite shard is set aside and recomputed
            log.warning("setting aside unusable shard %s (%s); its utterances are recomputed", p, e)
            os.replace(p, p.with_name(p.name + ".corrupt"))
            continue
        if md.get("key") != digest:
            raise FeatureCacheError(f"{p} was written under another encoder key; remove it or use a fresh folder")
        pos = len(names)
        names.append(p.name)
        for i, (utt, h, t) in enumerate(zip(ids, hashes, frames, strict=True)):
            entries[utt] = [pos, str(i), int(t), h]
    return names, entries, next_no


@contextlib.contextmanager
def _exclusive(cache_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on the folder while extracting (released when the process dies)."""
    with open(cache_dir / ".lock", "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locking
            yield
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FeatureCacheError(f"another extraction is writing to {cache_dir}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _ShardWriter:
    """Buffers at most one shard of features and writes it atomically when full."""

    def __init__(
        self, cache_dir: Path, digest: str, dtype: torch.dtype, first_no: int, shard_size: int, max_bytes: int
    ) -> None:
        self.cache_dir, self.digest, self.dtype = cache_dir, digest, dtype
        self.next_no, self.shard_size, self.max_bytes = first_no, shard_size, max_bytes
        self.buffer: list[tuple[str, str, Tensor, Tensor]] = []
        self.nbytes = 0

    def add(self, utt: str, input_hash: str, hidden: Tensor, pooled: Tensor) -> tuple[Path, list[str]] | None:
        self.buffer.append((utt, input_hash, hidden, pooled))
        self.nbytes += hidden.numel() * hidden.element_size()
        if len(self.buffer) >= self.shard_size or self.nbytes >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> tuple[Path, list[str]] | None:
        if not self.buffer:
            return None
        from safetensors.torch import save_file

        tensors: dict[str, Tensor] = {}
        for i, (_, _, h, p) in enumerate(self.buffer):
            tensors[str(i)] = h.contiguous()
            tensors[f"{i}.pooled"] = p.contiguous()
        metadata = {
            "format": FORMAT,
            "key": self.digest,
            "ids": json.dumps([b[0] for b in self.buffer], ensure_ascii=False),
            "hashes": json.dumps([b[1] for b in self.buffer]),
            "frames": json.dumps([int(b[2].shape[0]) for b in self.buffer]),
        }
        path = self.cache_dir / f"{_SHARD_PREFIX}{self.next_no:05d}{_SHARD_SUFFIX}"
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        ids = [b[0] for b in self.buffer]
        self.next_no += 1
        self.buffer, self.nbytes = [], 0
        return path, ids


def _encode(encoder: Encoder, inputs: list[Any], dtype: torch.dtype) -> list[tuple[Tensor, Tensor] | str]:
    """Encode one batch; per item either ``(hidden (T, D), pooled (D,))`` in ``dtype`` or a failure reason."""
    with torch.inference_mode():
        out = encoder.encode(inputs)
    results: list[tuple[Tensor, Tensor] | str] = []
    for i in range(len(inputs)):
        h = out.hidden[i][out.mask[i].bool()].detach().to("cpu", torch.float32)  # (T, D)
        p = out.pooled[i].detach().to("cpu", torch.float32)  # (D,)
        if h.shape[0] == 0:
            results.append("the encoder produced no frames (input too short?)")
        elif not (torch.isfinite(h).all() and torch.isfinite(p).all()):
            results.append("the encoder produced NaN or infinite values")
        else:
            h16, p16 = h.to(dtype), p.to(dtype)
            if not (torch.isfinite(h16).all() and torch.isfinite(p16).all()):
                peak = float(max(h.abs().max(), p.abs().max()))
                name = str(dtype).removeprefix("torch.")
                results.append(f"values exceed the {name} range (max |x| = {peak:.3g}); extract with dtype float32")
            else:
                results.append((h16, p16))
    return results


def _records(
    source: str | Path | Iterable[Utterance], root: str | Path | None
) -> tuple[Iterable[Utterance], Path | None, int | None]:
    """Records to extract, the folder relative audio paths resolve against, and their count if known."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        try:  # the count is the progress bar's total
            with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
                total = sum(1 for line in fh if line.strip())
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ManifestError(f"{path}: damaged gzip file ({type(e).__name__}: {e})") from None
        records = iter_manifest(path)  # streamed and validated while extracting
        return records, Path(root) if root is not None else path.parent, total
    size = len(source) if isinstance(source, Sized) else None
    return source, Path(root) if root is not None else None, size


def _meta(key: EncoderKey, status: str, shard_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "status": status,
        "key": key.digest,
        "encoder": key.to_dict(),
        "dtype": key.preprocessing["dtype"],
        "shard_size": shard_size,
        "index": INDEX,
        "emofuse_version": __version__,
        **extra,
    }


class _Extraction:
    """State of one extraction run into one cache folder (the caller holds its lock)."""

    def __init__(self, encoder: Encoder, key: EncoderKey, cache_dir: Path, shard_size: int, max_bytes: int) -> None:
        self.encoder, self.key, self.cache_dir, self.shard_size = encoder, key, cache_dir, shard_size
        for stale in cache_dir.glob(f".{_SHARD_PREFIX}*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        atomic_write_json(cache_dir / META, _meta(key, "running", shard_size))
        self.shards, self.done, next_no = _scan_shards(cache_dir, key.digest)
        dtype = _DTYPES[key.preprocessing["dtype"]]
        self.writer = _ShardWriter(cache_dir, key.digest, dtype, next_no, shard_size, max_bytes)
        self.items: dict[str, list[Any]] = {}  # final index in manifest order: [shard, tensor key, frames, hash]
        self.failed: dict[str, str] = {}
        self.counts = {"total": 0, "computed": 0, "reused": 0, "failed": 0}
        self.any_success = False
        self.on_shard_written: ShardCallback | None = None
        self.source = "records"  # the manifest, for messages

    def fail(self, utt: str, reason: str) -> None:
        self.failed[utt] = reason
        self.counts["failed"] += 1

    def flushed(self, written: tuple[Path, list[str]] | None) -> None:
        if written is None:
            return
        path, ids = written
        self.shards.append(path.name)
        for i, utt in enumerate(ids):
            self.items[utt][:2] = [len(self.shards) - 1, str(i)]
        if self.on_shard_written is not None:
            self.on_shard_written(path, ids)

    def encode_batch(self, batch: list[tuple[str, str, Any]]) -> None:
        inputs = [b[2] for b in batch]
        try:
            results = _encode(self.encoder, inputs, self.writer.dtype)
        except Exception:  # noqa: BLE001 - isolate the bad item(s): encode one at a time
            results, errors = [], []
            for x in inputs:
                try:
                    results += _encode(self.encoder, [x], self.writer.dtype)
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                    results.append(f"encoder error: {type(e).__name__}: {e}")
            if len(errors) == len(inputs) and not self.any_success:
                raise errors[0] from None  # nothing has ever encoded: a broken encoder, not a bad item
        for (utt, h_in, _), res in zip(batch, results, strict=True):
            if isinstance(res, str):
                self.fail(utt, res)
                continue
            self.any_success = True
            self.counts["computed"] += 1
            self.items[utt] = [-1, "", int(res[0].shape[0]), h_in]
            self.flushed(self.writer.add(utt, h_in, *res))

    def run(self, records: Iterable[Utterance], base: Path | None, total: int | None, opts: dict[str, Any]) -> None:
        modality, batch_size = self.key.modality, opts["batch_size"]
        batch: list[tuple[str, str, Any]] = []
        for rec in track(records, f"extract {self.key.name}", total=total, disable=not opts["progress"]):
            if rec.id in self.items or rec.id in self.failed or any(b[0] == rec.id for b in batch):
                raise ValueError(f"{self.source}: duplicate utterance id {rec.id!r} in the manifest")
            self.counts["total"] += 1
            try:
                h_in = _input_hash(rec, modality, base)
                prev = self.done.get(rec.id)
                if prev is not None and prev[3] == h_in:
                    self.items[rec.id] = prev
                    self.counts["reused"] += 1
                    continue
                batch.append((rec.id, h_in, _load_input(rec, modality, base, opts["max_duration"])))
            except _ItemError as e:
                self.fail(rec.id, str(e))
                continue
            if len(batch) >= batch_size:
                self.encode_batch(batch)
                batch = []
        if batch:
            self.encode_batch(batch)
        self.flushed(self.writer.flush())

    def finish(self, seconds: float) -> None:
        if self.failed:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:3])
            more = " ..." if len(self.failed) > 3 else ""
            log.warning("%d of %d utterances skipped (%s%s)", len(self.failed), self.counts["total"], shown, more)
        index = {"shards": self.shards, "items": self.items}
        atomic_write(self.cache_dir / INDEX, json.dumps(index, ensure_ascii=False, separators=(",", ":")) + "\n")
        run = {"seconds": round(seconds, 3), "device": str(self.encoder.device)}
        done = {"items": len(self.items), "counts": self.counts, "failed": self.failed, "run": run}
        meta = _meta(self.key, "complete", self.shard_size, **done)
        atomic_write_json(self.cache_dir / META, meta)


def extract_features(
    manifest_or_records: str | Path | Iterable[Utterance],
    encoder: Encoder,
    out_dir: str | Path,
    layer: int | str | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    progress: bool = True,
    *,
    root: str | Path | None = None,
    max_duration: float | None = None,
    dtype: str = "float16",
    max_shard_bytes: int = 1 << 30,
    on_shard_written: ShardCallback | None = None,
) -> FeatureStore:
    """Compute and cache frame/token-level features of every utterance (resumable, streaming).

    Args:
        manifest_or_records: A JSONL(.gz) manifest (streamed), or any iterable of records (a
            generator is consumed lazily).
        encoder: The encoder (its ``modality`` picks the input: audio file or transcript).
        out_dir: Root shared by several encoders (features go to ``out_dir/<encoder-slug>-<key12>/``),
            or an existing cache folder of the same encoder key.
        layer: Layer the encoder was built with (recorded in the key; defaults to ``encoder.layer``).
        batch_size: Utterances per encoder call.
        shard_size: Utterances per shard file.
        progress: Show a progress bar.
        root: Folder relative audio paths resolve against (default: the manifest's folder, or the
            working directory for records).
        max_duration: Cut audio to at most this many seconds (part of the key).
        dtype: Storage dtype, ``float16`` or ``float32`` (part of the key).
        max_shard_bytes: Also close a shard once its features reach this size.
        on_shard_written: Called with ``(shard path, ids)`` after each shard is written.

    Returns:
        The finished :class:`FeatureStore`; ``store.meta["counts"]`` says how many utterances were
        computed, reused from an earlier run, and failed (``store.failed`` says why).

    Raises:
        FeatureCacheError: ``out_dir`` is a cache folder of another encoder key, or another process
            is extracting into the same folder.
        ValueError: Duplicate utterance ids, or a bad argument.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if max_duration is not None and not (math.isfinite(max_duration) and max_duration > 0):
        raise ValueError(f"max_duration must be a positive number of seconds or None, got {max_duration}")
    started = time.perf_counter()
    key = encoder_key(encoder, layer, max_duration, dtype)
    cache_dir = resolve_cache_dir(out_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    records, base, total = _records(manifest_or_records, root)
    with _exclusive(cache_dir):
        job = _Extraction(encoder, key, cache_dir, shard_size, max_shard_bytes)
        job.on_shard_written = on_shard_written
        job.source = str(manifest_or_records) if isinstance(manifest_or_records, (str, Path)) else "records"
        opts = {"batch_size": batch_size, "progress": progress, "max_duration": max_duration}
        job.run(records, base, total, opts)
        job.finish(time.perf_counter() - started)
    return FeatureStore(cache_dir, expected=key)
