"""CMU-MOSI in Poria et al.'s utterance-feature release (``*_2way.pickle``), on a miniature written here."""

import collections
import pickle

import numpy as np
import pytest

from emofuse.data.corpora import CorpusError, prepare
from emofuse.features.files import FileFeatureStore

DIMS = {"text": 5, "audio": 3, "video": 4}
TRAIN_LEN, TEST_LEN, MAXLEN = [2, 4, 3], [1, 3], 4


def _part(lengths, dim, offset, rng):
    data = np.zeros((len(lengths), MAXLEN, dim), dtype=np.float64)
    lab = np.zeros((len(lengths), MAXLEN, 2))
    for v, n in enumerate(lengths):
        for u in range(n):
            data[v, u] = offset + 100 * v + u  # every value of a row names its video and utterance
            lab[v, u, int(rng.integers(2))] = 1
    return data, lab


def _release(tmp_path, modalities=DIMS, py2=True):
    root = tmp_path / "dataset" / "mosi" / "raw"
    root.mkdir(parents=True)
    for m, dim in modalities.items():
        rng = np.random.default_rng(7)  # same labels in every modality file
        tr, trl = _part(TRAIN_LEN, dim, 0, rng)
        te, tel = _part(TEST_LEN, dim, 10_000, rng)
        obj = (tr, trl, te, tel, MAXLEN, np.array(TRAIN_LEN), np.array(TEST_LEN))
        with open(root / f"{m}_2way.pickle", "wb") as f:
            pickle.dump(obj, f, protocol=2 if py2 else 4)
    return tmp_path / "dataset", np.random.default_rng(7)


def test_poria_release_records_and_rows(tmp_path):
    root, _ = _release(tmp_path)
    prep = prepare("mosi", root, progress=False, features_dir=tmp_path / "feats", dev_videos=1, seed=0)
    assert prep.name == "mosi" and prep.scheme == "sentiment2" and prep.classes == ("negative", "positive")
    assert len(prep.records) == sum(TRAIN_LEN) + sum(TEST_LEN) == 13
    by = {r.id: r for r in prep.records}
    r = by["train_v01_u03"]
    assert r.dialogue == "train_v01" and r.turn == 3 and set(r.features) == {"text", "audio", "video"}
    assert {x.split for x in prep.records if x.dialogue.startswith("test")} == {"test"}
    dev_videos = {x.dialogue for x in prep.records if x.split == "dev"}
    assert len(dev_videos) == 1 and dev_videos < {"train_v00", "train_v01", "train_v02"}
    for m, dim in DIMS.items():
        store = FileFeatureStore(prep.records, m)
        assert store.output_dim == dim
        np.testing.assert_array_equal(store.get("train_v01_u03").numpy(), np.full((1, dim), 103.0))
        np.testing.assert_array_equal(store.get("test_v01_u02").numpy(), np.full((1, dim), 10_102.0))
    # labels: one-hot index 1 = positive, in the order the miniature drew them
    rng = np.random.default_rng(7)
    _part(TRAIN_LEN, 1, 0, rng)  # same draws as the train part
    te = [int(rng.integers(2)) for n in TEST_LEN for _ in range(n)]
    got = [by[f"test_v{v:02d}_u{u:02d}"] for v, n in enumerate(TEST_LEN) for u in range(n)]
    assert [g.label for g in got] == ["positive" if t else "negative" for t in te]
    assert [g.extra["positive"] for g in got] == [float(t) for t in te]
    assert prep.report.ok and not prep.report.missing_audio
    assert any("utterances (videos): train " in n and "test 4 (2)" in n for n in prep.report.notes)


def test_missing_modality_and_python3_pickles(tmp_path):
    root, _ = _release(tmp_path, modalities={"text": 5, "audio": 3}, py2=False)
    prep = prepare("mosi", root, progress=False, features_dir=tmp_path / "f", dev_videos=0)
    assert set(prep.records[0].features) == {"text", "audio"} and {r.split for r in prep.records} == {"train", "test"}
    assert any("no pickle for video" in n for n in prep.report.notes)


def test_bad_release_is_named(tmp_path):
    root, _ = _release(tmp_path)
    with pytest.raises(CorpusError, match="features_dir=DIR"):
        prepare("mosi", root, progress=False)
    with pytest.raises(ValueError, match="binary labels only"):
        prepare("mosi", root, progress=False, labels="sentiment7", features_dir=tmp_path / "f")
    raw = root / "mosi" / "raw"
    with open(raw / "video_2way.pickle", "wb") as f:
        pickle.dump(collections.OrderedDict(a=1), f)  # not NumPy: refused, never constructed
    with pytest.raises(CorpusError, match=r"video_2way\.pickle: refuses to unpickle collections\.OrderedDict"):
        prepare("mosi", root, progress=False, features_dir=tmp_path / "f")
    with open(raw / "video_2way.pickle", "wb") as f:
        pickle.dump((np.zeros(3),) * 3, f)
    with pytest.raises(CorpusError, match=r"video_2way\.pickle: expected the tuple .* found tuple of 3"):
        prepare("mosi", root, progress=False, features_dir=tmp_path / "f")
    rng = np.random.default_rng(1)
    tr, trl = _part(TRAIN_LEN, 4, 0, rng)
    te, tel = _part(TEST_LEN, 4, 0, rng)
    with open(raw / "video_2way.pickle", "wb") as f:
        pickle.dump((tr, trl, te, tel, MAXLEN, np.array(TRAIN_LEN), np.array(TEST_LEN)), f)
    with pytest.raises(CorpusError, match=r"video_2way\.pickle: train labels or lengths differ from .*text_2way"):
        prepare("mosi", root, progress=False, features_dir=tmp_path / "f")
    (raw / "video_2way.pickle").write_bytes(b"not a pickle")
    with pytest.raises(CorpusError, match=r"video_2way\.pickle: not a readable pickle"):
        prepare("mosi", root, progress=False, features_dir=tmp_path / "f")


def test_empty_root_names_both_layouts(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(
        CorpusError, match=r"CMU_MOSI_Opinion_Labels\.csd nor Poria's \{text,audio,video\}_2way\.pickle"
    ):
        prepare("mosi", tmp_path / "x", progress=False)
