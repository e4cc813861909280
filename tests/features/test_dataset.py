"""CachedFeatureDataset over one or more feature stores, and collate_features padding and masks."""

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from emofuse.data.manifest import Utterance
from emofuse.features import CachedFeatureDataset, collate_features, extract_features
from emofuse.features.dataset import IGNORE_LABEL
from emofuse.testing.dummies import DummyAudioEncoder, DummyTextEncoder, make_wav_corpus


@pytest.fixture()
def stores(tmp_path):
    recs = make_wav_corpus(tmp_path, 6, seconds=0.2, labels=("neutral", "happy", "sad"))
    recs[2] = recs[2].model_copy(update={"text": ""})  # no text features for u002
    audio = extract_features(recs, DummyAudioEncoder(), tmp_path / "f", root=tmp_path, progress=False)
    text = extract_features(recs, DummyTextEncoder(dim=5), tmp_path / "f", progress=False)
    return recs, audio, text


def test_dataset_items_and_missing(stores):
    recs, audio, text = stores
    with pytest.warns(UserWarning, match="1 of 6 records have no cached features"):
        ds = CachedFeatureDataset([audio, text], recs, label_to_index=["neutral", "happy", "sad"])
    assert len(ds) == 5 and ds.missing == ["u002"]
    item = ds[0]
    assert item["id"] == "u000" and item["label"] == 0 and set(item["features"]) == {"audio", "text"}
    assert item["features"]["audio"].shape == (10, 8) and item["features"]["text"].shape == (len(recs[0].text), 5)
    assert ds[2]["id"] == "u003" and ds[2]["label"] == 0

    unlabelled = CachedFeatureDataset(audio, [r.id for r in recs])
    assert len(unlabelled) == 6 and unlabelled[1]["label"] is None and set(unlabelled[1]["features"]) == {"audio"}
    named = CachedFeatureDataset({"teacher": audio}, recs, label_to_index={"neutral": 0, "happy": 1, "sad": 2})
    assert set(named[0]["features"]) == {"teacher"}
    with pytest.raises(ValueError, match="label 'sad', not one of the classes"):
        CachedFeatureDataset(audio, recs, label_to_index=["neutral", "happy"])


def test_collate_pads_and_masks(stores):
    recs, audio, text = stores
    ds = CachedFeatureDataset(
        [audio, text], [r for r in recs if r.id != "u002"], label_to_index=["neutral", "happy", "sad"]
    )
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_features)))
    assert batch["ids"] == ["u000", "u001", "u003", "u004"] and batch["labels"].tolist() == [0, 1, 0, 1]
    lengths = [audio.num_frames(i) for i in batch["ids"]]
    feats, mask = batch["features"]["audio"], batch["masks"]["audio"]
    assert feats.shape == (4, max(lengths), 8) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == lengths
    for b, utt in enumerate(batch["ids"]):
        torch.testing.assert_close(feats[b, : lengths[b]], audio.get(utt))
        assert not feats[b, lengths[b] :].any()
    assert batch["masks"]["text"].sum(1).tolist() == [text.num_frames(i) for i in batch["ids"]]

    items = [{"id": "x", "features": {"a": torch.ones(2, 3)}, "label": None}] * 2
    assert collate_features(items)["labels"] is None
    mixed = collate_features(items[:1] + [{"id": "y", "features": {"a": torch.ones(1, 3)}, "label": 2}])
    assert mixed["labels"].tolist() == [IGNORE_LABEL, 2]


def test_store_pickles_for_workers(stores):
    _, audio, _ = stores
    audio.get("u000")  # opens a shard handle
    clone = pickle.loads(pickle.dumps(audio))
    assert torch.equal(clone.get("u005"), audio.get("u005"))


def test_same_modality_stores_are_named_by_encoder(tmp_path):
    recs = [Utterance(id="a", text="hello")]
    s1 = extract_features(recs, DummyTextEncoder(name="chars-a"), tmp_path, progress=False)
    s2 = extract_features(recs, DummyTextEncoder(name="chars-b", seed=3), tmp_path, progress=False)
    assert set(CachedFeatureDataset([s1, s2], recs)[0]["features"]) == {"chars-a", "chars-b"}
