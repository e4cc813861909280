"""MultimodalDataset with file features: absent modalities are masks (never zeros pretending to be data); targets."""

import numpy as np
import pytest
import torch

from emofuse.data.manifest import Utterance
from emofuse.features.files import FileFeatureStore
from emofuse.pipeline import MultimodalDataset
from emofuse.pipeline.dataset import target_value


@pytest.fixture
def setup(tmp_path):
    np.save(tmp_path / "a_v.npy", np.full((3, 4), 1.0, dtype=np.float32))
    np.save(tmp_path / "b_v.npy", np.full((5, 4), 2.0, dtype=np.float32))
    np.save(tmp_path / "a_f.npy", np.full((2, 6), 3.0, dtype=np.float32))
    recs = [
        Utterance(id="a", text="x", features={"video": "a_v.npy", "face": "a_f.npy"}, extra={"valence": 0.5}),
        Utterance(id="b", text="y", features={"video": "b_v.npy"}, extra={"valence": -1}),
        Utterance(id="c", text="z", extra={}),
    ]
    stores = {m: FileFeatureStore(recs, m, root=tmp_path) for m in ("video", "face")}
    return recs, stores


def test_absent_modalities_are_masked_and_flagged(setup):
    recs, stores = setup
    ds = MultimodalDataset(recs, feature_stores=stores, target="extra.valence")
    assert ds.validate(decode=False) == {}  # absence is not a problem
    item = ds[2]
    assert item["features"] == {"video": None, "face": None} and item["target"] is None
    batch = ds.collate([ds[0], ds[1], ds[2]])
    f = batch["features"]
    assert f["video"].shape == (3, 5, 4) and f["face"].shape == (3, 2, 6)
    assert batch["present"]["video"].tolist() == [True, True, False]
    assert batch["present"]["face"].tolist() == [True, False, False]
    assert f["video_mask"].sum(1).tolist() == [3, 5, 0]
    assert f["face_mask"].sum(1).tolist() == [2, 0, 0]
    assert torch.equal(f["video"][1], torch.full((5, 4), 2.0))
    assert not f["video_mask"][2].any() and not f["face_mask"][1:].any()
    targets = batch["targets"]
    assert targets[:2].tolist() == [0.5, -1.0] and torch.isnan(targets[2])
    assert "labels" not in batch


def test_batch_where_nobody_has_the_modality_keeps_one_masked_step(setup):
    recs, stores = setup
    ds = MultimodalDataset(recs, feature_stores=stores)
    batch = ds.collate([ds[1], ds[2]])
    assert batch["features"]["face"].shape == (2, 1, 6)
    assert not batch["features"]["face_mask"].any() and not batch["present"]["face"].any()
    assert "targets" not in batch


def test_validate_names_missing_feature_files(setup, tmp_path):
    recs, stores = setup
    (tmp_path / "b_v.npy").unlink()
    ds = MultimodalDataset(recs, feature_stores=stores)
    assert ds.validate(decode=False) == {"b": f"video feature file not found: {tmp_path / 'b_v.npy'}"}


def test_without_keeps_targets_aligned(setup):
    recs, stores = setup
    ds = MultimodalDataset(recs, feature_stores=stores, target="extra.valence").without(["a"])
    assert [ds[i]["target"] for i in range(len(ds))] == [-1.0, None]


def test_target_value_errors_name_the_record():
    assert target_value(Utterance(id="a", turn=3), "turn") == 3.0
    with pytest.raises(ValueError, match=r"utterance 'a': target extra.valence = 'high' is not a finite number"):
        target_value(Utterance(id="a", extra={"valence": "high"}), "extra.valence")
    with pytest.raises(ValueError, match="not a finite number"):
        target_value(Utterance(id="a", extra={"valence": float("nan")}), "extra.valence")
    with pytest.raises(ValueError, match="neither a record field nor 'extra.<key>'"):
        target_value(Utterance(id="a"), "valence")
    with pytest.raises(ValueError, match="'x'"):
        MultimodalDataset([Utterance(id="x", extra={"v": [1]})], target="extra.v")
