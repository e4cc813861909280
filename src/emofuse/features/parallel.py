"""Feature extraction split across processes (``emofuse extract --workers N``), into one cache.

Each worker gets a contiguous share of the utterances the cache still lacks, builds its own copy of the encoder
(from an :class:`EncoderSpec`) and runs :func:`~emofuse.features.extract_features` into its own part folder
(``<cache>/.parts/<name>/``), with all of that function's guarantees (atomic shards, resumable, bad items listed).
The parts are then merged into the cache under its lock: every part shard is renamed into the cache folder (one
atomic rename each; the shard headers carry their ids, hashes and encoder key), and a final pass over the whole
manifest writes ``index.json`` and the completed ``meta.json`` — reusing every merged item, so nothing is encoded
twice. A killed run leaves either part shards (merged first by the next run) or cache shards (reused); a reader
never sees a cache marked complete before the merge finished.

Under torchrun / SLURM, where every rank starts at once, :func:`extract_rank_share` splits the same way across the
ranks: each rank encodes its share, rank 0 merges, and no rank waits idle while one encodes the whole manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofuse.data.manifest import Utterance, read_manifest
from emofuse.features.cache import META, FeatureCacheError, FeatureStore, encoder_key, resolve_cache_dir
from emofuse.features.extract import (
    _SHARD_PREFIX,
    _SHARD_SUFFIX,
    _exclusive,
    _input_hash,
    _ItemError,
    _scan_shards,
    _shard_number,
    extract_features,
)
from emofuse.utils.io import atomic_write_json

__all__ = ["EncoderSpec", "extract_parallel", "extract_rank_share", "merge_parts", "split_shares"]

PARTS = ".parts"
_PART_DONE = "PART_DONE"
#: Imported once by the fork server, so each worker starts without re-importing them (missing ones are skipped).
_PRELOAD = ["torch", "transformers", "emofuse.encoders", "emofuse.encoders.hf_speech", "emofuse.encoders.hf_text"]
_PRELOAD += ["emofuse.features.parallel"]


@dataclass(frozen=True)
class EncoderSpec:
    """How to build the encoder in another process (``create_encoder(name, layer=..., ...)``).

    Attributes:
        name: Registered encoder name.
        layer: Hidden layer (``None``: last).
        allow_random: Allow random weights (test encoders; they are seeded, so every process gets the same).
        weights_dir: Explicit weights folder.
        device: Torch device of the workers.
        options: Encoder options.
    """

    name: str
    layer: int | str | None = None
    allow_random: bool = False
    weights_dir: str | None = None
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """The encoder, frozen, on :attr:`device`."""
        from emofuse.encoders import create_encoder

        enc = create_encoder(
            self.name, layer=self.layer, allow_random=self.allow_random, weights_dir=self.weights_dir, **self.options
        )
        return enc.to(self.device)


def split_shares(records: Sequence[Utterance], n: int) -> list[list[Utterance]]:
    """``n`` contiguous shares of ``records`` whose sizes differ by at most one (empty shares dropped)."""
    size, extra = divmod(len(records), n)
    out, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        if end > start:
            out.append(list(records[start:end]))
        start = end
    return out


def _todo(
    records: Iterable[Utterance], modality: str, cache_dir: Path, digest: str, root: Path | None
) -> list[Utterance]:
    """Records the cache does not hold with an unchanged input (bad inputs are left to the final pass)."""
    done = _scan_shards(cache_dir, digest)[1] if cache_dir.is_dir() else {}
    out = []
    for rec in records:
        try:
            h = _input_hash(rec, modality, root)
        except _ItemError:
            continue  # the final pass records why it fails
        if rec.id not in done or done[rec.id][3] != h:
            out.append(rec)
    return out


def merge_parts(cache_dir: Path, digest: str) -> int:
    """Move every finished part shard under ``cache_dir/.parts`` into ``cache_dir`` (atomic renames); the count.

    Raises:
        FeatureCacheError: A part was written under another encoder key (the workers' encoder differed).
    """
    parts = cache_dir / PARTS
    if not parts.is_dir():
        return 0
    moved = 0
    with _exclusive(cache_dir):
        _, _, next_no = _scan_shards(cache_dir, digest)
        for meta in sorted(parts.glob(f"*/*/{META}")):  # .parts/<worker>/<encoder slug>/meta.json
            folder = meta.parent
            shards = sorted(
                (n, p) for p in folder.glob(f"{_SHARD_PREFIX}*{_SHARD_SUFFIX}") if (n := _shard_number(p)) is not None
            )
            _scan_shards(folder, digest)  # raises when the part's key differs
            for _, shard in shards:
                os.replace(shard, cache_dir / f"{_SHARD_PREFIX}{next_no:05d}{_SHARD_SUFFIX}")
                next_no += 1
                moved += 1
        shutil.rmtree(parts)
    return moved


def _worker(spec: EncoderSpec, records: list[dict[str, Any]], part: str, opts: dict[str, Any]) -> dict[str, Any]:
    """One process's share: build the encoder, extract into its part folder; its counts and key digest."""
    import torch

    torch.set_num_threads(max(1, int(opts.pop("threads"))))
    enc = spec.build()
    recs = [Utterance.model_validate(r) for r in records]
    store = extract_features(recs, enc, part, progress=False, **opts)
    return {"digest": store.meta["key"], "counts": store.meta["counts"], "path": str(store.path)}


def extract_parallel(
    manifest_or_records: str | Path | Sequence[Utterance],
    spec: EncoderSpec,
    out_dir: str | Path,
    workers: int = 2,
    *,
    encoder: Any | None = None,
    batch_size: int = 8,
    shard_size: int = 256,
    root: str | Path | None = None,
    max_duration: float | None = None,
    dtype: str = "float16",
    progress: bool = False,
) -> FeatureStore:
    """Extract with ``workers`` processes, each writing its own shards, merged into one cache.

    Args:
        manifest_or_records: A manifest file or the records.
        spec: How each worker builds the encoder.
        out_dir: Feature root (or the cache folder), as for :func:`~emofuse.features.extract_features`.
        workers: Processes (1: extract in this process).
        encoder: The encoder already built here (default: built from ``spec``); gives the cache key.
        batch_size: Utterances per encoder call.
        shard_size: Utterances per shard file.
        root: Folder relative audio paths resolve against (default: the manifest's folder).
        max_duration: Cut audio to at most this many seconds.
        dtype: Storage dtype.
        progress: Progress bar of the final pass.

    Returns:
        The finished cache; ``meta["counts"]["computed"]`` counts what the workers encoded, ``meta["workers"]``
        their number.

    Raises:
        FeatureCacheError: The workers' encoder differs from this one (e.g. unseeded random weights), or the
            cache folder belongs to another encoder key.
        ValueError: ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    base: Path | None
    if isinstance(manifest_or_records, (str, Path)):
        records = read_manifest(manifest_or_records)
        base = Path(root) if root is not None else Path(manifest_or_records).parent
    else:
        records = list(manifest_or_records)
        base = Path(root) if root is not None else None
    enc = encoder if encoder is not None else spec.build()
    key = encoder_key(enc, spec.layer, max_duration, dtype)
    cache_dir = resolve_cache_dir(out_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    merge_parts(cache_dir, key.digest)  # shards a killed run left in its parts
    opts: dict[str, Any] = {"batch_size": batch_size, "shard_size": shard_size, "max_duration": max_duration}
    opts["dtype"] = dtype
    todo = _todo(records, key.modality, cache_dir, key.digest, base)
    shares = split_shares(todo, workers) if workers > 1 else []
    started = time.perf_counter()
    computed = 0
    if len(shares) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // len(shares))
        payloads = [[r.model_dump(mode="json") for r in share] for share in shares]
        if base is not None:  # workers resolve relative audio paths against the same folder
            payloads = [[{**r, "audio": _absolute(r.get("audio"), base)} for r in p] for p in payloads]
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        if ctx.get_start_method() == "forkserver":  # import torch once in the server; workers fork from it
            ctx.set_forkserver_preload(_PRELOAD)
        with ProcessPoolExecutor(len(shares), mp_context=ctx) as pool:
            futures = [
                pool.submit(_worker, spec, p, str(cache_dir / PARTS / f"w{k}"), {**opts, "threads": threads})
                for k, p in enumerate(payloads)
            ]
            results = [f.result() for f in futures]
        bad = [r["path"] for r in results if r["digest"] != key.digest]
        if bad:
            raise FeatureCacheError(
                f"{cache_dir}: the workers' {spec.name!r} has other weights than this process ({bad[0]}); "
                "random weights must be seeded, or extract with --workers 1"
            )
        computed = sum(int(r["counts"]["computed"]) for r in results)
        merge_parts(cache_dir, key.digest)
    store = extract_features(records, enc, out_dir, root=base, progress=progress, **opts)  # index + meta
    meta = dict(store.meta)
    counts = dict(meta["counts"])
    counts["computed"] = int(counts["computed"]) + computed
    counts["reused"] = max(0, int(counts["reused"]) - computed)
    meta.update(counts=counts, workers=max(1, len(shares)))
    meta["run"] = {**meta.get("run", {}), "seconds": round(time.perf_counter() - started, 3)}
    atomic_write_json(cache_dir / META, meta)
    return FeatureStore(cache_dir, expected=key)


def _absolute(audio: str | None, base: Path) -> str | None:
    if audio is None or Path(audio).is_absolute():
        return audio
    return str((base / audio).resolve())


def _share_token(share: Sequence[Utterance]) -> str:
    import hashlib

    return hashlib.sha256("\0".join(r.id for r in share).encode("utf-8")).hexdigest()[:16]


def _share_done(cache_dir: Path, rank: int, token: str) -> bool:
    marker = cache_dir / PARTS / f"{_PART_DONE}.{rank}"
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("token") == token
    except (OSError, ValueError):
        return False


def extract_rank_share(
    records: Sequence[Utterance],
    encoder: Any,
    out_dir: str | Path,
    rank: int,
    world_size: int,
    *,
    root: str | Path | None = None,
    wait_s: float = 24 * 3600.0,
    poll_s: float = 2.0,
    **opts: Any,
) -> FeatureStore:
    """Distributed extraction: every rank encodes its share, rank 0 merges (no rank idles while one encodes all).

    Rank ``r`` extracts the ``r``-th contiguous share of the utterances the cache lacks into ``.parts/rank<r>`` and
    marks it done (the marker names the share, so a marker of another run's share is never taken for this one);
    rank 0 waits for every share, merges them (:func:`merge_parts`) and writes the index; the other ranks return
    once the cache holds every utterance.

    Args:
        records: Every utterance to extract (the same list, in the same order, on every rank).
        encoder: This rank's copy of the encoder (the same weights on every rank).
        out_dir: Feature root (or the cache folder).
        rank: This rank.
        world_size: Ranks taking part.
        root: Folder relative audio paths resolve against.
        wait_s: Give up waiting for the other ranks after this many seconds.
        poll_s: Seconds between checks.
        **opts: ``extract_features`` options (``batch_size``, ``max_duration``, ``dtype``, ...).

    Raises:
        FeatureCacheError: The other ranks (or rank 0's merge) did not finish within ``wait_s``.
    """
    layer, max_duration, dtype = opts.get("layer"), opts.get("max_duration"), opts.get("dtype", "float16")
    key = encoder_key(encoder, layer, max_duration, dtype)
    cache_dir = resolve_cache_dir(out_dir, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = Path(root) if root is not None else None
    todo = _todo(records, key.modality, cache_dir, key.digest, base)
    shares = split_shares(todo, world_size)
    shares += [[] for _ in range(world_size - len(shares))]
    tokens = [_share_token(s) for s in shares]
    if shares[rank] and not _share_done(cache_dir, rank, tokens[rank]):
        part = cache_dir / PARTS / f"rank{rank}"
        extract_features(shares[rank], encoder, part, root=base, progress=False, **opts)
    atomic_write_json(cache_dir / PARTS / f"{_PART_DONE}.{rank}", {"rank": rank, "token": tokens[rank]})
    deadline = time.monotonic() + wait_s
    if rank == 0:
        while not all(_share_done(cache_dir, r, tokens[r]) for r in range(world_size)):
            if time.monotonic() > deadline:
                raise FeatureCacheError(f"{cache_dir}: the other ranks did not finish their shares in {wait_s:.0f} s")
            time.sleep(poll_s)
        merge_parts(cache_dir, key.digest)
        return extract_features(list(records), encoder, out_dir, root=base, progress=False, **opts)
    while True:
        try:
            store = FeatureStore(cache_dir, expected=key)
            if all(r.id in store or r.id in store.failed for r in records):
                return store
        except FeatureCacheError:
            pass
        if time.monotonic() > deadline:
            raise FeatureCacheError(f"{cache_dir}: rank 0 did not complete the cache in {wait_s:.0f} s")
        time.sleep(poll_s)
