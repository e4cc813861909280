"""CMU-MOSEI / MOSI recipes on miniature releases: SDK computational sequences (HDF5), WAV_16000, transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from emofuse.data.audio import load_audio
from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.mosei import mosei_cmd_label, prepare_mosei, prepare_mosi, sentiment_label

SR = 16_000

# video -> (intervals, rows [sentiment, happy, sad, anger, surprise, disgust, fear])
LABELS = {
    "vidA": (
        [[0.0, 1.0], [1.0, 2.5], [3.0, 4.0], [4.0, 5.0]],
        [
            [1.0, 2.0, 0.3333, 0.0, 0.0, 0.0, 0.0],  # happy
            [-0.3333, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all zero -> neutral
            [0.0, 0.6667, 0.3333, 0.0, 0.3333, 0.0, 0.0],  # max < 1, not all zero -> below-threshold
            [-2.5, 0.0, 1.3333, 1.3333, 0.0, 0.0, 0.0],  # sad = anger -> tie
        ],
    ),
    "-vid_B": (
        [[2.0, 3.0], [0.5, 1.5]],  # rows out of time order
        [
            [-3.4, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0],  # anger -> angry
            [0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0],  # sad (fear is not a candidate)
        ],
    ),
    "vidC": ([[0.0, 1.0]], [[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]),  # no audio
}
WORDS = {
    "vidA": (
        ["sp", "i", "loved", "it", "sp", "well", "no", "okay", "then", "really", "bad"],
        [[0.0, 0.1], [0.1, 0.3], [0.3, 0.6], [0.6, 0.9], [1.0, 1.2], [1.2, 1.5], [1.5, 2.5], [3.0, 3.5],
         [3.5, 4.0], [4.0, 4.5], [4.5, 5.0]],
    ),
    "-vid_B": (["from", "the", "words", "file"], [[0.5, 0.8], [0.8, 1.0], [2.0, 2.5], [2.5, 3.0]]),
}  # fmt: skip
COMBINED_B = [
    "-vid_B___0___0.5___1.5___I felt a bit down.",
    "-vid_B___1___2.0___3.0___This made me so angry!",
    "-vid_B___2___not a time",
]


def write_csd(path: Path, top: str, videos: dict[str, tuple[list, list]], dtype: object = np.float32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group(top)
        data = g.create_group("data")
        for vid, (feats, iv) in videos.items():
            v = data.create_group(vid)
            v.create_dataset("features", data=np.asarray(feats, dtype=dtype))
            v.create_dataset("intervals", data=np.asarray(iv, dtype=np.float64))
        meta = g.create_group("metadata")
        meta.attrs["root name"] = top


def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)


def write_mosei(root: Path, folds: str | None = "json") -> Path:
    write_csd(
        root / "CMU_MOSEI" / "labels" / "CMU_MOSEI_Labels.csd",
        "All Labels",
        {vid: (rows, iv) for vid, (iv, rows) in LABELS.items()},
    )
    words = {vid: ([[w.encode()] for w in ws], iv) for vid, (ws, iv) in WORDS.items()}
    write_csd(root / "CMU_MOSEI" / "language" / "CMU_MOSEI_TimestampedWords.csd", "words", words, dtype="S32")
    _wav(root / "CMU_MOSEI" / "Audio" / "Full" / "WAV_16000" / "vidA.wav", 5.0)
    _wav(root / "CMU_MOSEI" / "Audio" / "Full" / "WAV_16000" / "-vid_B.wav", 3.0)
    combined = root / "CMU_MOSEI" / "Transcript" / "Segmented" / "Combined"
    combined.mkdir(parents=True)
    (combined / "-vid_B.txt").write_text("\n".join(COMBINED_B) + "\n")
    if folds == "json":
        (root / "folds.json").write_text(json.dumps({"train": ["vidA"], "valid": ["-vid_B"], "test": ["vidC"]}))
    elif folds == "txt":
        (root / "standard_train_fold.txt").write_text("vidA\n")
        (root / "standard_valid_fold.txt").write_text("'-vid_B',\n")
        (root / "standard_test_fold.txt").write_text("vidC\n")
    return root


@pytest.fixture(scope="module")
def mosei_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mosei(tmp_path_factory.mktemp("mosei"))


def _by_id(corpus):
    return {r.id: r for r in corpus.records}


def test_mosei4_cmd_rule(mosei_root):
    c = prepare_mosei(mosei_root, progress=False)
    assert c.name == "mosei" and c.scheme == "mosei4-cmd" and c.classes == ("neutral", "happy", "sad", "angry")
    labels = {k: r.label for k, r in _by_id(c).items()}
    assert labels == {"vidA[0]": "happy", "vidA[1]": "neutral", "-vid_B[0]": "angry", "-vid_B[1]": "sad"}
    assert c.dropped == {"below-threshold": 1, "tie": 1}
    assert c.report.missing_audio == ["vidC[0]"]
    notes = "\n".join(c.report.notes)
    assert "mosei4-cmd: dropped 2 segment(s): below-threshold=1, tie=1" in notes
    assert "-vid_B.txt:3: malformed transcript line: '-vid_B___2___not a time'" in notes
    assert [r.id for r in c.records] == ["-vid_B[1]", "-vid_B[0]", "vidA[0]", "vidA[1]"]


def test_segments_text_split_extra(mosei_root):
    recs = _by_id(prepare_mosei(mosei_root, progress=False))
    a0, a1, b0, b1 = recs["vidA[0]"], recs["vidA[1]"], recs["-vid_B[0]"], recs["-vid_B[1]"]
    assert (a1.start, a1.end) == (1.0, 2.5) and a1.audio.endswith("WAV_16000/vidA.wav")
    assert Path(a1.audio).is_absolute()
    assert load_audio(a1.audio, start=a1.start, end=a1.end).shape == (int(1.5 * SR),)
    assert a0.text == "i loved it" and a1.text == "well no"  # words inside the interval, sp skipped
    assert b0.text == "This made me so angry!" and b1.text == "I felt a bit down."  # Combined txt preferred
    assert (b0.turn, b1.turn, a0.turn, a1.turn) == (1, 0, 0, 1)
    assert b0.dialogue == "-vid_B" and b0.speaker is None
    assert (a0.split, b0.split) == ("train", "dev")
    assert a0.raw_label == "happy" and b0.raw_label == "anger"
    assert b0.extra == pytest.approx(
        {"sentiment": -3.4, "happy": 0.0, "sad": 1.0, "anger": 2.0, "surprise": 0.0, "disgust": 0.0, "fear": 0.0}
    )


def test_allow_missing_audio_and_sentiment(mosei_root):
    c = prepare_mosei(mosei_root, labels="sentiment2", allow_missing_audio=True, progress=False)
    recs = _by_id(c)
    assert c.classes == ("negative", "positive") and len(recs) == 7 and c.dropped == {}
    assert recs["vidC[0]"].audio is None and recs["vidC[0]"].split == "test"
    assert recs["vidC[0]"].start == 0.0 and recs["vidC[0]"].end == 1.0
    assert c.report.missing_audio == ["vidC[0]"]
    assert c.report.empty_text == ["vidC[0]"]
    pos = {k for k, r in recs.items() if r.label == "positive"}
    assert pos == {"vidA[0]", "vidA[2]", "-vid_B[1]", "vidC[0]"}  # sentiment 0.0 counts as positive
    c7 = prepare_mosei(mosei_root, labels="sentiment7", progress=False)
    assert {k: r.label for k, r in _by_id(c7).items()} == {
        "vidA[0]": "1",
        "vidA[1]": "0",
        "vidA[2]": "0",
        "vidA[3]": "-2",  # -2.5 rounds half to even
        "-vid_B[0]": "-3",  # clipped from -3.4
        "-vid_B[1]": "0",
    }


def test_rules():
    assert mosei_cmd_label([0, 0, 0, 0, 0, 0]) == "neutral"
    assert mosei_cmd_label([0, 0, 0, 0.33, 0, 0]) == "below-threshold"
    assert mosei_cmd_label([0, 0, 0, 3.0, 0, 0]) == "below-threshold"
    assert mosei_cmd_label([2.0, 2.0, 1.0, 0, 0, 0]) == "tie"
    assert mosei_cmd_label([0.6667, 1.0, 0, 0, 0, 3.0]) == "sad"
    assert mosei_cmd_label([float("nan")] * 6) == "nan"
    assert sentiment_label(0.0) == "positive" and sentiment_label(-0.01) == "negative"
    assert sentiment_label(-0.4, classes=7) == "0" and sentiment_label(3.0, classes=7) == "3"
    assert sentiment_label(1.5, classes=7) == "2"


def test_folds_from_text_files_and_none(tmp_path):
    c = prepare_mosei(write_mosei(tmp_path / "txt", folds="txt"), progress=False)
    assert {r.id: r.split for r in c.records}["-vid_B[0]"] == "dev"
    c = prepare_mosei(write_mosei(tmp_path / "none", folds=None), progress=False)
    assert all(r.split is None for r in c.records)
    assert any("no official folds found" in n for n in c.report.notes)


def test_errors(tmp_path, mosei_root):
    with pytest.raises(CorpusError, match="CMU_MOSEI_Labels.csd not found"):
        prepare_mosei(tmp_path, progress=False)
    with pytest.raises(ValueError, match="does not apply to MOSI"):
        prepare_mosi(mosei_root, labels="mosei4-cmd", progress=False)


def test_mosi_sentiment(tmp_path):
    root = tmp_path / "CMU_MOSI"
    write_csd(
        root / "CMU_MOSI_Opinion_Labels.csd",
        "Opinion Segment Labels",
        {"mosi1": ([[2.4], [-0.6], [0.0]], [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])},
    )
    words = {"mosi1": ([[b"great"], [b"sp"], [b"meh"], [b"fine"]], [[0.1, 0.9], [1.0, 1.1], [1.2, 1.8], [2.1, 2.9]])}
    write_csd(root / "CMU_MOSI_TimestampedWords.csd", "words", words, dtype="S16")
    _wav(root / "Raw" / "Audio" / "WAV_16000" / "Full" / "mosi1.wav", 3.0)
    _wav(root / "Raw" / "Audio" / "WAV_16000" / "Segmented" / "mosi1_1.wav", 1.0)
    sdk = root / "mmsdk" / "mmdatasdk" / "dataset" / "standard_datasets" / "CMU_MOSI"
    sdk.mkdir(parents=True)
    (sdk / "cmu_mosi_std_folds.py").write_text(
        "standard_train_fold = ['mosi1']\nstandard_valid_fold = []\nstandard_test_fold = ['other']\n"
    )
    c = prepare("mosi", root, progress=False)
    assert c.name == "mosi" and c.scheme == "sentiment2"
    assert [(r.id, r.label, r.text, r.split) for r in c.records] == [
        ("mosi1[0]", "positive", "great", "train"),
        ("mosi1[1]", "negative", "meh", "train"),
        ("mosi1[2]", "positive", "fine", "train"),
    ]
    assert c.records[1].extra == pytest.approx({"sentiment": -0.6})
    assert c.records[0].audio.endswith("Full/mosi1.wav")
    c7 = prepare_mosi(root, labels="sentiment7", progress=False)
    assert [r.label for r in c7.records] == ["2", "-1", "0"]
