"""End-to-end tests of `emofuse prepare`, `validate`, `folds` and `--version` through the real CLI."""

import json

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from emofuse import __version__
from emofuse.cli.main import app
from emofuse.data.manifest import read_manifest

runner = CliRunner()


def _csv_corpus(tmp_path, n_speakers=3, per_class=2, labels=("neutral", "happy", "sad", "angry")):
    rows = ["path,label,speaker,text,gender"]
    for s in range(n_speakers):
        for lab in labels:
            for i in range(per_class):
                p = tmp_path / "wav" / f"s{s}_{lab}_{i}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(p, np.full(1600, 0.1, np.float32), 16000)
                rows.append(f'wav/{p.name},{lab},spk{s},"I feel {lab}, really",{"F" if s % 2 else "M"}')
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return csv


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"emofuse {__version__}"


def test_prepare_validate_folds_roundtrip(tmp_path):
    csv = _csv_corpus(tmp_path)
    out = tmp_path / "m.jsonl"
    r = runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    recs = read_manifest(out)
    assert len(recs) == 24 and {r.speaker for r in recs} == {"spk0", "spk1", "spk2"}
    assert recs[0].text == "I feel neutral, really" and recs[0].extra["gender"] == "M"
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["counts"]["total"] == 24 and report["counts"]["missing_audio"] == 0

    r = runner.invoke(app, ["validate", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["counts"]["total"] == 24

    r = runner.invoke(app, ["folds", str(out), "--protocol", "speaker-out", "--json"])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert payload["protocol"] == "speaker-out" and len(payload["folds"]) == 3
    for fold in payload["folds"]:
        assert set(fold) >= {"name", "train", "val", "test"}
        test_spk = {i.split("_")[0] for i in fold["test"]}
        train_spk = {i.split("_")[0] for i in fold["train"] + fold["val"]}
        assert not test_spk & train_spk
    all_test = sorted(i for f in payload["folds"] for i in f["test"])
    assert all_test == sorted(r.id for r in recs)

    r = runner.invoke(app, ["folds", str(out), "--protocol", "speaker-out"])
    assert r.exit_code == 0 and "spk0" in r.output and "neutral" in r.output


def test_prepare_refuses_to_overwrite_a_different_manifest(tmp_path):
    csv = _csv_corpus(tmp_path)
    out = tmp_path / "m.jsonl"
    out.write_text('{"id": "mine"}\n', encoding="utf-8")
    r = runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q"])
    assert r.exit_code == 2 and "overwrite" in r.output
    assert out.read_text() == '{"id": "mine"}\n'
    r = runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q", "--overwrite"])
    assert r.exit_code == 0 and len(read_manifest(out)) == 24


def test_prepare_same_output_twice_is_idempotent(tmp_path):
    csv = _csv_corpus(tmp_path)
    out = tmp_path / "m.jsonl"
    assert runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q"]).exit_code == 0
    r = runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q"])
    assert r.exit_code == 0 and "up to date" in r.output


def test_prepare_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.wav,happy\n", encoding="utf-8")
    r = runner.invoke(app, ["prepare", "csv", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2
    assert "bad.csv" in r.output and "speaker" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["prepare", "nonsense", str(tmp_path), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "unknown corpus 'nonsense'" in r.output
    r = runner.invoke(app, ["prepare", "iemocap", str(tmp_path / "empty"), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "empty" in r.output
    r = runner.invoke(app, ["prepare", "csv", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "--out" in r.output


def test_validate_reports_problems_with_exit_code(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(
        '{"id": "a", "audio": "nope.wav", "text": "", "label": "bored"}\n{"id": "b", "text": "hi", "label": "sad"}\n',
        encoding="utf-8",
    )
    r = runner.invoke(app, ["validate", str(m), "--labels", "iemocap4", "--json"])
    assert r.exit_code == 1
    rep = json.loads(r.output)
    assert rep["missing_audio"] == ["a"] and rep["empty_text"] == ["a"] and rep["unknown_labels"] == ["a"]
    assert rep["text_only"] == ["b"]  # audio: null is a text-only record, not a missing file
    r = runner.invoke(app, ["validate", str(m), "--labels", "iemocap4", "--json", "--require-audio"])
    assert r.exit_code == 1 and json.loads(r.output)["missing_audio"] == ["a", "b"]
    m.write_text('{"id": "a", "labl": "x"}\n', encoding="utf-8")
    r = runner.invoke(app, ["validate", str(m)])
    assert r.exit_code == 2 and "m.jsonl:1" in r.output and "labl" in r.output


def test_folds_leakage_and_unknown_protocol(tmp_path):
    m = tmp_path / "m.jsonl"
    lines = [
        json.dumps({"id": f"u{i}", "label": "sad" if i % 2 else "happy", "speaker": "s1", "split": split})
        for i, split in enumerate(["train", "train", "test", "test"])
    ]
    m.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = runner.invoke(app, ["folds", str(m), "--protocol", "official", "--option", "speaker_dependent=false"])
    assert r.exit_code == 2 and "s1" in r.output
    r = runner.invoke(app, ["folds", str(m), "--protocol", "leave-nothing-out"])
    assert r.exit_code == 2 and "iemocap-loso" in r.output


def test_folds_groups_shorthand(tmp_path):
    csv = _csv_corpus(tmp_path, n_speakers=4)
    out = tmp_path / "m.jsonl"
    assert runner.invoke(app, ["prepare", "csv", str(csv), "--out", str(out), "-q"]).exit_code == 0
    r = runner.invoke(app, ["folds", str(out), "--protocol", "speaker-out", "--groups", "4", "--json"])
    assert r.exit_code == 0, r.output
    folds = json.loads(r.output)["folds"]
    assert len(folds) == 4 and all(len(f["test"]) == 8 and len(f["val"]) == 8 for f in folds)  # 1 speaker each
    r = runner.invoke(app, ["folds", str(out), "--protocol", "kfold", "--groups", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)["folds"]) == 2
    r = runner.invoke(app, ["folds", str(out), "--protocol", "speaker-out", "--groups", "9"])
    assert r.exit_code != 0 and "groups=9" in r.output


def test_validate_fails_on_unreadable_audio_and_on_an_empty_manifest(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.full(1600, 0.1, np.float32), 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "header.wav").write_bytes(good.read_bytes()[:44])  # a header and no samples
    (tmp_path / "text.wav").write_text("not audio at all")
    m = tmp_path / "m.jsonl"
    rows = [("g", "good.wav"), ("e", "empty.wav"), ("h", "header.wav"), ("t", "text.wav")]
    m.write_text("".join(json.dumps({"id": i, "audio": a, "text": "hi"}) + "\n" for i, a in rows), encoding="utf-8")
    r = runner.invoke(app, ["validate", str(m)])
    assert r.exit_code == 1 and "bad audio: 3 (e, h, t)" in r.output, r.output
    assert "empty.wav: file is empty" in r.output and "header.wav: no audio samples" in r.output
    m.write_text("", encoding="utf-8")
    r = runner.invoke(app, ["validate", str(m)])
    assert r.exit_code == 2 and "m.jsonl: the manifest has no records" in r.output


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"


def _meld_csvs_only(root):
    """MELD's three CSVs without any clip (what a text-only download holds)."""
    root.mkdir()
    for split, emotions in (("train", "joy sadness anger neutral"), ("dev", "joy anger"), ("test", "sadness")):
        rows = [MELD_HEADER] + [
            f'{i + 1},Line {i} of {split},Ross,{e},neutral,{i},0,1,1,"00:00:01,000","00:00:02,000"'
            for i, e in enumerate(emotions.split())
        ]
        (root / f"{split}_sent_emo.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_text_only_corpus_names_the_flag_then_validates(tmp_path):
    root, out = _meld_csvs_only(tmp_path / "MELD"), tmp_path / "meld" / "m.jsonl"
    r = runner.invoke(app, ["prepare", "meld", str(root), "--out", str(out), "--labels", "meld4", "-q"])
    assert r.exit_code == 2 and not out.exists()  # nothing written, so the retry needs no --overwrite
    line = r.output.strip().replace("\n", " ")
    assert "no records written: 7 labelled utterance(s)" in line and "--allow-missing-audio keeps their text" in line
    r = runner.invoke(
        app, ["prepare", "meld", str(root), "--out", str(out), "-l", "meld4", "-q", "--allow-missing-audio"]
    )
    assert r.exit_code == 0, r.output
    assert "text only: 7 utterance(s) kept without audio" in r.output and "problems found" not in r.output
    assert {rec.audio for rec in read_manifest(out)} == {None}
    r = runner.invoke(app, ["validate", str(out), "--labels", "meld4"])
    assert r.exit_code == 0 and "text only (audio: null): 7 record(s)" in r.output.replace("\n", " ")
    assert runner.invoke(app, ["validate", str(out), "--require-audio"]).exit_code == 1


def test_a_label_scheme_of_another_corpus_is_refused_by_name(tmp_path):
    r = runner.invoke(app, ["prepare", "ravdess", str(tmp_path), "--labels", "iemocap4", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    msg = r.output.replace("\n", " ")
    assert "label scheme 'iemocap4' is iemocap's, not ravdess's" in msg and "ravdess takes: ravdess4, ravdess8" in msg


def test_unknown_recipe_option_lists_the_valid_ones(tmp_path):
    r = runner.invoke(app, ["prepare", "synthetic", str(tmp_path / "x"), "--option", "bogus=1"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    msg = r.output.replace("\n", " ")
    assert "prepare synthetic: unknown option(s) 'bogus'" in msg and "conflict_mode" in msg and "seed" in msg
