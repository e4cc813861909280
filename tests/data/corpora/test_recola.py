"""RECOLA (AVEC 2016) recipe on a miniature package written here: windows, labels, frame slices, bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.recola import window_bounds
from emofuse.data.manifest import read_manifest
from emofuse.features.files import FileFeatureStore

N = 176  # frames of 40 ms (7.04 s)


def _arff(path, name, cols, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [f"@relation {name}", "", "@attribute Instance_name string", "@attribute frameTime numeric"]
    head += [f"@attribute {c} numeric" for c in cols] + ["", "@data", ""]
    body = [f"'{name}',{i * 0.04:.2f}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(rows)]
    path.write_text("\n".join(head + body) + "\n", encoding="utf-8")


def _package(tmp_path, recs=("train_1", "dev_1"), no_gold=("test_1",), no_app=("dev_1",)):
    root = tmp_path / "AVEC2016"
    idx = np.arange(N, dtype=np.float64)
    for rec in (*recs, *no_gold):
        off = 1000.0 if rec.startswith("dev") else 0.0
        for dim in ("arousal", "valence"):
            _arff(
                root / "features_audio" / dim / f"{rec}.arff",
                rec,
                ["f0", "f1", "f2"],
                np.stack([idx + off, idx * 2, np.ones(N)], 1),
            )
            geo = root / "features_video_geometric" / dim / f"{rec}.csv"
            geo.parent.mkdir(parents=True, exist_ok=True)
            geo.write_text(
                "name;frameTime;g0;g1\n" + "".join(f"'{rec}';{i * 0.04:.2f};{i + off};{-i}\n" for i in range(N))
            )
            if rec not in no_app:
                _arff(root / "features_video_appearance" / dim / f"{rec}.arff", rec, ["a0"], (idx + off)[:, None])
    for rec in recs:
        # arousal = i/1000 - 0.05, valence = 0.3 constant
        _arff(
            root / "ratings_gold_standard" / "arousal" / f"{rec}.arff",
            rec,
            ["GoldStandard"],
            (idx / 1000 - 0.05)[:, None],
        )
        _arff(root / "ratings_gold_standard" / "valence" / f"{rec}.arff", rec, ["GoldStandard"], np.full((N, 1), 0.3))
    return root


def test_windows_labels_and_slices(tmp_path):
    root = _package(tmp_path)
    prep = prepare("recola", root, progress=False, features_dir=tmp_path / "npy")
    assert prep.name == "recola" and prep.classes == ("low", "high") and prep.scheme == "recola2"
    train = [r for r in prep.records if r.dialogue == "train_1"]
    dev = [r for r in prep.records if r.dialogue == "dev_1"]
    # train: 75-frame windows every 25 frames -> starts 0..100, plus one ending on the last frame
    assert [r.extra["frames"] for r in train] == [[0, 75], [25, 100], [50, 125], [75, 150], [100, 175], [101, 176]]
    assert [r.extra["frames"] for r in dev] == [[0, 75], [75, 150], [101, 176]]  # non-overlapping + end window
    assert {r.split for r in train} == {"train"} and {r.split for r in dev} == {"test"}  # thesis: dev reported
    w0, w1 = train[0], train[1]
    assert w0.id == "train_1[0:75]" and (w0.start, w0.end) == (0.0, 3.0) and (w1.start, w1.end) == (1.0, 4.0)
    assert w0.extra["arousal"] == pytest.approx(37 / 1000 - 0.05) and w0.label == "low"  # mean(0..74) = 37
    assert w1.extra["arousal"] == pytest.approx(62 / 1000 - 0.05) and w1.label == "high"
    assert w0.extra["valence"] == pytest.approx(0.3) and w0.turn == 0 and w1.turn == 1 and w0.speaker == "train_1"
    # the reference slices exactly the window's frames (f0 = frame index; dev frames are offset by 1000)
    store = FileFeatureStore(prep.records, "audio")
    np.testing.assert_array_equal(store.get("train_1[25:100]")[:, 0].numpy(), np.arange(25, 100))
    np.testing.assert_array_equal(store.get("dev_1[101:176]")[:, 0].numpy(), np.arange(1101, 1176))
    geo = FileFeatureStore(prep.records, "video_geo")
    assert geo.output_dim == 2 and geo.get("train_1[50:125]")[0].tolist() == [50.0, -50.0]
    app = FileFeatureStore(prep.records, "video_app")
    assert "train_1[0:75]" in app and "dev_1[0:75]" not in app  # no appearance file for dev_1: absent modality
    notes = "\n".join(prep.report.notes)
    assert "train: 1 recording(s) / 6 window(s), dev: 1 recording(s) / 3 window(s)" in notes
    assert "test: no gold standard=1" in notes and "video_app=1" in notes
    assert prep.report.ok and not prep.report.missing_features


def test_options_dev_split_tail_dimension(tmp_path):
    root = _package(tmp_path, no_app=())
    prep = prepare(
        "recola",
        root,
        progress=False,
        features_dir=tmp_path / "npy",
        dimension="valence",
        tail="drop",
        dev_split="dev",
        modalities="audio,video_app",
    )
    assert {r.split for r in prep.records} == {"train", "dev"}
    assert len([r for r in prep.records if r.split == "train"]) == 5 and set(prep.records[0].features) == {
        "audio",
        "video_app",
    }
    assert all(r.label == "high" and r.extra["dimension"] == "valence" for r in prep.records)  # valence 0.3 >= 0
    assert "/valence/" in prep.records[0].features["audio"]
    assert len(window_bounds(7501, 75, 25)) == 299 and len(window_bounds(7501, 75, 25, "drop")) == 298  # thesis count


def test_frame_records_for_sew(tmp_path):
    """SEW is non-sequential: 40 ms windows with a 40 ms hop give one record per frame."""
    root = _package(tmp_path, recs=("train_1",), no_gold=())
    prep = prepare("recola", root, progress=False, features_dir=tmp_path / "npy", window=0.04, hop=0.04, dev_hop=0.04)
    assert len(prep.records) == N and prep.records[7].id == "train_1[7:8]"
    assert prep.records[7].extra["arousal"] == pytest.approx(7 / 1000 - 0.05)
    store = FileFeatureStore(prep.records, "audio")
    assert store.get("train_1[7:8]").tolist() == [[7.0, 14.0, 1.0]]


def test_val_recordings_from_train(tmp_path):
    root = _package(tmp_path, recs=("train_1", "train_2", "train_10", "dev_1"))
    prep = prepare("recola", root, progress=False, features_dir=tmp_path / "npy", val_recordings=1)
    split = {r.dialogue: r.split for r in prep.records}
    assert split == {"train_1": "train", "train_2": "train", "train_10": "dev", "dev_1": "test"}  # natural order
    assert "validation (split=dev): train recordings train_10" in prep.report.notes
    with pytest.raises(ValueError, match="needs dev_split='test'"):
        prepare("recola", root, progress=False, features_dir=tmp_path / "npy", val_recordings=1, dev_split="dev")
    with pytest.raises(ValueError, match=r"val_recordings must be in \[0, 2\]"):
        prepare("recola", root, progress=False, features_dir=tmp_path / "npy", val_recordings=3)


def test_bad_input_is_named(tmp_path):
    root = _package(tmp_path)
    with pytest.raises(CorpusError, match="features_dir=DIR"):
        prepare("recola", root, progress=False)
    with pytest.raises(CorpusError, match=r"features_ECG: missing feature folder for modality 'ecg'"):
        prepare("recola", root, progress=False, features_dir=tmp_path / "npy", modalities=["audio", "ecg"])
    with pytest.raises(CorpusError, match=r"ratings_gold_standard/arousal: missing"):
        prepare("recola", root / "features_audio", progress=False)
    bad = root / "ratings_gold_standard" / "arousal" / "train_1.arff"
    bad.write_text(bad.read_text().replace("'train_1',0.04,", "'train_1',0.04,zz,", 1))
    with pytest.raises(CorpusError, match=r"train_1\.arff:10: 4 values, expected 3"):
        prepare("recola", root, progress=False, features_dir=tmp_path / "npy")
    bad.write_text(bad.read_text().replace("zz,", "", 1).replace("'train_1',0.08,-0.0", "'train_1',0.08,x-0.0", 1))
    with pytest.raises(CorpusError, match=r"train_1\.arff:11: a value is not a number"):
        prepare("recola", root, progress=False, features_dir=tmp_path / "npy")


def test_cli_writes_manifest_and_report(tmp_path):
    root = _package(tmp_path)
    out = tmp_path / "recola" / "manifest.jsonl"
    res = CliRunner().invoke(
        app, ["prepare", "recola", str(root), "--out", str(out), "-q", "--option", f"features_dir={tmp_path / 'npy'}"]
    )
    assert res.exit_code == 0, res.output
    recs = read_manifest(out)
    assert len(recs) == 9 and recs[0].features["audio"].endswith(".npy#[0:75]")
    report = json.loads((tmp_path / "recola" / "manifest.report.json").read_text())
    assert report["corpus"] == "recola" and report["counts"]["total"] == 9


@pytest.mark.slow
def test_prepared_windows_train_a_table_5_7_config(tmp_path):
    """Loader -> manifest -> the Table 5.7 SeqSEW config (tiny sizes): both stages run on the sliced windows."""
    import warnings
    from pathlib import Path

    from emofuse.config import load_config
    from emofuse.training import run_experiment

    root = _package(tmp_path, recs=("train_1", "train_2", "dev_1"))
    out = tmp_path / "recola" / "manifest.jsonl"
    res = CliRunner().invoke(
        app,
        ["prepare", "recola", str(root), "--out", str(out), "-q", "--option", f"features_dir={tmp_path / 'npy'}"]
        + ["--option", "val_recordings=1"],
    )
    assert res.exit_code == 0, res.output
    config = Path(__file__).resolve().parents[3] / "configs/thesis/seqsew/t5.7-ar-vgeo+aud-seqsew.yaml"
    sets = [
        f"data.manifest={out}",
        "model.weak_dim=2",
        "model.strong_dim=3",
        "model.dim=8",
        "model.ffn_dim=16",
        "model.head_hidden=8",
        "model.decoder_units=4",
        "optim.lr=0.001",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.logger=none",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no validation split (dev is the test split), speakers per recording
        doc = run_experiment(load_config(config, sets), tmp_path / "run", progress=False)
    m = doc["runs"][0]["metrics"]
    assert m["n"] == 3 and {"pcc", "ccc", "mae"} <= set(m)  # the 3 dev windows are the test split
