"""IEMOCAP recipe on a miniature release written in the real layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.iemocap import cmd_vote, prepare_iemocap
from emofuse.data.labels import get_scheme

SR = 16_000
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
MALFORMED_EVAL = "[17.0000 - 18.0000]\tSes01F_impro01_M002\tang\t[2.0000, bad]"

# dialog -> [(utt, start, end, code, (v, a, d))] in file order (not time order)
EVAL = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", (2.5, 2.5, 2.5)),
        ("Ses01F_impro01_M000", 10.0, 11.5, "hap", (4.0, 3.5, 3.0)),
        ("Ses01F_impro01_F001", 12.0, 14.0, "exc", (4.5, 4.0, 3.5)),
        ("Ses01F_impro01_M001", 8.5, 9.5, "fru", (2.0, 3.5, 3.5)),
        ("Ses01F_impro01_F002", 15.0, 16.0, "xxx", (2.5, 3.0, 3.0)),
    ],
    "Ses01F_script01_1": [
        ("Ses01F_script01_1_F000", 1.0, 2.0, "sad", (1.5, 2.0, 2.0)),
        ("Ses01F_script01_1_M000", 2.5, 3.5, "ang", (1.0, 4.5, 4.0)),
        ("Ses01F_script01_1_M001", 4.0, 5.0, "sur", (3.0, 4.0, 3.0)),
    ],
    "Ses02M_impro02": [
        ("Ses02M_impro02_F000", 0.5, 1.5, "neu", (3.0, 2.0, 2.5)),
        ("Ses02M_impro02_M000", 3.5, 4.5, "neu", (3.0, 2.5, 2.5)),
        ("Ses02M_impro02_M001", 5.0, 6.0, "oth", (3.0, 2.5, 2.5)),
    ],
}
NO_WAV = {"Ses01F_script01_1_M000"}
NO_TEXT = {"Ses02M_impro02_M000"}
TEXT = {
    "Ses01F_impro01_F000": "Excuse me.",
    "Ses01F_impro01_M000": "Yeah.",
    "Ses01F_impro01_F001": "Is there a problem?",
    "Ses01F_impro01_M001": "Do you have your forms?",
    "Ses01F_impro01_F002": "Who told you to get in this line?",
    "Ses01F_script01_1_F000": "What's he going to say?",
    "Ses01F_script01_1_M000": "Get out!",
    "Ses01F_script01_1_M001": "Really?",
    "Ses02M_impro02_F000": "Hi there.",
    "Ses02M_impro02_M001": "Hmm.",
}
# dialog -> evaluator -> utt -> categorical text after ":" (the first listed label is the vote)
CAT = {
    "Ses01F_impro01": {
        1: {"F000": "Neutral state; ()", "M000": "Happiness; ()", "F001": "Excited; ()",
            "M001": "Frustration; Anger; ()", "F002": "Neutral state; ()"},
        2: {"F000": "Neutral state; ()", "M000": "Happiness; Excited; ()", "F001": "Excited; ()",
            "M001": "Anger; ()", "F002": "Neutral state; ()"},
        3: {"F000": "Neutral state; ()", "M000": "Excited; ()", "F001": "Happiness; ()",
            "M001": "Frustration; ()", "F002": "Sadness; ()"},
        4: {"F000": "Frustration; ()", "M000": "Neutral state; ()", "F001": "Neutral state; ()",
            "M001": "Sadness; ()", "F002": "Sadness; (sighs)"},
    },
    "Ses01F_script01_1": {
        1: {"F000": "Sadness; ()", "M000": "Anger; ()", "M001": "Surprise; ()"},
        2: {"F000": "Sadness; ()", "M000": "Anger; ()", "M001": "Happiness; ()"},
        3: {"F000": "Neutral state; ()", "M000": "Anger; Frustration; ()", "M001": "Other:curious; ()"},
    },
}  # fmt: skip


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR // 2) / SR
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)


def _eval_file(dialog: str) -> list[str]:
    lines = [HEADER, ""]
    for utt, start, end, code, (v, a, d) in EVAL[dialog]:
        lines.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
        lines += ["C-E2:\tNeutral state;\t()", "C-E3:\tNeutral state;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
        if utt == "Ses01F_impro01_F001":
            lines += [MALFORMED_EVAL, ""]
    return lines


def write_iemocap(root: Path) -> Path:
    for dialog, turns in EVAL.items():
        session = root / f"Session{int(dialog[3:5])}"
        emo = session / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True, exist_ok=True)
        (emo / f"{dialog}.txt").write_text("\n".join(_eval_file(dialog)) + "\n")
        trans = []
        for utt, start, end, *_ in sorted(turns, key=lambda t: t[1]):
            if utt not in NO_TEXT:
                trans.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {TEXT[utt]}")
            if utt not in NO_WAV:
                _wav(session / "sentences" / "wav" / dialog / f"{utt}.wav")
        trans.insert(2, f"{dialog}_MXX0 [011.6000-011.9000]: [LAUGHTER]")
        (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(trans) + "\n")
        for ev, rows in CAT.get(dialog, {}).items():
            (emo / "Categorical").mkdir(exist_ok=True)
            lines = [f"{dialog}_{u} :{text}" for u, text in rows.items()]
            if ev == 1 and dialog == "Ses01F_impro01":
                lines.insert(1, "this line has no colon")
            (emo / "Categorical" / f"{dialog}_e{ev}_cat.txt").write_text("\n".join(lines) + "\n")
    # an actor self-evaluation file is not an evaluator vote
    (root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_F_cat.txt").write_text(
        "Ses01F_impro01_F001 :Anger; ()\nSes01F_impro01_M001 :Anger; ()\n"
    )
    return root


@pytest.fixture(scope="module")
def iemocap_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_iemocap(tmp_path_factory.mktemp("IEMOCAP_full_release"))


def _by_id(corpus):
    return {r.id: r for r in corpus.records}


def test_iemocap4_default(iemocap_root):
    c = prepare_iemocap(iemocap_root, progress=False)
    assert c.name == "iemocap" and c.scheme == "iemocap4"
    assert c.classes == ("neutral", "happy", "sad", "angry")
    recs = _by_id(c)
    assert sorted(recs) == sorted(
        ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_F001", "Ses01F_script01_1_F000"]
        + ["Ses02M_impro02_F000", "Ses02M_impro02_M000"]
    )
    assert recs["Ses01F_impro01_F001"].label == "happy"  # exc merged into happy
    assert recs["Ses01F_impro01_F001"].raw_label == "exc"
    assert c.label_counts() == {"neutral": 3, "happy": 2, "sad": 1, "angry": 0}
    assert c.dropped == {"fru": 1, "oth": 1, "sur": 1, "xxx": 1}
    assert c.report.missing_audio == ["Ses01F_script01_1_M000"]  # ang, dropped for its missing wav
    assert c.report.empty_text == ["Ses02M_impro02_M000"]
    assert c.report.duplicates == [] and c.report.unknown_labels == []


def test_record_fields(iemocap_root):
    recs = _by_id(prepare_iemocap(iemocap_root, progress=False))
    r = recs["Ses01F_impro01_M000"]
    assert r.speaker == "Ses01M" and r.session == "Session1" and r.dialogue == "Ses01F_impro01"
    assert r.turn == 2  # F000 6.29 s, M001 8.5 s (listed later in the file), M000 10.0 s
    assert r.start is None and r.end is None
    assert Path(r.audio).is_absolute() and Path(r.audio).is_file()
    assert r.audio.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")
    assert r.text == "Yeah."
    assert r.extra == {
        "gender": "M",
        "mode": "improvised",
        "valence": 4.0,
        "activation": 3.5,
        "dominance": 3.0,
        "dialog_start": 10.0,
        "dialog_end": 11.5,
    }
    s = recs["Ses01F_script01_1_F000"]
    assert s.speaker == "Ses01F" and s.extra["mode"] == "scripted" and s.extra["gender"] == "F" and s.turn == 0
    assert s.text == "What's he going to say?"
    two = recs["Ses02M_impro02_F000"]
    assert two.speaker == "Ses02F" and two.session == "Session2" and two.text == "Hi there."
    assert [r.id for r in prepare_iemocap(iemocap_root, progress=False).records][:3] == [
        "Ses01F_impro01_F000",
        "Ses01F_impro01_M000",
        "Ses01F_impro01_F001",
    ]


def test_notes_malformed_and_missing_sessions(iemocap_root):
    c = prepare_iemocap(iemocap_root, labels="iemocap4-cmd", progress=False)
    lineno = _eval_file("Ses01F_impro01").index(MALFORMED_EVAL) + 1
    notes = "\n".join(c.report.notes)
    assert f"Ses01F_impro01.txt:{lineno}: malformed label line: {MALFORMED_EVAL!r}" in notes
    assert "Ses01F_impro01_e1_cat.txt:2: malformed categorical line: 'this line has no colon'" in notes
    assert "Session3, Session4, Session5" in notes
    assert "ignored 1 file(s)" in notes
    assert "Ses01F_impro01_M002" not in _by_id(c)


def test_allow_missing_audio(iemocap_root):
    c = prepare_iemocap(iemocap_root, allow_missing_audio=True, progress=False)
    recs = _by_id(c)
    assert len(recs) == 7
    assert recs["Ses01F_script01_1_M000"].audio is None and recs["Ses01F_script01_1_M000"].label == "angry"
    assert c.report.missing_audio == ["Ses01F_script01_1_M000"]


def test_cmd_vote_rule(iemocap_root):
    c = prepare_iemocap(iemocap_root, labels="iemocap4-cmd", progress=False)
    recs = _by_id(c)
    assert {k: r.label for k, r in recs.items()} == {
        "Ses01F_impro01_F000": "neutral",  # 3 of 4
        "Ses01F_impro01_M000": "happy",  # Happiness 2 (first listed), Excited 1
        "Ses01F_script01_1_F000": "sad",
    }
    assert recs["Ses01F_impro01_M000"].extra["votes"] == {"Excited": 1, "Happiness": 2, "Neutral state": 1}
    assert c.dropped == {"Excited": 1, "Frustration": 1, "no-majority": 1, "no-votes": 3, "tie": 1}
    assert c.report.missing_audio == ["Ses01F_script01_1_M000"]  # Anger 3 votes, but no wav

    exc = prepare_iemocap(iemocap_root, labels="iemocap4-cmd-exc", allow_missing_audio=True, progress=False)
    labels = {k: r.label for k, r in _by_id(exc).items()}
    assert labels["Ses01F_impro01_F001"] == "happy"  # Excited 2 + Happiness 1
    assert labels["Ses01F_script01_1_M000"] == "angry"
    assert len(labels) == 5
    assert exc.dropped == {"Frustration": 1, "no-majority": 1, "no-votes": 3, "tie": 1}


def test_cmd_vote_function():
    assert cmd_vote({"Neutral state": 2, "Sadness": 2}) == (None, "tie")
    assert cmd_vote({"Neutral state": 2, "Frustration": 2}) == ("neutral", "neutral")
    assert cmd_vote({"Anger": 1, "Frustration": 2}) == (None, "Frustration")
    assert cmd_vote({}) == (None, "no-votes")
    assert cmd_vote({"Excited": 2}) == (None, "Excited")
    assert cmd_vote({"Excited": 2}, merge_excited=True) == ("happy", "happy")


def test_iemocap6_and_7(iemocap_root):
    c6 = prepare_iemocap(iemocap_root, labels="iemocap6", progress=False)
    assert c6.classes == ("neutral", "happy", "sad", "angry", "excited", "frustrated")
    assert c6.label_counts() == {"neutral": 3, "happy": 1, "sad": 1, "angry": 0, "excited": 1, "frustrated": 1}
    assert c6.dropped == {"oth": 1, "sur": 1, "xxx": 1}
    c7 = prepare_iemocap(iemocap_root, labels="iemocap7", progress=False)
    assert c7.classes == ("angry", "excited", "happy", "sad", "frustrated", "surprise", "neutral")
    assert c7.label_counts()["surprise"] == 1 and len(c7.records) == 8
    assert c7.dropped == {"oth": 1, "xxx": 1}
    assert get_scheme("iemocap4").map("exc") == "happy"


def test_root_errors(tmp_path, iemocap_root):
    with pytest.raises(CorpusError, match="no IEMOCAP session found"):
        prepare_iemocap(tmp_path, progress=False)
    with pytest.raises(ValueError, match="does not apply to IEMOCAP"):
        prepare_iemocap(iemocap_root, labels="sentiment2", progress=False)
    # the parent of IEMOCAP_full_release works too, through the registry
    parent = tmp_path / "corpora"
    shutil.copytree(iemocap_root / "Session2", parent / "IEMOCAP_full_release" / "Session2")
    c = prepare("iemocap", parent, progress=False)
    assert len(c.records) == 2 and "Session1, Session3, Session4, Session5" in "\n".join(c.report.notes)


# --- visual feature folder (video_features): ResNet-101 face features per utterance, absent when missing ---


def _faces(folder: Path, utts: dict[str, int], dim: int = 8) -> None:
    for utt, frames in utts.items():
        dialog = utt.rsplit("_", 1)[0]
        path = folder / dialog / f"{utt}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((frames, dim), float(frames), dtype=np.float32))


def test_video_features_folder(tmp_path):
    from emofuse.features.files import FileFeatureStore

    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    _faces(tmp_path / "faces" / "Session1", {"Ses01F_impro01_F000": 3, "Ses01F_impro01_F001": 5})
    np.save(tmp_path / "faces" / "mean.npy", np.zeros(8, dtype=np.float32))  # not an utterance id: ignored
    c = prepare_iemocap(root, progress=False, video_features=tmp_path / "faces")
    recs = _by_id(c)
    assert recs["Ses01F_impro01_F000"].features == {
        "video": str(tmp_path / "faces/Session1/Ses01F_impro01/Ses01F_impro01_F000.npy")
    }
    assert recs["Ses02M_impro02_F000"].features == {}  # no file: modality absent, not zeros
    store = FileFeatureStore(c.records, "video")
    assert store.output_dim == 8 and tuple(store.get("Ses01F_impro01_F001").shape) == (5, 8)
    assert "Ses01F_script01_1_F000" not in store
    note = next(n for n in c.report.notes if n.startswith("video features:"))
    assert note.startswith("video features: 2 of 6 utterance(s) have a file; 4 without (video modality absent)")
    assert not c.report.missing_features


def test_video_features_parallel_and_next_to_wavs(tmp_path, monkeypatch):
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    _faces(root / "Session2" / "sentences" / "resnet101", {"Ses02M_impro02_F000": 2})
    monkeypatch.chdir(tmp_path)  # "resnet101" is no folder here: found as Session*/sentences/resnet101
    c = prepare_iemocap(root, progress=False, video_features="resnet101")
    assert [r.id for r in c.records if r.features] == ["Ses02M_impro02_F000"]
    _faces(root / "Session1" / "sentences" / "wav", {"Ses01F_impro01_M000": 4})  # next to the wav
    c = prepare_iemocap(root, progress=False, video_features=root)
    assert sorted(r.id for r in c.records if r.features) == ["Ses01F_impro01_M000", "Ses02M_impro02_F000"]


def test_video_required_drops_utterances_without_frames(tmp_path):
    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    _faces(tmp_path / "faces", {"Ses01F_impro01_F000": 3, "Ses01F_impro01_F001": 0, "Ses02M_impro02_F000": 2})
    c = prepare_iemocap(root, progress=False, video_features=tmp_path / "faces", video_required=True)
    assert sorted(r.id for r in c.records) == ["Ses01F_impro01_F000", "Ses02M_impro02_F000"]  # F001: 0 frames
    assert any(n.startswith("video_required: dropped 4 utterance(s) without video frames") for n in c.report.notes)
    with pytest.raises(ValueError, match="video_required needs video_features"):
        prepare_iemocap(root, progress=False, video_required=True)


def test_video_features_errors_and_cli(tmp_path):
    from typer.testing import CliRunner

    from emofuse.cli.main import app
    from emofuse.data.manifest import read_manifest

    root = write_iemocap(tmp_path / "IEMOCAP_full_release")
    with pytest.raises(CorpusError, match=r"video_features: .*nowhere is not a folder"):
        prepare_iemocap(root, progress=False, video_features=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"video_features: no <utt>\.npy"):
        prepare_iemocap(root, progress=False, video_features=tmp_path / "empty")
    _faces(tmp_path / "faces", {"Ses01F_impro01_F000": 3})
    out = tmp_path / "m.jsonl"
    res = CliRunner().invoke(
        app, ["prepare", "iemocap", str(root), "-o", str(out), "-q", "--option", f"video_features={tmp_path / 'faces'}"]
    )
    assert res.exit_code == 0, res.output
    assert [r.id for r in read_manifest(out) if "video" in r.features] == ["Ses01F_impro01_F000"]
