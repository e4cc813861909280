"""RAVDESS, CREMA-D, TESS and EmoDB recipes on miniature trees in their real layouts, plus the real RAVDESS dev copy."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.acted import prepare_cremad, prepare_emodb, prepare_ravdess, prepare_tess


def shared_data() -> Path:
    env = os.environ.get("EMOFUSE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def write_audio(path: Path, seconds: float = 0.2, sr: int = 16000) -> Path:
    """A short real audio file; the format follows the suffix (wav or flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), sr)
    return path


def write_junk(path: Path, n: int = 3000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).bytes(n))
    return path


def joined_notes(corpus) -> str:
    return "\n".join(corpus.report.notes)


# ------------------------------------------------------------------------------------------- RAVDESS
@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
    root = tmp_path / "RAVDESS"
    write_audio(root / "Actor_01" / "03-01-05-02-01-01-01.wav")  # angry, strong, statement 1
    write_audio(root / "Actor_01" / "03-01-05-02-01-01-01.flac")  # same take as flac: wav wins
    write_audio(root / "Actor_01" / "03-01-01-01-02-02-01.flac")  # neutral, statement 2, repetition 2
    write_audio(root / "Actor_12" / "03-01-03-01-01-01-12.wav")  # happy
    write_audio(root / "Actor_12" / "03-01-02-01-01-01-12.wav")  # calm
    write_audio(root / "Actor_12" / "03-02-04-01-02-01-12.wav")  # song, sad
    write_junk(root / "Actor_12" / "03-01-06-01-01-01-12.wav")  # fearful, corrupt
    write_junk(root / "Actor_12" / "02-01-05-01-01-01-12.mp4")  # video-only: skipped, never opened
    write_junk(root / "Actor_12" / "01-01-03-01-01-01-12.mp4")  # full-AV take of an audio-only file present
    write_audio(root / "Actor_12" / "03-01-09-01-01-01-12.wav")  # emotion 09 does not exist
    write_audio(root / "Actor_12" / "readme.wav")
    (root / "Actor_12" / "notes.txt").write_text("not audio")
    return root


def test_ravdess_miniature(ravdess_root: Path) -> None:
    c = prepare_ravdess(ravdess_root, progress=False)
    assert c.scheme == "ravdess8"
    assert c.classes == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert [r.id for r in c.records] == [
        "03-01-01-01-02-02-01",
        "03-01-05-02-01-01-01",
        "03-01-02-01-01-01-12",
        "03-01-03-01-01-01-12",
        "03-02-04-01-02-01-12",
    ]
    by = {r.id: r for r in c.records}
    angry = by["03-01-05-02-01-01-01"]
    assert angry.audio.endswith("Actor_01/03-01-05-02-01-01-01.wav") and os.path.isabs(angry.audio)
    assert (angry.label, angry.raw_label, angry.speaker) == ("angry", "angry", "Actor_01")
    assert angry.text == "Kids are talking by the door"
    assert angry.extra == {
        "gender": "male",
        "intensity": "strong",
        "statement": "01",
        "repetition": "01",
        "vocal_channel": "speech",
        "modality": "audio-only",
        "emotion_code": "05",
    }
    neutral = by["03-01-01-01-02-02-01"]
    assert neutral.text == "Dogs are sitting by the door" and neutral.audio.endswith(".flac")
    assert neutral.extra["repetition"] == "02"
    song = by["03-02-04-01-02-01-12"]
    assert (song.label, song.speaker, song.extra["gender"], song.extra["vocal_channel"]) == (
        "sad", "Actor_12", "female", "song"
    )  # fmt: skip
    assert c.report.bad_audio == ["03-01-06-01-01-01-12"] and not c.report.missing_audio
    notes = joined_notes(c)
    assert "Actor_12/03-01-09-01-01-01-12.wav: malformed ravdess file name" in notes
    assert "Actor_12/readme.wav: malformed ravdess file name" in notes
    assert "skipped 1 video-only (modality 02) file(s), e.g. Actor_12/02-01-05-01-01-01-12.mp4" in notes
    assert "skipped 1 full-AV (modality 01) file(s)" in notes
    assert "1 file(s) skipped: same name" in notes
    assert "notes.txt" not in notes


def test_ravdess_schemes_and_bad_audio(ravdess_root: Path) -> None:
    c4 = prepare("ravdess", ravdess_root, labels="ravdess4", progress=False)
    assert c4.classes == ("neutral", "happy", "sad", "angry")
    assert c4.label_counts() == {"neutral": 1, "happy": 1, "sad": 1, "angry": 1}
    assert c4.dropped == {"calm": 1, "fearful": 1}  # the corrupt file's label is dropped before its audio is read
    kept = prepare_ravdess(ravdess_root, allow_missing_audio=True, progress=False)
    bad = {r.id: r for r in kept.records}["03-01-06-01-01-01-12"]
    assert bad.audio is None and bad.label == "fearful" and "audio_error" in bad.extra
    empty = write_junk(ravdess_root.parent / "empty" / "x.txt").parent
    with pytest.raises(CorpusError, match="no ravdess audio files"):
        prepare_ravdess(empty, progress=False)


def test_ravdess_real_dev_copy() -> None:
    root = shared_data() / "ravdess-dev"
    if not root.is_dir():
        pytest.skip(f"real RAVDESS dev copy not found at {root} (set EMOFUSE_SHARED_DATA to the shared data folder)")
    c = prepare_ravdess(root, progress=False)
    assert len(c.records) == 1200 and c.report.ok and not c.report.notes
    assert len({r.speaker for r in c.records}) == 20
    # RAVDESS design: per actor, neutral has 1 intensity x 2 statements x 2 repetitions = 4 files and every
    # other emotion 2 x 2 x 2 = 8, so 20 actors give neutral 80 and 160 for each of the other seven.
    assert c.label_counts() == {
        "neutral": 80, "calm": 160, "happy": 160, "sad": 160,
        "angry": 160, "fearful": 160, "disgust": 160, "surprised": 160,
    }  # fmt: skip
    assert set(Counter(r.speaker for r in c.records).values()) == {60}
    assert Counter(r.extra["gender"] for r in c.records) == {"male": 600, "female": 600}
    assert Counter(r.extra["intensity"] for r in c.records) == {"normal": 640, "strong": 560}
    assert Counter(r.text for r in c.records) == {
        "Kids are talking by the door": 600,
        "Dogs are sitting by the door": 600,
    }
    assert {r.extra["vocal_channel"] for r in c.records} == {"speech"}
    assert all(r.audio.endswith(".flac") for r in c.records)
    assert prepare_ravdess(root, labels="ravdess4", progress=False).label_counts() == {
        "neutral": 80, "happy": 160, "sad": 160, "angry": 160
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- CREMA-D
@pytest.fixture
def cremad_root(tmp_path: Path) -> Path:
    root = tmp_path / "CREMA-D"
    wav = root / "AudioWAV"
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_TIE_NEU_XX", "1002_ITH_SAD_LO", "1091_WSI_DIS_MD"):
        write_audio(wav / f"{name}.wav")
    write_junk(root / "AudioMP3" / "1001_DFA_ANG_XX.mp3")  # same clip in the mp3 folder: the wav wins
    write_audio(wav / "1001_XYZ_ANG_XX.wav")  # unknown sentence code
    write_audio(wav / "1001_DFA_ANG.wav")  # level missing
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n"
    )
    return root


def test_cremad_miniature(cremad_root: Path) -> None:
    c = prepare_cremad(cremad_root, progress=False)
    assert c.classes == ("neutral", "happy", "sad", "angry", "fear", "disgust")
    assert [r.id for r in c.records] == [
        "1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1002_ITH_SAD_LO", "1002_TIE_NEU_XX", "1091_WSI_DIS_MD"
    ]  # fmt: skip
    by = {r.id: r for r in c.records}
    ang = by["1001_DFA_ANG_XX"]
    assert (ang.label, ang.raw_label, ang.speaker, ang.text) == ("angry", "anger", "1001", "Don't forget a jacket")
    assert ang.audio.endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    assert ang.extra == {
        "sentence_code": "DFA",
        "level": "XX",
        "intensity": "unspecified",
        "emotion_code": "ANG",
        "gender": "male",
        "age": 51,
        "race": "Caucasian",
        "ethnicity": "Not Hispanic",
    }
    assert by["1002_ITH_SAD_LO"].text == "I think I have a doctor's appointment"
    assert (by["1002_ITH_SAD_LO"].extra["gender"], by["1002_ITH_SAD_LO"].extra["intensity"]) == ("female", "low")
    assert by["1091_WSI_DIS_MD"].text == "We'll stop in a couple of minutes"
    assert "gender" not in by["1091_WSI_DIS_MD"].extra
    notes = joined_notes(c)
    assert "AudioWAV/1001_XYZ_ANG_XX.wav: malformed cremad file name (unknown sentence code 'XYZ')" in notes
    assert "AudioWAV/1001_DFA_ANG.wav: malformed cremad file name" in notes
    assert "actor(s) 1091 not in VideoDemographics.csv" in notes
    c4 = prepare_cremad(cremad_root, labels="cremad4", progress=False)
    assert c4.label_counts() == {"neutral": 1, "happy": 1, "sad": 1, "angry": 1} and c4.dropped == {"disgust": 1}


def test_cremad_without_demographics(cremad_root: Path) -> None:
    (cremad_root / "VideoDemographics.csv").unlink()
    c = prepare_cremad(cremad_root, progress=False)
    assert len(c.records) == 5 and all("gender" not in r.extra for r in c.records)
    assert "VideoDemographics.csv not found" in joined_notes(c)


# ---------------------------------------------------------------------------------------------- TESS
def test_tess_miniature(tmp_path: Path) -> None:
    root = tmp_path / "TESS Toronto emotional speech set data"
    write_audio(root / "OAF_angry" / "OAF_back_angry.wav")
    write_audio(root / "OAF_Pleasant_surprise" / "OAF_bar_ps.wav")
    write_audio(root / "YAF_happy" / "YAF_dog_happy.wav")
    write_audio(root / "YAF_fear" / "YAF_date_fear.wav")
    write_audio(root / "YAF_neutral" / "YAF_neutral.wav")  # no word
    c = prepare_tess(root, progress=False)
    assert c.classes == ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
    assert [r.id for r in c.records] == [
        "OAF_bar_ps",
        "OAF_back_angry",
        "YAF_date_fear",
        "YAF_dog_happy",
    ]  # sorted paths
    by = {r.id: r for r in c.records}
    assert (by["OAF_back_angry"].speaker, by["OAF_back_angry"].text) == ("OAF", "Say the word back")
    assert by["OAF_back_angry"].extra == {"gender": "female", "age": 64, "word": "back", "emotion_code": "angry"}
    ps = by["OAF_bar_ps"]
    assert (ps.label, ps.raw_label, ps.extra["word"]) == ("surprise", "pleasant surprise", "bar")
    assert (by["YAF_dog_happy"].speaker, by["YAF_dog_happy"].extra["age"]) == ("YAF", 26)
    assert "YAF_neutral/YAF_neutral.wav: malformed tess file name" in joined_notes(c)
    c4 = prepare("tess", root, labels="tess4", progress=False)
    assert c4.label_counts() == {"neutral": 0, "happy": 1, "sad": 0, "angry": 1}
    assert c4.dropped == {"fear": 1, "pleasant surprise": 1}


# --------------------------------------------------------------------------------------------- EmoDB
def test_emodb_miniature(tmp_path: Path) -> None:
    wav = tmp_path / "emodb" / "wav"
    for name in ("03a01Fa", "14a05Ta", "16b03Lc", "10b10Wb", "08b01Nb"):
        write_audio(wav / f"{name}.wav")
    write_audio(wav / "99a01Fa.wav")  # unknown speaker
    write_audio(wav / "03x01Fa.wav")  # malformed text code
    c = prepare_emodb(tmp_path / "emodb", progress=False)
    assert c.classes == ("neutral", "happy", "sad", "angry", "fear", "disgust", "boredom")
    assert [r.id for r in c.records] == ["03a01Fa", "08b01Nb", "10b10Wb", "14a05Ta", "16b03Lc"]
    by = {r.id: r for r in c.records}
    happy = by["03a01Fa"]
    assert (happy.label, happy.raw_label, happy.speaker) == ("happy", "happiness", "03")
    assert happy.text == "Der Lappen liegt auf dem Eisschrank."
    assert happy.extra == {"gender": "male", "age": 31, "text_code": "a01", "version": "a", "emotion_code": "F"}
    sad = by["14a05Ta"]
    assert (sad.label, sad.extra["gender"], sad.extra["age"]) == ("sad", "female", 35)
    assert sad.text == "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück."
    assert by["16b03Lc"].label == "boredom"
    assert by["16b03Lc"].text == "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht."
    assert (by["10b10Wb"].label, by["10b10Wb"].extra["gender"]) == ("angry", "male")
    assert by["08b01Nb"].text == "Was sind denn das für Tüten, die da unter dem Tisch stehen?"
    notes = joined_notes(c)
    assert "wav/99a01Fa.wav: malformed emodb file name (unknown speaker '99')" in notes
    assert "wav/03x01Fa.wav: malformed emodb file name" in notes
    c4 = prepare_emodb(tmp_path / "emodb", labels="emodb4", progress=False)
    assert c4.label_counts() == {"neutral": 1, "happy": 1, "sad": 1, "angry": 1} and c4.dropped == {"boredom": 1}
    with pytest.raises(CorpusError, match="root folder not found"):
        prepare_emodb(tmp_path / "nowhere", progress=False)
