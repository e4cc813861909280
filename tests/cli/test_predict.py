"""`emofuse predict` end to end on a tiny trained CMD run: files, folders, manifests, transcripts, ASR, bad input."""

import csv
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.manifest import read_manifest
from emofuse.inference import asr
from emofuse.inference.predictor import Predictor
from emofuse.models import create_model
from emofuse.models.checkpoint import save_checkpoint
from emofuse.testing.checkpoints import train_tiny_cmd

runner = CliRunner()


# every test here shares one tiny CMD training per session (a few seconds on a free CPU)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")


@pytest.fixture(scope="module")
def corpus(run):
    root = run.parent / "corpus"
    return root, read_manifest(root / "manifest.jsonl")


class FakeTranscriber:
    """Stands in for the packaged Whisper: a fixed transcript per call."""

    calls = 0

    def __init__(self, *args, **kwargs):
        pass

    def transcribe(self, audio):
        FakeTranscriber.calls += 1
        return "recognised words"


def _json(res):
    return json.loads(res.stdout[res.stdout.index("{") :])


def test_files_table_json_and_csv(run, corpus, tmp_path):
    root, records = corpus
    files = [str(root / r.audio) for r in records[:2]]
    res = runner.invoke(app, ["predict", str(run), *files, "--text", "hello there"])
    assert res.exit_code == 0, res.output
    assert "angry" in res.output and "sad" in res.output and "2 of 2 recording(s) predicted" in res.output
    assert "seed0/seed0/train/best.safetensors" in res.output  # says which checkpoint it chose

    out = tmp_path / "preds.csv"
    res = runner.invoke(app, ["predict", str(run), *files, "--text", "hello there", "--json", "--csv", str(out)])
    assert res.exit_code == 0, res.output
    doc = _json(res)
    assert doc["classes"] == ["angry", "happy", "neutral", "sad"] and not doc["failed"]
    p = Predictor.from_checkpoint(run)
    for row, f in zip(doc["results"], files, strict=True):
        assert row["file"] == f and list(row["probabilities"]) == doc["classes"]
        ref = p.predict(f, text="hello there").probabilities
        assert row["probabilities"] == pytest.approx(ref, abs=1e-6)
        assert row["label"] == max(ref, key=ref.get) and row["transcript"] == "hello there" and not row["from_asr"]
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == files and float(rows[0]["sad"]) == pytest.approx(
        doc["results"][0]["probabilities"]["sad"], abs=1e-6
    )


def test_folder_and_manifest(run, corpus, tmp_path):
    import shutil

    from emofuse.data.manifest import write_manifest

    root, records = corpus
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for i, r in enumerate(records[:3]):
        shutil.copy(root / r.audio, folder / ("sub" if i else "") / f"c{i}.wav")
    (folder / "notes.txt").write_text("not audio: ignored in a folder")
    res = runner.invoke(app, ["predict", str(run), str(folder), "--text", "words", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["file"] for r in _json(res)["results"]] == [
        str(folder / "c0.wav"),
        *(str(folder / "sub" / f"c{i}.wav") for i in (1, 2)),
    ]
    # a manifest brings its own transcripts (no ASR) and segments; ids name the rows
    subset = [r.model_copy(update={"audio": str(root / r.audio)}) for r in records[:4]]
    subset[0] = subset[0].model_copy(update={"start": 0.1, "end": 0.3})
    manifest = write_manifest(subset, tmp_path / "m.jsonl")
    res = runner.invoke(app, ["predict", str(run), str(manifest), "--json"])
    assert res.exit_code == 0, res.output
    rows = _json(res)["results"]
    assert [r["file"] for r in rows] == [r.id for r in subset]
    assert [r["transcript"] for r in rows] == [r.text for r in subset] and not any(r["from_asr"] for r in rows)
    assert rows[0]["duration"] == pytest.approx(0.2)


def test_transcripts_file_and_asr_fallback(run, corpus, tmp_path, monkeypatch):
    root, records = corpus
    monkeypatch.setattr(asr, "Transcriber", FakeTranscriber)
    files = [root / r.audio for r in records[:3]]
    table = tmp_path / "t.csv"
    table.write_text(f"path,text\n{files[0].name},first one\n{files[1]},second one\n")
    res = runner.invoke(app, ["predict", str(run), *map(str, files), "--transcripts", str(table), "--json"])
    assert res.exit_code == 0, res.output
    rows = _json(res)["results"]
    assert [r["transcript"] for r in rows] == ["first one", "second one", "recognised words"]
    assert [r["from_asr"] for r in rows] == [False, False, True]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"path": os.path.relpath(files[2], tmp_path), "text": "third"}) + "\n")
    res = runner.invoke(app, ["predict", str(run), str(files[2]), "--transcripts", str(jsonl), "--json"])
    assert res.exit_code == 0 and _json(res)["results"][0]["transcript"] == "third"
    # without any transcript the table shows what ASR heard
    res = runner.invoke(app, ["predict", str(run), str(files[0])])
    assert res.exit_code == 0 and "(ASR) recognised words" in res.output


def test_long_recording_windows(run, corpus, tmp_path):
    from emofuse.data.audio import load_audio, save_wav

    root, records = corpus
    wav = np.concatenate([load_audio(root / r.audio)[:6400] for r in records[:3]])  # 1.2 s
    long = save_wav(tmp_path / "long.wav", wav)
    args = ["predict", str(run), str(long), "--text", "x", "--window", "0.5", "--hop", "0.25"]
    res = runner.invoke(app, [*args, "--windows"])
    assert res.exit_code == 0 and "4 windows" in res.output and "0.70-1.20" in res.output, res.output
    row = _json(runner.invoke(app, [*args, "--json"]))["results"][0]
    assert len(row["windows"]) == 4 and row["duration"] == pytest.approx(1.2)


def test_bad_files_are_reported_and_skipped(run, corpus, tmp_path):
    root, records = corpus
    odd = tmp_path / "notes.xyz"
    odd.write_text("not audio")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    good = root / records[0].audio
    res = runner.invoke(app, ["predict", str(run), str(odd), str(good), str(broken), "--text", "hi"])
    assert res.exit_code == 1, res.output
    assert "1 of 3 recording(s) predicted, 2 failed" in res.output
    assert "unsupported audio format '.xyz'" in res.output and "cannot decode audio" in res.output
    res = runner.invoke(app, ["predict", str(run), str(odd), str(good), "--text", "hi", "--json"])
    doc = _json(res)
    assert res.exit_code == 1 and len(doc["results"]) == 1 and doc["failed"][0]["file"] == str(odd)


def test_bad_input_is_one_line(run, corpus, tmp_path):
    root, records = corpus
    good = str(root / records[0].audio)

    def fails(args, text):
        res = runner.invoke(app, ["predict", *args])
        assert res.exit_code == 2, res.output
        assert text in res.output and "Traceback" not in res.output, res.output

    fails([str(tmp_path / "nope"), good], "checkpoint not found")
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00\x01 not a checkpoint")
    fails([str(corrupt), good], "not a readable safetensors checkpoint")
    probe = create_model("probe", modality="text", input_dim=8, num_classes=4)
    path = save_checkpoint(probe, tmp_path / "probe" / "best.safetensors", {"classes": list("abcd")})
    fails([str(path), good], "no ['text'] encoder recorded for model 'probe'")
    fails([str(run), good, "--text", "  "], "--text is empty")
    table = tmp_path / "t.csv"
    table.write_text("path,text\na.wav,\n")
    fails([str(run), good, "--transcripts", str(table)], "t.csv:2: empty transcript for 'a.wav'")
    table.write_text("file,words\na.wav,hi\n")
    fails([str(run), good, "--transcripts", str(table)], "needs a header with 'path' and 'text'")
    fails([str(run), good, "--text", "a", "--transcripts", str(table)], "either --text or --transcripts")
    fails([str(run), str(tmp_path / "probe")], "folder has no audio files")


def test_diverged_checkpoint_is_refused_naming_the_weights(run, corpus, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    root, records = corpus
    best = run / "seed0" / "seed0" / "train" / "best.safetensors"
    with safe_open(str(best), framework="pt") as f:
        header = f.metadata()
    state = load_file(str(best))
    first = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[first] = state[first] * float("nan")  # what a huge learning rate leaves in last.safetensors
    bad = tmp_path / "last.safetensors"
    save_file(state, str(bad), metadata=header)
    good = str(root / records[0].audio)
    for extra in ([], ["--json"]):
        res = runner.invoke(app, ["predict", str(bad), good, "--text", "hi", *extra])
        assert res.exit_code == 2, res.output
        assert f"last.safetensors: non-finite weights (NaN or inf) in [{first}" in res.output.replace("\n", "")
        assert "Traceback" not in res.output and "NaN," not in res.stdout
    res = runner.invoke(app, ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "non-finite weights" in res.output and not (tmp_path / "m.onnx").exists()


def test_markup_in_paths_is_shown_verbatim_and_truncated_wav_warns(run, corpus, tmp_path):
    root, records = corpus
    data = (root / records[0].audio).read_bytes()
    odd = [tmp_path / "[red]name.wav", tmp_path / "a[/x]b.wav"]
    for p in odd:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # the header still promises the whole clip
    res = runner.invoke(app, ["predict", str(run), *map(str, odd), str(cut), "--text", "hi"], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert "[red]name.wav" in res.output and "a[/x]b.wav" in res.output and "3 of 3" in res.output
    assert "cut.wav: truncated file: its header promises" in res.output.replace("\n", "")
    doc = _json(runner.invoke(app, ["predict", str(run), str(cut), "--text", "hi", "--json"]))
    assert "truncated file" in doc["results"][0]["warnings"][0]


def test_non_utf8_transcripts_name_file_and_line(tmp_path):
    from emofuse.cli.predict import _read_transcripts

    table = tmp_path / "t.csv"
    table.write_bytes(b"path,text\na.wav,hello\nb.wav,caf\xe9\n")
    with pytest.raises(ValueError, match=r"t\.csv:3: not UTF-8 text \(byte 0xe9 at column 10\)"):
        _read_transcripts(table)
