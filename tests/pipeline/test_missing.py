"""Dropping modalities (zero / absent), ModDrop copies and KNN imputation on tiny tensors."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from emofuse.pipeline.imputation import KNNImputer, impute_inputs, time_averages
from emofuse.pipeline.missing import ModDropDataset, drop_modalities, drop_modality, moddrop_variants


def feature_batch():
    g = torch.Generator().manual_seed(0)
    feats = {}
    for m, (t, d) in {"text": (4, 3), "video": (2, 5), "audio": (6, 2)}.items():
        mask = torch.ones(2, t, dtype=torch.bool)
        mask[1, t // 2 :] = False
        feats[m] = torch.randn(2, t, d, generator=g) * mask.unsqueeze(-1)
        feats[f"{m}_mask"] = mask
    present = {m: torch.ones(2, dtype=torch.bool) for m in ("text", "video", "audio")}
    return {"ids": ["a", "b"], "labels": torch.tensor([0, 1]), "features": feats, "present": present}


def test_absent_clears_masks_and_presence():
    b = feature_batch()
    before = {k: v.clone() for k, v in b["features"].items()}
    out = drop_modality(b, "video", "absent")
    assert torch.equal(out["features"]["video"], torch.zeros(2, 2, 5))
    assert not out["features"]["video_mask"].any()
    assert out["present"]["video"].tolist() == [False, False]
    assert out["present"]["text"].tolist() == [True, True]
    for m in ("text", "audio"):  # other modalities: the very same tensors
        assert out["features"][m] is b["features"][m] and out["features"][f"{m}_mask"] is b["features"][f"{m}_mask"]
    for k, v in before.items():  # the input batch is not modified
        assert torch.equal(b["features"][k], v)
    assert b["present"]["video"].all()


def test_zero_keeps_masks():
    b = feature_batch()
    out = drop_modality(b, "audio", "zero")
    assert torch.equal(out["features"]["audio"], torch.zeros(2, 6, 2))
    assert torch.equal(out["features"]["audio_mask"], b["features"]["audio_mask"])
    assert out["present"]["audio"].all()


def test_rows_select_samples():
    b = feature_batch()
    out = drop_modality(b, "text", "absent", rows=torch.tensor([False, True]))
    assert torch.equal(out["features"]["text"][0], b["features"]["text"][0])
    assert torch.equal(out["features"]["text_mask"][0], b["features"]["text_mask"][0])
    assert not out["features"]["text_mask"][1].any() and not out["features"]["text"][1].any()
    assert out["present"]["text"].tolist() == [True, False]
    with pytest.raises(ValueError, match="rows must be"):
        drop_modality(b, "text", rows=torch.tensor([True]))


def test_raw_encoder_inputs_of_cmd():
    b = {
        "audio": {"input_values": torch.randn(2, 10), "attention_mask": torch.ones(2, 10, dtype=torch.long)},
        "text": {
            "input_ids": torch.tensor([[101, 7, 102], [101, 102, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        },
    }
    out = drop_modality(b, "audio", "absent")
    assert not out["audio"]["input_values"].any() and not out["audio"]["attention_mask"].any()
    assert out["present"]["audio"].tolist() == [False, False] and out["text"] is b["text"]
    z = drop_modality(b, "text", "zero")
    assert not z["text"]["input_ids"].any() and torch.equal(z["text"]["attention_mask"], b["text"]["attention_mask"])


def test_unknown_modality_and_mode():
    b = feature_batch()
    with pytest.raises(KeyError, match="cannot drop modality 'face'.*audio"):
        drop_modality(b, "face")
    with pytest.raises(ValueError, match="drop mode"):
        drop_modality(b, "text", "nan")


def test_drop_two():
    out = drop_modalities(feature_batch(), ["text", "audio"], "absent")
    assert [bool(out["present"][m].any()) for m in ("text", "video", "audio")] == [False, True, False]


class TinyDataset(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {
            "id": f"u{i}",
            "label": i % 2,
            "x": {m: torch.full((3, 2), float(i + 1)) for m in ("text", "video", "audio")},
        }

    def collate(self, items):
        feats = {}
        for m in ("text", "video", "audio"):
            feats[m] = torch.stack([it["x"][m] for it in items])
            feats[f"{m}_mask"] = torch.ones(len(items), 3, dtype=torch.bool)
        return {
            "ids": [it["id"] for it in items],
            "labels": torch.tensor([it["label"] for it in items]),
            "features": feats,
        }

    def lengths(self):
        return [10 * (i + 1) for i in range(self.n)]


def test_moddrop_variants():
    assert moddrop_variants(["t", "v", "a"]) == [(), ("t",), ("v",), ("a",)]
    assert moddrop_variants(["t", "v", "a"], "all", include_original=False) == [
        ("t",),
        ("v",),
        ("a",),
        ("t", "v"),
        ("t", "a"),
        ("v", "a"),
    ]
    with pytest.raises(ValueError, match="at least two"):
        moddrop_variants(["t"])


@pytest.mark.parametrize("mode", ["zero", "absent"])
def test_moddrop_dataset_multiplies_and_drops(mode):
    base = TinyDataset(5)
    ds = ModDropDataset(base, ["text", "video", "audio"], mode=mode)
    assert len(ds) == 20  # 4 versions: (T,V,A), (0,V,A), (T,0,A), (T,V,0)
    assert ds.lengths() == base.lengths() * 4
    batch = ds.collate([ds[i] for i in (0, 5, 11, 17)])  # u0 original, u0 -text, u1 -video, u2 -audio
    assert batch["ids"] == ["u0", "u0|-text", "u1|-video", "u2|-audio"]
    assert batch["labels"].tolist() == [0, 0, 1, 0]
    f = batch["features"]
    expected_drop = {"text": 1, "video": 2, "audio": 3}
    for m, row in expected_drop.items():
        for j in range(4):
            dropped = j == row
            assert bool(f[m][j].abs().sum() == 0) == dropped
            assert bool(f[f"{m}_mask"][j].all()) == (not dropped or mode == "zero")
            assert bool(batch["present"][m][j]) == (not dropped or mode == "zero")
    # every sample appears exactly once per variant
    ids = [ds[i]["id"] for i in range(len(ds))]
    assert all(ids.count(f"u{i}") == 4 for i in range(5))
    with pytest.raises(IndexError):
        ds[20]


# -------------------------------------------------------------------------------------------- KNN


def test_knn_imputer_matches_sklearn_by_hand():
    rng = np.random.default_rng(0)
    train = {"text": rng.normal(size=(30, 3)), "video": rng.normal(size=(30, 4)), "audio": rng.normal(size=(30, 2))}
    imp = KNNImputer(k=5).fit(train)
    query = {"text": rng.normal(size=(4, 3)), "audio": rng.normal(size=(4, 2))}
    got = imp.impute(query, ["video"])["video"]
    # hand: Euclidean distance on [audio | text] (sorted names), 5 smallest, mean of their video vectors
    X = np.concatenate([train["audio"], train["text"]], 1)
    Q = np.concatenate([query["audio"], query["text"]], 1)
    d = ((Q[:, None] - X[None]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1)[:, :5]
    assert np.allclose(got, train["video"][idx].mean(1))
    _, sk = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(Q)
    assert np.allclose(got, train["video"][sk].mean(1))
    # two missing from one; K above N is capped at N (the training mean)
    both = KNNImputer(k=100).fit(train).impute({"text": query["text"]}, ["video", "audio"])
    assert np.allclose(both["audio"], np.broadcast_to(train["audio"].mean(0), (4, 2)))


def test_knn_imputer_one_neighbour_is_the_nearest_row():
    train = {"a": np.array([[0.0, 0.0], [5.0, 5.0]]), "b": np.array([[1.0], [2.0]])}
    assert KNNImputer(1).fit(train).impute({"a": np.array([[4.0, 4.5], [0.1, 0.0]])}, ["b"])["b"].tolist() == [
        [2.0],
        [1.0],
    ]
    with pytest.raises(ValueError, match="same N"):
        KNNImputer(1).fit({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
    with pytest.raises(KeyError, match="no training vectors"):
        KNNImputer(1).fit(train).impute({"c": np.zeros((1, 1))}, ["b"])


def test_time_averages_and_input_imputation():
    b = feature_batch()
    avg = time_averages(b, ["text"])["text"]
    assert torch.allclose(avg[1], b["features"]["text"][1, :2].mean(0))
    dropped = drop_modality(b, "video", "absent")
    v = torch.arange(10.0).view(2, 5)
    out = impute_inputs(dropped, {"video": v})
    assert torch.equal(out["features"]["video"][:, 0], v) and not out["features"]["video"][:, 1:].any()
    assert out["features"]["video_mask"].tolist() == [[True, False], [True, False]]
    assert out["present"]["video"].all()
    assert torch.equal(time_averages(out, ["video"])["video"], v)
