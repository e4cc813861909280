"""LightningDataModule for one fold: records + fold ids + a dataset factory → DDP-aware dataloaders.

Batching follows the data section: dynamic batches by total audio samples
(:class:`~emofuse.data.sampling.DynamicBatchSampler`, CMD's 1.28 M samples) when
``max_batch_samples`` is set and the dataset knows its items' lengths, else fixed-size batches.
The samplers shard batches by the trainer's rank and world size themselves (Lightning's automatic
``DistributedSampler`` is turned off by the engine), give every rank the same number of batches, and
reshuffle per epoch from ``(seed, epoch)`` so a resumed run sees the same order as an uninterrupted one; the
loaders' own random generator (worker seeds) also comes from ``(seed, epoch)``, so building a loader never draws
from the global RNG that dropout uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from emofuse.config.schema import DataConfig
from emofuse.data.manifest import Utterance
from emofuse.data.protocols import Fold
from emofuse.data.sampling import DynamicBatchSampler, FixedBatchSampler

__all__ = ["DatasetFactory", "FoldDataModule", "make_loader"]

#: ``factory(records, split)`` → a dataset whose ``collate`` builds the shared batch dict.
DatasetFactory = Callable[[list[Utterance], str], Dataset]


class _EpochAware(Sampler[list[int]]):
    """Expose a batch sampler as ``.sampler`` so Lightning calls its ``set_epoch`` every epoch.

    ``skip``: leave out the first batches of the first pass (a run resumed mid-epoch); the length stays the epoch's.
    """

    def __init__(self, batch_sampler: Any, skip: int = 0) -> None:
        self.sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class _ResumableLoader(DataLoader):
    """A loader Lightning may resume mid-epoch: the position comes from the checkpoint callback (batches done)."""

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        return None


def make_loader(
    dataset: Dataset,
    data: DataConfig,
    shuffle: bool,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    batch_size: int | None = None,
    epoch: int = 0,
    skip: int = 0,
) -> DataLoader:
    """A dataloader with the configured batch sampler.

    Args:
        dataset: Needs ``collate(items)``; ``lengths()`` enables dynamic batching.
        data: The data section (``max_batch_samples``, ``batch_size``, ``num_workers``).
        shuffle: Shuffle (training) or keep a fixed order (evaluation).
        seed: Sampler seed; with the epoch it fixes the order.
        num_replicas: DDP world size.
        rank: This process' rank.
        batch_size: Force fixed batches of this size (overrides the data section).
        epoch: The epoch whose batches the loader starts with (its length is that epoch's batch count).
        skip: Batches of that epoch already trained (a run resumed mid-epoch); they are not loaded again.
    """
    collate = getattr(dataset, "collate", None)
    if not callable(collate):
        raise TypeError(f"{type(dataset).__name__} has no collate(items) method to build batches")
    lengths = getattr(dataset, "lengths", None)
    sampler: Any
    if batch_size is None and data.max_batch_samples is not None and callable(lengths):
        sampler = DynamicBatchSampler(
            lengths(), data.max_batch_samples, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank
        )
    else:
        sampler = FixedBatchSampler(
            len(dataset),  # type: ignore[arg-type]
            batch_size or data.batch_size,
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
        )
    sampler.set_epoch(epoch)
    return _ResumableLoader(
        dataset,
        batch_sampler=_EpochAware(sampler, skip),
        collate_fn=collate,
        num_workers=data.num_workers,
        persistent_workers=data.num_workers > 0,
        # worker seeds come from (seed, epoch), not the global RNG: building a loader never shifts the training's
        # random stream (dropout), so a run resumed at an epoch boundary draws what an uninterrupted one does
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch),
    )


class FoldDataModule(L.LightningDataModule):
    """Train / val / test dataloaders of one fold.

    Args:
        records: All records of the manifest (only the fold's ids are used).
        fold: The split (utterance ids).
        factory: ``factory(records, split)`` builds a dataset for ``split`` in ``train/val/test``.
        data: The data section.
        seed: Sampler seed (the run's seed).
    """

    def __init__(
        self, records: Sequence[Utterance], fold: Fold, factory: DatasetFactory, data: DataConfig, seed: int = 0
    ) -> None:
        super().__init__()
        by_id = {r.id: r for r in records}
        missing = [i for ids in (fold.train, fold.val, fold.test) for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"fold {fold.name!r} names {len(missing)} ids not in the records, e.g. {missing[:3]}")
        self.fold = fold
        self.split_records = {
            "train": [by_id[i] for i in fold.train],
            "val": [by_id[i] for i in fold.val],
            "test": [by_id[i] for i in fold.test],
        }
        self.factory = factory
        self.data = data
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next training loader of ``epoch`` starts after its first ``batches`` batches (a mid-epoch resume)."""
        self._resume = (epoch, batches)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (built on first use)."""
        if split not in self.datasets:
            self.datasets[split] = self.factory(self.split_records[split], split)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the trainer stage needs."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", ())
        for split in splits or ("train", "val", "test"):
            if self.split_records[split]:
                self.dataset(split)

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # Dynamic batches differ in number from epoch to epoch, while Lightning sizes its epoch (and
        # when it validates) from the loader's length. The engine therefore reloads the training loader
        # every epoch (``reload_dataloaders_every_n_epochs=1``), and each new loader starts at the
        # trainer's current epoch, so its length is the number of batches that epoch really has.
        world, rank = self._replicas()
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        skip = 0
        if shuffle and self._resume is not None and self._resume[0] == epoch:
            skip, self._resume = self._resume[1], None
        return make_loader(self.dataset(split), self.data, shuffle, self.seed, world, rank, epoch=epoch, skip=skip)

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        if not self.split_records["train"]:
            raise ValueError(f"fold {self.fold.name!r} has no training utterances")
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:  # noqa: D102
        return self._loader("val", shuffle=False) if self.split_records["val"] else []

    def test_dataloader(self) -> DataLoader | list[DataLoader]:  # noqa: D102
        return self._loader("test", shuffle=False) if self.split_records["test"] else []
