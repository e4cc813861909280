"""Extraction across 2 processes into one cache: same features as one process, merged atomically, resumable."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from emofuse.data.manifest import write_manifest
from emofuse.features import FeatureStore, extract_features
from emofuse.features.parallel import PARTS, EncoderSpec, extract_parallel, extract_rank_share, split_shares
from emofuse.testing.dummies import make_wav_corpus

pytestmark = pytest.mark.slow


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


def test_split_shares_is_contiguous_and_balanced():
    shares = split_shares(list(range(7)), 3)
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_shares([1], 4) == [[1]]


def test_two_processes_write_one_cache_equal_to_one_process(tmp_path):
    from typer.testing import CliRunner

    from emofuse.cli.main import app

    records = make_wav_corpus(tmp_path / "corpus", 10, seconds=0.3)
    manifest = write_manifest(records, tmp_path / "corpus" / "manifest.jsonl", overwrite=True)
    spec = EncoderSpec("tiny-wav2vec2", allow_random=True)
    enc = quiet(spec.build)
    one = quiet(extract_features, manifest, enc, tmp_path / "one", batch_size=1, progress=False)
    args = ["extract", str(manifest), "-e", "tiny-wav2vec2", "--allow-random", "--out", str(tmp_path / "two"),
            "--workers", "2", "--batch-size", "1", "--shard-size", "3", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["workers"] == 2 and summary["counts"]["computed"] == 10 and summary["items"] == 10
    two = FeatureStore.for_encoder(tmp_path / "two", enc)
    assert two.meta["status"] == "complete" and not (two.path / PARTS).exists()  # parts merged and removed
    assert len(two.shards) == 4  # each worker's 5 items in shards of 3: 2 + 2 shard files
    # the same encoder in each process: the same features, up to float summation order (a worker runs on one
    # thread, this process on OMP_NUM_THREADS)
    for r in records:
        torch.testing.assert_close(two.get(r.id), one.get(r.id), atol=1e-4, rtol=1e-4)
    # a second run has nothing left to do (no worker is started)
    again = quiet(extract_parallel, manifest, spec, tmp_path / "two", 2, encoder=enc, batch_size=1)
    assert again.meta["counts"]["computed"] == 0 and again.meta["counts"]["reused"] == 10


def test_shards_a_killed_run_left_in_its_parts_are_merged_not_recomputed(tmp_path):
    records = make_wav_corpus(tmp_path / "corpus", 6, seconds=0.3)
    spec = EncoderSpec("tiny-wav2vec2", allow_random=True)
    enc = quiet(spec.build)
    root = tmp_path / "corpus"
    first = quiet(extract_features, records[:4], enc, tmp_path / "f", root=root, progress=False)  # a finished cache
    # a worker of a killed run had written 2 more utterances into its part folder
    quiet(extract_features, records[4:], enc, first.path / PARTS / "w1", root=root, progress=False)
    store = quiet(extract_parallel, records, spec, tmp_path / "f", 2, encoder=enc, root=root)
    assert len(store) == 6 and store.meta["counts"]["computed"] == 0 and not (store.path / PARTS).exists()
    assert json.loads((store.path / "meta.json").read_text())["counts"]["reused"] == 6


def test_ranks_extract_their_shares_and_rank_zero_merges(tmp_path):
    import threading

    records = make_wav_corpus(tmp_path / "corpus", 7, seconds=0.3)
    root = tmp_path / "corpus"
    spec = EncoderSpec("tiny-wav2vec2", allow_random=True)
    encoders = [quiet(spec.build), quiet(spec.build)]  # each rank its own copy (same seeded weights)
    stores: dict[int, object] = {}

    def rank(r):
        stores[r] = quiet(
            extract_rank_share, records, encoders[r], tmp_path / "feats", r, 2, root=root, poll_s=0.05, batch_size=1
        )

    threads = [threading.Thread(target=rank, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    one = quiet(extract_features, records, encoders[0], tmp_path / "one", root=root, batch_size=1, progress=False)
    merged = FeatureStore.for_encoder(tmp_path / "feats", encoders[0])
    assert len(merged) == 7 and merged.meta["counts"]["computed"] == 0  # rank 0's final pass reused every share
    assert not (merged.path / PARTS).exists() and {0, 1} <= set(stores)
    for r in records:
        torch.testing.assert_close(merged.get(r.id), one.get(r.id), atol=1e-4, rtol=1e-4)  # summation order
