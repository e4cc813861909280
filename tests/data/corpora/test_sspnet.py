"""SSPNet Conflict Corpus recipe on a miniature tree written here (labels file variants, splits, notes, CLI)."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.corpora import CorpusError, prepare
from emofuse.data.manifest import read_manifest

CLIPS = ["06-11-08_1980_2010", "07-01-31_1710_1740", "08-01-30_810_840", "odd-name"]


def _tree(tmp_path, labels_text, name="conflictlevel.csv", clips=CLIPS):
    root = tmp_path / "sspnet"
    (root / "wav").mkdir(parents=True)
    for c in clips:
        sf.write(root / "wav" / f"{c}.wav", np.full(800, 0.1, np.float32), 8000)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(labels_text, encoding="utf-8")
    return root


def test_conflictnet_csv_without_header(tmp_path):
    root = _tree(tmp_path, "06-11-08_1980_2010.wav,2.7\n07-01-31_1710_1740,-4.3\n08-01-30_810_840,0\nodd-name,abc\n")
    prep = prepare("sspnet", root, progress=False)
    by = {r.id: r for r in prep.records}
    assert prep.classes == ("low", "high") and prep.scheme == "sspnet-conflict"
    a = by["06-11-08_1980_2010"]
    assert a.label == "high" and a.extra["conflict"] == pytest.approx(0.27) and a.extra["conflict_raw"] == 2.7
    assert a.session == a.dialogue == "06-11-08" and (a.extra["debate_start"], a.extra["debate_end"]) == (1980, 2010)
    assert by["07-01-31_1710_1740"].label == "low" and by["07-01-31_1710_1740"].extra["conflict"] == pytest.approx(
        -0.43
    )
    assert by["08-01-30_810_840"].label == "high"  # >= 0 is high (thesis)
    assert by["odd-name"].label is None and "conflict" not in by["odd-name"].extra  # bad score row: unlabelled clip
    notes = "\n".join(prep.report.notes)
    assert "conflictlevel.csv:4: conflict score 'abc' is not a number" in notes
    assert "1 clip(s) have no row" in notes and "no official split" in notes
    assert all(r.split is None for r in prep.records)


def test_header_with_partition_class_and_moderator(tmp_path):
    text = (
        "file_name;class;level;moderator\n"
        "06-11-08_1980_2010.wav;high;5.5;50\n"
        "07-01-31_1710_1740.wav;low;-1;153\n"
        "08-01-30_810_840.wav;high;-2;17\n"  # class disagrees with the score: the score wins
        "missing_1_2.wav;low;-3;50\n"  # no clip: dropped unless allow_missing_audio
        "odd-name.wav;low;12;50\n"  # out of range
    )
    root = _tree(tmp_path, text, name="lab/ComParE2013_Conflict.csv")
    prep = prepare("sspnet", root, progress=False)
    by = {r.id: r for r in prep.records}
    assert by["06-11-08_1980_2010"].split == "train" and by["06-11-08_1980_2010"].speaker == "moderator50"
    assert by["07-01-31_1710_1740"].split == "dev" and by["08-01-30_810_840"].split == "test"
    assert by["08-01-30_810_840"].label == "low" and by["08-01-30_810_840"].extra["moderator"] == "17"
    assert "missing_1_2" not in by and prep.report.missing_audio == ["missing_1_2"]
    notes = "\n".join(prep.report.notes)
    assert "class 'high' disagrees with score -2.0" in notes and "outside [-10, 10]" in notes
    kept = prepare("sspnet", root, progress=False, allow_missing_audio=True)
    assert {r.id: r.audio for r in kept.records}["missing_1_2"] is None


def test_partition_column_wins_and_bad_layouts_are_named(tmp_path):
    root = _tree(tmp_path, "name\tpartition\tscore\n06-11-08_1980_2010\tdevel\t1\n", name="labels.tsv", clips=CLIPS[:1])
    assert prepare("sspnet", root, progress=False).records[0].split == "dev"
    (root / "other.csv").write_text("file,foo\n")
    with pytest.raises(CorpusError, match="several candidate labels files"):
        prepare("sspnet", root, progress=False)
    with pytest.raises(CorpusError, match=r"needs a file column .* header: file, foo"):
        prepare("sspnet", root, progress=False, labels_file="other.csv")
    with pytest.raises(CorpusError, match="labels file not found"):
        prepare("sspnet", root, progress=False, labels_file="nope.csv")
    with pytest.raises(CorpusError, match="not a folder"):
        prepare("sspnet", tmp_path / "nowhere")


def test_cli_prepare_writes_a_regression_ready_manifest(tmp_path):
    root = _tree(tmp_path, "06-11-08_1980_2010,2.7\n07-01-31_1710_1740,-4.3\n08-01-30_810_840,0\nodd-name,1\n")
    out = tmp_path / "sspnet.jsonl"
    res = CliRunner().invoke(app, ["prepare", "sspnet", str(root), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    recs = read_manifest(out)
    assert len(recs) == 4 and all(r.audio and r.label for r in recs)
    report = json.loads((tmp_path / "sspnet.report.json").read_text())
    assert report["classes"] == ["low", "high"]
