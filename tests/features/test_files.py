"""Feature files named by the manifest: references, readers per format, the store, validation."""

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from emofuse.data.manifest import ManifestError, Utterance, read_manifest, validate_records, write_manifest
from emofuse.features.files import FeatureFileError, FileFeatureStore, feature_readers, read_feature


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((2, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "all.npz", a=a, b=b)
    save_file({"a": a, "b": b}, str(tmp_path / "all.safetensors"))
    with h5py.File(tmp_path / "all.h5", "w") as f:
        f.create_dataset("clips/a", data=a)
        f.create_dataset("clips/b", data=b)
    return tmp_path, a, b


@pytest.mark.parametrize(
    "ref",
    ["a.npy", "all.npz#a", "all.safetensors#a", "all.h5#clips/a", "all.h5#/clips/a"],
)
def test_every_format_reads_the_same_array(arrays, ref):
    root, a, _ = arrays
    rec = Utterance(id="a", features={"video": ref})
    path, key = rec.feature_ref("video", root)
    np.testing.assert_array_equal(read_feature(path, key), a)


def test_single_member_containers_need_no_key(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "one.npz", feats=x)
    save_file({"t": x}, str(tmp_path / "one.safetensors"))
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("g/x", data=x)
    for name in ("one.npz", "one.safetensors", "one.h5"):
        np.testing.assert_array_equal(read_feature(tmp_path / name), x)
    assert {".npy", ".npz", ".safetensors", ".h5", ".hdf5"} <= set(feature_readers())


def test_errors_name_file_and_key(arrays):
    root, _, _ = arrays
    with pytest.raises(FeatureFileError, match=r"all\.npz: holds 2 arrays .*#KEY"):
        read_feature(root / "all.npz")
    with pytest.raises(FeatureFileError, match=r"all\.safetensors: no tensor 'zz'"):
        read_feature(root / "all.safetensors", "zz")
    with pytest.raises(FeatureFileError, match=r"all\.h5: no dataset 'clips' \(it is a group\)"):
        read_feature(root / "all.h5", "clips")
    with pytest.raises(FeatureFileError, match="feature file not found: .*nope.npy"):
        read_feature(root / "nope.npy")
    with pytest.raises(FeatureFileError, match="no feature reader for '.txt'"):
        read_feature(root / "x.txt")
    (root / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(FeatureFileError, match=r"bad\.npy: cannot read features"):
        read_feature(root / "bad.npy")
    with pytest.raises(FeatureFileError, match="drop '#k'"):
        read_feature(root / "a.npy", "k")


def test_store_serves_sequences_vectors_and_absence(arrays):
    root, a, b = arrays
    np.save(root / "vec.npy", np.ones(3, dtype=np.float64))
    recs = [
        Utterance(id="a", features={"video": "all.h5#/clips/a"}),
        Utterance(id="b", features={"video": "all.safetensors#b"}),
        Utterance(id="v", features={"video": "vec.npy"}),
        Utterance(id="none", features={"video": None}),
        Utterance(id="other"),
    ]
    store = FileFeatureStore(recs, "video", root=root, max_frames=4)
    assert store.output_dim == 3 and len(store) == 3 and store.allow_missing
    assert torch.equal(store.get("a"), torch.from_numpy(a[:4]))  # max_frames
    assert torch.equal(store.get("b"), torch.from_numpy(b))
    v = store.get("v")
    assert v.shape == (1, 3) and v.dtype == torch.float32  # a vector is one frame
    assert "none" not in store and "other" not in store
    with pytest.raises(KeyError, match="'none' has no 'video' feature file"):
        store.get("none")


def test_store_checks_shape_dimension_and_values(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((2, 4), dtype=np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((2, 5), dtype=np.float32))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.full((2, 4), np.nan, dtype=np.float32))
    recs = [Utterance(id=i, features={"v": f"{i}.npy"}) for i in ("ok", "wide", "cube", "nan")]
    store = FileFeatureStore(recs, "v", root=tmp_path)
    with pytest.raises(FeatureFileError, match=r"'wide', v: .*wide\.npy has dimension 5, expected 4"):
        store.get("wide")
    with pytest.raises(FeatureFileError, match=r"cube\.npy holds shape \(2, 2, 2\)"):
        store.get("cube")
    with pytest.raises(FeatureFileError, match="NaN or inf"):
        store.get("nan")
    with pytest.raises(FeatureFileError, match="no record has a 'face' feature file"):
        FileFeatureStore(recs, "face", root=tmp_path)
    assert FileFeatureStore(recs, "face", root=tmp_path, dim=7).output_dim == 7


def test_manifest_round_trip_and_validation_names_missing_files(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), dtype=np.float32))
    recs = [
        Utterance(id="a", text="x", features={"video": "a.npy", "face": None}),
        Utterance(id="b", text="y", features={"video": "missing/b.npy"}),
        Utterance(id="c", text="z"),
    ]
    path = write_manifest(recs, tmp_path / "m.jsonl")
    back = read_manifest(path)
    assert back == recs and back[0].features == {"video": "a.npy", "face": None}
    report = validate_records(back, root=tmp_path, check_audio=False)
    assert report.missing_features == [f"b video: {tmp_path / 'missing' / 'b.npy'}"]
    assert not report.ok and report.counts()["missing_features"] == 1
    assert "missing features: 1 (b video:" in report.summary()
    assert report.to_dict()["missing_features"] == report.missing_features
    assert validate_records(back, root=tmp_path, check_audio=False, check_features=False).ok


def test_bad_reference_is_rejected_on_read(tmp_path):
    line = json.dumps({"id": "a", "features": {"video": "#key-only"}})
    (tmp_path / "m.jsonl").write_text(line + "\n")
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: invalid record \(features: .*not a feature reference"):
        read_manifest(tmp_path / "m.jsonl")
