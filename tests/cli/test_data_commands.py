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
    assert rep["missing_audio"] == ["a", "b"] and rep["empty_text"] == ["a"] and rep["unknown_labels"] == ["a"]
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
