"""Frame slices ``FILE#[START:END]`` / ``FILE#KEY[START:END]`` in feature references (RECOLA windows, MOSI rows)."""

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from emofuse.data.manifest import Utterance
from emofuse.features.files import FeatureFileError, FileFeatureStore, read_feature, split_frame_slice


@pytest.fixture
def frames(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(10, 4)  # row i = [4i, 4i+1, 4i+2, 4i+3]
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", a=x, b=x[:2])
    save_file({"a": x}, str(tmp_path / "x.safetensors"))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("g/a", data=x)
    return tmp_path, x


@pytest.mark.parametrize("ref", ["x.npy#[3:7]", "x.npz#a[3:7]", "x.safetensors#a[3:7]", "x.h5#/g/a[3:7]"])
def test_slice_keeps_rows_start_to_end(frames, ref):
    root, x = frames
    path, key = Utterance(id="w", features={"audio": ref}).feature_ref("audio", root)
    got = read_feature(path, key)
    np.testing.assert_array_equal(got, x[3:7])
    assert got[0, 0] == 12.0 and got.shape == (4, 4)


def test_store_serves_windows_of_one_file(frames):
    root, x = frames
    recs = [Utterance(id=f"w{s}", features={"audio": f"x.npy#[{s}:{s + 3}]"}) for s in (0, 3, 7)]
    store = FileFeatureStore(recs, "audio", root=root)
    assert store.output_dim == 4
    for s in (0, 3, 7):
        np.testing.assert_array_equal(store.get(f"w{s}").numpy(), x[s : s + 3])


def test_split_and_bad_slices(frames):
    root, _ = frames
    assert split_frame_slice("[2:5]") == (None, (2, 5))
    assert split_frame_slice("/g/a[0:1]") == ("/g/a", (0, 1))
    assert split_frame_slice("a") == ("a", None)
    with pytest.raises(FeatureFileError, match=r"x\.npy#\[5:5\]: empty frame slice"):
        read_feature(root / "x.npy", "[5:5]")
    with pytest.raises(FeatureFileError, match=r"x\.npy#\[8:12\]: the slice ends past the array's 10 frames"):
        read_feature(root / "x.npy", "[8:12]")
    np.save(root / "v.npy", np.ones(3, dtype=np.float32))
    with pytest.raises(FeatureFileError, match=r"needs a \(T, D\) array, the file holds \(3,\)"):
        read_feature(root / "v.npy", "[0:1]")
    with pytest.raises(FeatureFileError, match="feature file not found"):
        read_feature(root / "missing.npy", "[0:1]")
