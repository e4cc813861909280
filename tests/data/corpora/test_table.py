"""Generic CSV recipe (``path,label,speaker,text,...``) on a small real CSV with real audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.corpora.table import prepare_csv, read_csv_rows

QUOTED = "Well, hello — “friend”!"
MOJIBAKE = "I donÂ\x92t know"


def write_wav(path: Path, seconds: float = 0.2, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.ones(int(seconds * sr))).astype(np.float32), sr)
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_wav(data / "clips" / "a.wav")
    write_wav(data / "clips" / "b.wav")
    write_wav(data / "other" / "a.wav")
    absolute = write_wav(tmp_path / "elsewhere" / "c.wav")
    (data / "clips" / "corrupt.wav").write_bytes(np.random.default_rng(2).bytes(2048))
    lines = [
        "path,label,speaker,text,split,start,end,gender,session",
        f'clips/a.wav,happy,spk1,"{QUOTED}",train,,,female,s1',
        "clips/b.wav,sad,spk2,,dev,0.5,1.5,male,s1",
        f"{absolute},angry,spk3,{MOJIBAKE},test,,,male,s2",
        "other/a.wav,happy,spk1,again,train,,,female,s2",
        "clips/missing.wav,sad,spk2,gone,train,,,male,s1",
        "clips/corrupt.wav,angry,spk3,broken,train,,,male,s1",
        "clips/b.wav,sad,spk2,bad start,train,abc,,male,s1",
        "clips/b.wav,sad,spk2,too few",
        "clips/b.wav,,spk2,no label,train,,,male,s1",
    ]
    csv_path = data / "meta.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def test_csv_labels_as_written(table: Path) -> None:
    c = prepare_csv(table, progress=False)
    assert c.name == "csv" and c.scheme == "csv" and c.classes == ("angry", "happy", "sad")
    ids = [r.id for r in c.records]
    # stems 'a' and 'b' repeat, so those ids carry the data-row index; 'c' is unique
    assert ids == ["a_0", "b_1", "c", "a_3", "b_8"]
    by = {r.id: r for r in c.records}
    assert by["a_0"].audio == os.path.abspath(table.parent / "clips" / "a.wav")
    assert by["a_3"].audio == os.path.abspath(table.parent / "other" / "a.wav")
    assert by["a_0"].text == QUOTED and by["c"].text == MOJIBAKE and by["b_1"].text == ""
    assert (by["a_0"].label, by["a_0"].speaker, by["a_0"].split, by["a_0"].session) == ("happy", "spk1", "train", "s1")
    assert by["a_0"].extra == {"gender": "female"}
    assert (by["b_1"].start, by["b_1"].end, by["b_1"].split) == (0.5, 1.5, "dev")
    assert by["b_8"].label is None and by["b_8"].raw_label is None  # empty label: kept unlabelled
    rep = c.report
    assert rep.missing_audio == ["missing"] and rep.bad_audio == ["corrupt"]
    assert rep.empty_text == ["b_1"]
    notes = "\n".join(rep.notes)
    assert "meta.csv:8: bad value in column 'start'" in notes
    assert "meta.csv:9: expected 9 fields, got 4; row skipped" in notes
    assert "meta.csv: 1 row(s) have an empty label" in notes


def test_csv_allow_missing_and_scheme(table: Path) -> None:
    c = prepare("csv", table, allow_missing_audio=True, progress=False)
    by = {r.id: r for r in c.records}
    assert by["missing"].audio is None and by["corrupt"].audio is None and "audio_error" in by["corrupt"].extra
    assert len(c.records) == 7
    text = table.read_text().replace("happy", "joy").replace("angry", "anger").replace("sad,", "sadness,")
    text += "clips/b.wav,surprise,spk2,oh,train,,,male,s1\n"
    table.write_text(text, encoding="utf-8")
    m = prepare_csv(table, labels="meld4", progress=False)
    assert m.scheme == "meld4" and m.classes == ("neutral", "happy", "sad", "angry")
    assert m.label_counts() == {"neutral": 0, "happy": 2, "sad": 1, "angry": 1}
    assert m.dropped == {"surprise": 1}
    assert {r.raw_label for r in m.records if r.label == "happy"} == {"joy"}


def test_csv_id_column_and_errors(tmp_path: Path) -> None:
    write_wav(tmp_path / "x.wav")
    good = tmp_path / "ids.csv"
    good.write_text("id,path,label,speaker,text,turn,dialogue\nu1,x.wav,calm,s,hi,0,d1\nu2,x.wav,calm,s,ho,1,d1\n")
    c = prepare_csv(good, progress=False)
    assert [(r.id, r.dialogue, r.turn) for r in c.records] == [("u1", "d1", 0), ("u2", "d1", 1)]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,notes\nx.wav,calm,\n")
    with pytest.raises(CorpusError) as err:
        prepare_csv(bad, progress=False)
    msg = str(err.value)
    assert "bad.csv" in msg and "speaker, text" in msg and "columns found: path, label, notes" in msg
    with pytest.raises(CorpusError, match="not found"):
        prepare_csv(tmp_path / "absent.csv", progress=False)


def test_read_csv_rows_replaces_invalid_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes(b'\xef\xbb\xbfpath,label,speaker,text\r\nx.wav,calm,s,"it\x92s, fine"\r\n')
    header, rows, notes, n_replaced = read_csv_rows(p)
    assert header == ["path", "label", "speaker", "text"] and n_replaced == 1 and not notes
    assert rows == [(2, ["x.wav", "calm", "s", "it\ufffds, fine"])]
