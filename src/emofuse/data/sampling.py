"""Batch samplers: dynamic batching by total audio samples (CMD, spec ``cmd.md`` §3.4 and §3.7).

Kim & Kang (2022) fill a batch "until the accumulated count of raw audio samples reaches the batch
frames limit" (grid 320,000 / 640,000 / 1,280,000 samples = 20 / 40 / 80 s at 16 kHz; 1.28 M
selected for every dataset); the matching transcripts go into the same batch. The paper gives no
further detail; :class:`DynamicBatchSampler` implements the spec's [R] reading (§3.7, ambiguity A20):

1. sort utterances by length and cut the sorted order into buckets of ``bucket_size`` utterances;
2. each epoch, shuffle the utterances inside every bucket (seeded by ``seed`` and the epoch);
3. inside each bucket, greedily add utterances while the **unpadded** sum of lengths stays
   ``≤ max_samples``; an utterance longer than ``max_samples`` is a batch on its own;
4. shuffle the order of all batches.

Both samplers are batch samplers (``batch_sampler=``) for :class:`torch.utils.data.DataLoader`, deterministic for a
given ``seed`` and epoch (call :meth:`set_epoch` every epoch, as with ``DistributedSampler``).

Example:
    >>> s = DynamicBatchSampler([100, 300, 200, 900, 50], max_samples=400, shuffle=False)
    >>> list(s)
    [[4, 0, 2], [1], [3]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BATCH_FRAME_GRID", "DEFAULT_MAX_SAMPLES", "DynamicBatchSampler", "FixedBatchSampler"]

#: The paper's grid of batch sizes in raw 16 kHz audio samples (20 s, 40 s, 80 s).
BATCH_FRAME_GRID = (320_000, 640_000, 1_280_000)
#: The selected value for all datasets (80 s of audio).
DEFAULT_MAX_SAMPLES = 1_280_000


def _check_replicas(num_replicas: int, rank: int) -> None:
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")


def _shard(batches: list[list[int]], num_replicas: int, rank: int, drop_last: bool) -> list[list[int]]:
    """Give every rank the same number of batches: pad by repeating batches (or drop the remainder)."""
    if num_replicas == 1:
        return batches
    if drop_last:
        batches = batches[: len(batches) - len(batches) % num_replicas]
    elif batches and len(batches) % num_replicas:
        extra = num_replicas - len(batches) % num_replicas
        batches = batches + [batches[i % len(batches)] for i in range(extra)]
    return batches[rank::num_replicas]


class DynamicBatchSampler(Sampler[list[int]]):
    """Batches whose summed (unpadded) lengths stay within a budget of audio samples.

    Args:
        lengths: Length of every dataset item, in audio samples (from
            :meth:`emofuse.pipeline.MultimodalDataset.lengths`).
        max_samples: Budget per batch (default 1,280,000 = 80 s at 16 kHz; see :data:`BATCH_FRAME_GRID`).
        shuffle: Shuffle within buckets and the batch order each epoch. ``False`` gives fixed batches in
            length order (use for validation: the contrastive loss depends on the batch composition).
        seed: Base seed; the epoch's permutation is a function of ``(seed, epoch)`` only.
        bucket_size: Utterances per length bucket. Small buckets mean less padding but less
            randomness in who shares a batch (the negatives of NT-Xent).
        drop_last: With several replicas, drop the batches that do not divide evenly instead of
            padding (no effect with one replica; batches are never partial in a meaningful sense).
        num_replicas: Number of DDP processes.
        rank: This process' rank.
        max_items: Optional cap on utterances per batch.

    Every rank gets the same number of batches, as DDP requires (otherwise the ranks deadlock on the
    last all-reduce): the global batch list is padded by repeating its first batches until its length
    divides ``num_replicas`` and rank ``r`` takes batches ``r, r + R, r + 2R, ...``. Within one epoch
    the ranks therefore see disjoint utterances, except for those repeated batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_samples: int = DEFAULT_MAX_SAMPLES,
        shuffle: bool = True,
        seed: int = 0,
        bucket_size: int = 200,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        max_items: int | None = None,
    ) -> None:
        if max_samples <= 0:
            raise ValueError(f"max_samples must be > 0, got {max_samples}")
        if bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
        _check_replicas(num_replicas, rank)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if (self.lengths < 0).any():
            raise ValueError(f"lengths must be >= 0; item {int(np.argmin(self.lengths))} is {int(self.lengths.min())}")
        self.max_samples = int(max_samples)
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_size = bucket_size
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_items = max_items
        self.epoch = 0
        self._order = np.argsort(self.lengths, kind="stable")  # ties broken by index: deterministic
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = epoch

    def _pack(self, indices: Sequence[int] | np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        cur: list[int] = []
        total = 0
        for i in indices:
            n = int(self.lengths[i])
            full = self.max_items is not None and len(cur) >= self.max_items
            if cur and (total + n > self.max_samples or full):
                batches.append(cur)
                cur, total = [], 0
            cur.append(int(i))
            total += n
        if cur:
            batches.append(cur)
        return batches

    def global_batches(self) -> list[list[int]]:
        """All batches of the current epoch, before sharding across replicas."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        if not self.shuffle:
            batches = self._pack(self._order)
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            batches = []
            for start in range(0, len(self._order), self.bucket_size):
                bucket = self._order[start : start + self.bucket_size].copy()
                rng.shuffle(bucket)
                batches.extend(self._pack(bucket))
            perm = rng.permutation(len(batches))
            batches = [batches[j] for j in perm]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from _shard(self.global_batches(), self.num_replicas, self.rank, self.drop_last)

    def __len__(self) -> int:
        return len(_shard(self.global_batches(), self.num_replicas, self.rank, self.drop_last))

    def stats(self) -> dict[str, float]:
        """Fill statistics of this epoch's batches: count, mean items and mean fill of the budget."""
        batches = self.global_batches()
        sums = [int(self.lengths[b].sum()) for b in batches]
        return {
            "num_batches": float(len(batches)),
            "mean_items": float(np.mean([len(b) for b in batches])) if batches else 0.0,
            "mean_fill": float(np.mean(sums) / self.max_samples) if batches else 0.0,
            "oversize": float(sum(s > self.max_samples for s in sums)),
        }


class FixedBatchSampler(Sampler[list[int]]):
    """Fixed-size batches (fallback when no lengths are known, or for baselines with a batch size).

    Args:
        num_items: Dataset size (or a sequence of lengths, whose ``len`` is used).
        batch_size: Items per batch.
        shuffle: Shuffle the items each epoch (seeded by ``seed`` and the epoch).
        seed: Base seed.
        drop_last: Drop the last incomplete batch; with several replicas also drop the batches that do
            not divide evenly (otherwise they are padded by repetition, as in :class:`DynamicBatchSampler`).
        num_replicas: Number of DDP processes.
        rank: This process' rank.
    """

    def __init__(
        self,
        num_items: int | Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_replicas(num_replicas, rank)
        self.num_items = num_items if isinstance(num_items, int) else len(num_items)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """All batches of the current epoch, before sharding across replicas."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, self.num_items, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from _shard(self.global_batches(), self.num_replicas, self.rank, self.drop_last)

    def __len__(self) -> int:
        return len(_shard(self.global_batches(), self.num_replicas, self.rank, self.drop_last))
