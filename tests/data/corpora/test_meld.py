"""MELD recipe on a miniature MELD.Raw tree (real file names, CSV syntax and mp4/AAC clips), plus the real dev CSV."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.meld import prepare_meld
from emofuse.data.labels import get_scheme

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
MOJIBAKE = "I donÂ\x92t know"  # a mis-decoded apostrophe as it occurs in the original corpus
QUOTED = "“Oh my God”, he’s lost it. He’s totally lost it."


def shared_data() -> Path:
    env = os.environ.get("EMOFUSE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def write_wav(path: Path, seconds: float = 0.25, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def write_mp4(path: Path, seconds: float = 0.5, sr: int = 16000) -> Path:
    """A real mp4 container with one AAC audio stream, as the MELD clips have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = sr
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_csv(path: Path, rows: list[str], extra_bytes: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode("utf-8") + extra_bytes)
    return path


@pytest.fixture
def meld_root(tmp_path: Path) -> Path:
    raw = tmp_path / "MELD.Raw"
    train_rows = [
        '1,"also I was the point person on my company’s transition from the KL-5 to GR-6 system.",Chandler,neutral,'
        'neutral,0,0,8,21,"00:16:16,059","00:16:21,731"',
        '2,You must’ve had your hands full.,The Interviewer,neutral,neutral,0,1,8,21,"00:16:21,940","00:16:23,442"',
        # dialogue 1 is listed out of order on purpose
        f'3,"{QUOTED}",Joey,joy,positive,1,1,4,7,"00:20:57,256","00:21:00,049"',
        '4,"“Quoted”, with a comma",Rachel,surprise,positive,1,0,4,7,"0:12:43,012","0:12:44,074"',
        f'5,{MOJIBAKE},Monica,anger,negative,1,2,4,7,"0:12:44,074","0:12:45,189"',
        '6,Broken id,Ross,neutral,neutral,x,0,4,7,"00:00:01,000","00:00:02,000"',
        "7,Too few fields,Ross,neutral",
    ]
    # row 8 carries a byte that is not UTF-8 at all (0x92 = cp1252 apostrophe)
    bad_line = b'8,"Ross\x92s line",Ross,fear,negative,1,3,4,7,"00:00:03,000","00:00:04,000"\r\n'
    write_csv(raw / "train_sent_emo.csv", train_rows, bad_line)
    write_csv(
        raw / "dev_sent_emo.csv",
        [
            '1,"Oh my God, he’s lost it.",Phoebe,neutral,neutral,0,0,4,7,"00:20:57,256","00:21:00,049"',
            '2,What?,Monica,disgust,negative,0,1,4,7,"00:21:01,927","00:21:03,261"',
        ],
    )
    # the test CSV sits in ROOT itself (both places are searched)
    write_csv(
        tmp_path / "test_sent_emo.csv",
        [
            "1,Why do all you’re coffee mugs have numbers on the bottom?,Mark,fear,negative,0,0,3,19,"
            '"00:14:38,127","00:14:40,378"',
            '2,"Oh. That’s so Monica can keep track.",Rachel,anger,negative,3,0,3,19,"00:14:40,629","00:14:47,385"',
        ],
    )
    train = raw / "train" / "train_splits"
    write_wav(train / "dia0_utt0.wav")
    write_mp4(train / "dia0_utt1.mp4")
    write_mp4(train / "dia1_utt1.mp4")
    write_wav(train / "dia1_utt1.wav")  # preferred over the mp4
    (train / "dia1_utt0.mp4").write_bytes(np.random.default_rng(0).bytes(4096))  # corrupt clip
    (train / "._dia1_utt2.mp4").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork, not a clip
    write_wav(train / "dia1_utt3.wav")
    dev = raw / "dev" / "dev_splits_complete"
    write_wav(dev / "dia0_utt0.wav")
    write_wav(dev / "dia0_utt1.wav")
    test = raw / "test" / "output_repeated_splits_test"
    write_wav(test / "dia0_utt0.wav")
    write_mp4(test / "dia3_utt0.mp4")
    return tmp_path


def test_meld_miniature_default(meld_root: Path) -> None:
    c = prepare_meld(meld_root, progress=False)
    assert c.name == "meld" and c.scheme == "meld7"
    assert c.classes == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    ids = [r.id for r in c.records]
    assert ids == [
        "train_dia0_utt0",
        "train_dia0_utt1",
        "train_dia1_utt1",
        "train_dia1_utt3",
        "dev_dia0_utt0",
        "dev_dia0_utt1",
        "test_dia0_utt0",
        "test_dia3_utt0",
    ]
    by = {r.id: r for r in c.records}
    assert [r.split for r in c.records] == ["train"] * 4 + ["dev"] * 2 + ["test"] * 2
    assert by["train_dia1_utt1"].dialogue == "train_dia1" and by["train_dia1_utt1"].turn == 1
    assert by["train_dia1_utt1"].audio.endswith("train_splits/dia1_utt1.wav")  # wav preferred over mp4
    assert by["train_dia0_utt1"].audio.endswith("dia0_utt1.mp4") and os.path.isabs(by["train_dia0_utt1"].audio)
    assert by["test_dia3_utt0"].audio.endswith("dia3_utt0.mp4")
    assert by["train_dia0_utt1"].speaker == "The Interviewer"
    assert by["train_dia1_utt1"].text == QUOTED and by["train_dia1_utt1"].label == "joy"
    assert by["train_dia1_utt3"].text == "Ross\ufffds line" and by["train_dia1_utt3"].label == "fear"
    assert by["dev_dia0_utt0"].text == "Oh my God, he’s lost it."
    assert by["train_dia0_utt0"].start is None and by["train_dia0_utt0"].end is None
    assert by["train_dia0_utt0"].extra == {
        "sentiment": "neutral",
        "season": 8,
        "episode": 21,
        "start_time": "00:16:16,059",
        "end_time": "00:16:21,731",
        "sr_no": "1",
    }
    assert c.label_counts("train") == {
        "neutral": 2, "surprise": 0, "fear": 1, "sadness": 0, "joy": 1, "disgust": 0, "anger": 0
    }  # fmt: skip
    rep = c.report
    assert rep.missing_audio == ["train_dia1_utt2"] and rep.bad_audio == ["train_dia1_utt0"]
    assert rep.total == 8 and not rep.duplicates and not rep.empty_text
    notes = "\n".join(rep.notes)
    assert "train_sent_emo.csv:7: Dialogue_ID 'x'" in notes
    assert "train_sent_emo.csv:8: expected 11 fields, got 4" in notes
    assert "train_sent_emo.csv: 1 row(s) were not valid UTF-8" in notes
    assert "missing audio: 1 utterance(s) (train 1), dropped" in notes
    assert "bad audio: 1 utterance(s) (train 1), dropped" in notes
    assert "dia1_utt0.mp4" in notes  # the bad clip is named


def test_meld_allow_missing_audio(meld_root: Path) -> None:
    c = prepare_meld(meld_root, allow_missing_audio=True, progress=False)
    assert len(c.records) == 10
    train = [r for r in c.records if r.dialogue == "train_dia1"]
    assert [r.turn for r in train] == [0, 1, 2, 3]  # dialogue order, though the CSV lists turn 1 first
    by = {r.id: r for r in c.records}
    assert by["train_dia1_utt2"].audio is None and by["train_dia1_utt2"].text == MOJIBAKE
    assert (
        by["train_dia1_utt0"].audio is None and "cannot read audio header" in by["train_dia1_utt0"].extra["audio_error"]
    )
    assert by["train_dia1_utt0"].text == "“Quoted”, with a comma"
    assert c.report.missing_audio == ["train_dia1_utt2"] and c.report.bad_audio == ["train_dia1_utt0"]
    assert any("kept with audio=None" in n for n in c.report.notes)


def test_meld_other_schemes(meld_root: Path) -> None:
    c4 = prepare_meld(meld_root, labels="meld4", allow_missing_audio=True, progress=False)
    assert c4.classes == ("neutral", "happy", "sad", "angry")
    assert c4.label_counts() == {"neutral": 3, "happy": 1, "sad": 0, "angry": 2}
    assert c4.dropped == {"surprise": 1, "fear": 2, "disgust": 1}
    assert {r.raw_label for r in c4.records if r.label == "happy"} == {"joy"}
    cs = prepare_meld(meld_root, labels="meld-sentiment", allow_missing_audio=True, progress=False)
    assert cs.classes == ("neutral", "positive", "negative")
    assert cs.label_counts() == {"neutral": 3, "positive": 2, "negative": 5}
    assert {r.id: r.extra["emotion"] for r in cs.records}["dev_dia0_utt1"] == "disgust"
    assert get_scheme("meld4").map("joy") == "happy"


def test_meld_audio_check_levels(meld_root: Path) -> None:
    unchecked = prepare_meld(meld_root, check_audio=False, progress=False)
    assert not unchecked.report.bad_audio and "train_dia1_utt0" in {r.id for r in unchecked.records}
    decoded = prepare_meld(meld_root, decode_audio=True, splits=("train",), progress=False)
    assert decoded.report.bad_audio == ["train_dia1_utt0"]
    assert [r.split for r in decoded.records] == ["train"] * 4


def test_meld_layout_problems(tmp_path: Path, meld_root: Path) -> None:
    with pytest.raises(CorpusError, match="no MELD annotation CSV"):
        prepare_meld(tmp_path / "MELD.Raw" / "train", progress=False)
    (meld_root / "test_sent_emo.csv").unlink()
    shutil.rmtree(meld_root / "MELD.Raw" / "dev")
    c = prepare("meld", meld_root, allow_missing_audio=True, progress=False)
    notes = "\n".join(c.report.notes)
    assert "test_sent_emo.csv not found" in notes
    assert "no dev_splits_complete/ or dev_splits/ folder" in notes
    assert "missing audio: 3 utterance(s) (train 1, dev 2)" in notes
    assert {r.split for r in c.records} == {"train", "dev"}
    (meld_root / "MELD.Raw" / "dev_sent_emo.csv").write_text("Sr No.,Utterance,Speaker,Sentiment\n1,a,b,neutral\n")
    with pytest.raises(CorpusError, match=r"dev_sent_emo\.csv: missing column\(s\) Emotion, Dialogue_ID, Utterance_ID"):
        prepare_meld(meld_root, progress=False)


def test_meld_real_dev_csv(tmp_path: Path) -> None:
    src = shared_data() / "meld-csv"
    if not (src / "dev_sent_emo.csv").is_file():
        pytest.skip(f"real MELD CSVs not found at {src} (set EMOFUSE_SHARED_DATA to the shared data folder)")
    shutil.copy(src / "dev_sent_emo.csv", tmp_path / "dev_sent_emo.csv")  # only into tmp_path, never the repo
    c = prepare_meld(tmp_path, allow_missing_audio=True, progress=False)
    assert len(c.records) == 1109
    assert c.label_counts() == {
        "neutral": 470, "surprise": 150, "fear": 40, "sadness": 111, "joy": 163, "disgust": 22, "anger": 153
    }  # fmt: skip
    assert {r.split for r in c.records} == {"dev"} and len({r.dialogue for r in c.records}) == 114
    assert len(c.report.missing_audio) == 1109 and not c.report.duplicates
    assert not any("dev_sent_emo.csv:" in n for n in c.report.notes)  # no malformed row
    c4 = prepare_meld(tmp_path, labels="meld4", allow_missing_audio=True, progress=False)
    assert len(c4.records) == 897
    assert c4.label_counts() == {"neutral": 470, "happy": 163, "sad": 111, "angry": 153}
    assert prepare_meld(tmp_path, progress=False).records == []  # no clips: everything is dropped


def test_meld_real_train_head(tmp_path: Path) -> None:
    src = shared_data() / "meld-csv" / "train_sent_emo.head400.csv"
    if not src.is_file():
        pytest.skip(f"real MELD CSVs not found at {src.parent} (set EMOFUSE_SHARED_DATA to the shared data folder)")
    shutil.copy(src, tmp_path / "train_sent_emo.csv")
    c = prepare_meld(tmp_path, allow_missing_audio=True, progress=False)
    assert len(c.records) == 400 and {r.split for r in c.records} == {"train"}
    assert sum(c.label_counts().values()) == 400
    assert not any("train_sent_emo.csv:" in n for n in c.report.notes)
    for r in c.records[:50]:
        assert r.id == f"{r.dialogue}_utt{r.turn}"
