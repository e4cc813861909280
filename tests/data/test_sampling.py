from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from emofuse.data.sampling import BATCH_FRAME_GRID, DynamicBatchSampler, FixedBatchSampler


@pytest.fixture
def lengths():
    rng = np.random.default_rng(0)
    return rng.integers(16_000, 16_000 * 12, size=300).tolist()  # 1-12 s at 16 kHz


def test_grid():
    assert BATCH_FRAME_GRID == (320_000, 640_000, 1_280_000)


@pytest.mark.parametrize("max_samples", BATCH_FRAME_GRID)
@pytest.mark.parametrize("shuffle", [True, False])
def test_budget_respected_and_each_index_once(lengths, max_samples, shuffle):
    s = DynamicBatchSampler(lengths, max_samples=max_samples, shuffle=shuffle, bucket_size=50)
    batches = list(s)
    assert len(batches) == len(s)
    counts = Counter(i for b in batches for i in b)
    assert sorted(counts) == list(range(len(lengths))) and set(counts.values()) == {1}
    for b in batches:
        assert sum(lengths[i] for i in b) <= max_samples


def test_greedy_fill(lengths):
    # with shuffle=False, batches are greedy in length order: adding the next item would overflow
    s = DynamicBatchSampler(lengths, max_samples=320_000, shuffle=False)
    batches = list(s)
    for b, nxt in zip(batches[:-1], batches[1:], strict=True):
        assert sum(lengths[i] for i in b) + lengths[nxt[0]] > 320_000
    sorted_lengths = [lengths[i] for b in batches for i in b]
    assert sorted_lengths == sorted(lengths)


def test_long_utterance_is_alone():
    lens = [100, 5000, 200, 300, 50, 7000]
    batches = list(DynamicBatchSampler(lens, max_samples=1000, seed=3))
    assert [5] in batches and [1] in batches
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_deterministic_and_epoch_reshuffle(lengths):
    a = DynamicBatchSampler(lengths, 640_000, seed=7, bucket_size=60)
    b = DynamicBatchSampler(lengths, 640_000, seed=7, bucket_size=60)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second
    a.set_epoch(0)
    assert list(a) == first
    c = DynamicBatchSampler(lengths, 640_000, seed=8, bucket_size=60)
    assert list(c) != first


def test_max_items(lengths):
    s = DynamicBatchSampler(lengths, 1_280_000, max_items=3)
    assert max(len(b) for b in s) <= 3


@pytest.mark.parametrize("num_replicas", [2, 3, 4])
def test_ddp_equal_counts_and_disjoint(lengths, num_replicas):
    samplers = [
        DynamicBatchSampler(lengths, 320_000, seed=1, num_replicas=num_replicas, rank=r) for r in range(num_replicas)
    ]
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1
    assert all(len(s) == len(p) for s, p in zip(samplers, per_rank, strict=True))
    global_batches = samplers[0].global_batches()
    n_real = len(global_batches)
    seen = Counter(i for p in per_rank for b in p for i in b)
    assert set(seen) == set(range(len(lengths)))  # every utterance is seen
    # the first n_real interleaved batches are the global list: disjoint across ranks
    interleaved = [per_rank[k % num_replicas][k // num_replicas] for k in range(len(per_rank[0]) * num_replicas)]
    assert interleaved[:n_real] == global_batches
    real = Counter(i for b in interleaved[:n_real] for i in b)
    assert set(real.values()) == {1}
    # padding only repeats batches
    assert all(b in global_batches for b in interleaved[n_real:])
    assert len(interleaved) - n_real < num_replicas


def test_ddp_drop_last(lengths):
    samplers = [DynamicBatchSampler(lengths, 320_000, num_replicas=3, rank=r, drop_last=True) for r in range(3)]
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1
    seen = Counter(i for p in per_rank for b in p for i in b)
    assert set(seen.values()) == {1}


def test_validation():
    with pytest.raises(ValueError, match="rank"):
        DynamicBatchSampler([1, 2], num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="max_samples"):
        DynamicBatchSampler([1, 2], max_samples=0)
    with pytest.raises(ValueError, match="lengths"):
        DynamicBatchSampler([1, -2])


def test_stats_and_dataloader(lengths):
    s = DynamicBatchSampler(lengths, 640_000)
    st = s.stats()
    assert st["num_batches"] == len(s) and 0 < st["mean_fill"] <= 1
    loader = DataLoader(list(range(len(lengths))), batch_sampler=s, collate_fn=torch.tensor)
    assert sum(len(b) for b in loader) == len(lengths)


def test_fixed_batch_sampler():
    s = FixedBatchSampler(10, 3, shuffle=True, seed=0)
    batches = list(s)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(10))
    s.set_epoch(1)
    assert list(s) != batches
    assert [len(b) for b in FixedBatchSampler(10, 3, drop_last=True)] == [3, 3, 3]
    ranks = [list(FixedBatchSampler(10, 3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert list(FixedBatchSampler([5, 6, 7], 2, shuffle=False)) == [[0, 1], [2]]
