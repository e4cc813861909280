"""Bad and odd audio through `extract`, `predict` and `validate`: a bad clip is skipped and named, never fatal to the
others, never a traceback; odd but valid audio (silence, stereo, 8 / 96 kHz, truncated, one hour) is used."""

import json

import pytest
from _matrix import AUDIO, _one_hour, invoke, one_line_error, snapshot, write_wav

from emofuse.data.manifest import Utterance, write_manifest
from emofuse.inference import asr

CASES = sorted(AUDIO)


def _manifest(folder, kind, good_wav):
    build, _ = AUDIO[kind]
    bad = build(folder / f"{kind}.wav")
    recs = [Utterance(id="good", audio=str(good_wav), text="hello"), Utterance(id="odd", audio=str(bad), text="hi")]
    return write_manifest(recs, folder / "m.jsonl"), bad


@pytest.mark.parametrize("kind", CASES)
def test_extract_skips_and_names_a_bad_clip(kind, tmp_path, dummy_encoders, good_wav):
    manifest, bad = _manifest(tmp_path, kind, good_wav)
    out = invoke("extract", manifest, "-e", "dummy-audio", "-o", tmp_path / "f", "--json")
    assert out.code == 0, out.output
    doc = json.loads(out.output[out.output.index("{") :])
    why = AUDIO[kind][1]
    if why is None:
        assert doc["counts"] == {"total": 2, "computed": 2, "reused": 0, "failed": 0}
        assert [bad.name in w and "truncated file" in w for w in doc["warnings"]] == [True] * (kind == "truncated")
    else:
        assert doc["counts"]["computed"] == 1 and why in doc["failed"]["odd"] and bad.name in doc["failed"]["odd"]


@pytest.mark.parametrize("kind", CASES)
def test_predict_reports_a_bad_clip_and_scores_the_rest(kind, tmp_path, tiny_run, good_wav):
    _, bad = _manifest(tmp_path, kind, good_wav)
    out = invoke("predict", tiny_run, good_wav, bad, "--text", "hello there", "--json")
    if kind == "folder":  # a folder is searched for audio: an empty one is a one-line error
        one_line_error(out, str(bad), "folder has no audio files")
        return
    doc = json.loads(out.output[out.output.index("{") :])
    why = AUDIO[kind][1]
    if why is None:
        assert out.code == 0 and len(doc["results"]) == 2, out.output
        assert all(0.999 < sum(r["probabilities"].values()) < 1.001 for r in doc["results"])
        assert ("warnings" in doc["results"][1]) is (kind == "truncated")
    else:
        assert out.code == 1 and [r["file"] for r in doc["results"]] == [str(good_wav)]
        assert doc["failed"][0]["file"] == str(bad) and why in doc["failed"][0]["error"], doc["failed"]


@pytest.mark.parametrize("kind", ["zero-bytes", "header-only", "not-audio", "missing", "folder"])
def test_validate_fails_on_an_unusable_clip(kind, tmp_path, good_wav):
    manifest, bad = _manifest(tmp_path, kind, good_wav)
    out = invoke("validate", manifest)
    assert out.code == 1 and "odd" in out.output and "Traceback" not in out.output, out.output
    if kind not in ("missing", "folder"):
        assert bad.name in out.output


def test_one_hour_recording_is_validated_from_its_header_and_cut_by_max_duration(tmp_path, dummy_encoders, good_wav):
    long = _one_hour(tmp_path / "hour.wav")
    manifest = write_manifest([Utterance(id="hour", audio=str(long), text="a long talk")], tmp_path / "m.jsonl")
    assert invoke("validate", manifest).code == 0
    out = invoke("extract", manifest, "-e", "dummy-audio", "-o", tmp_path / "f", "--max-duration", "2", "--json")
    doc = json.loads(out.output[out.output.index("{") :])
    assert out.code == 0 and doc["counts"]["computed"] == 1, out.output


@pytest.mark.parametrize("with_text", [True, False])
def test_silent_audio_with_and_without_a_transcript(with_text, tmp_path, tiny_run, monkeypatch):
    class Hears:
        def __init__(self, *a, **k):
            pass

        def transcribe(self, audio):
            return ""  # silence: nothing recognised

    monkeypatch.setattr(asr, "Transcriber", Hears)
    silent = write_wav(tmp_path / "silence.wav", value=0.0)
    out = invoke("predict", tiny_run, silent, *(["--text", "quiet"] if with_text else []))
    if with_text:
        assert out.code == 0 and "1 of 1 recording(s) predicted" in out.output, out.output
    else:  # nothing recognised: a failure naming the file, never a label
        assert out.code == 1 and "silence.wav: speech recognition found no words" in out.output.replace("\n", "")


@pytest.mark.parametrize(
    "name", ["my clip.wav", "ünïcödé 声音.wav", "$(touch pwned); rm -rf x.wav", "[red]x.wav", "a[/x]b.wav"]
)
def test_paths_with_spaces_unicode_shell_and_markup(name, tmp_path, tiny_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = write_wav(tmp_path / "in" / name)
    before = snapshot(tmp_path)
    out = invoke("predict", tiny_run, clip, "--text", "hello", "--csv", tmp_path / "out" / "p.csv")
    assert out.code == 0 and "1 of 1" in out.output and "Traceback" not in out.output, out.output
    doc = json.loads((lambda o: o[o.index("{") :])(invoke("predict", tiny_run, clip, "--text", "hi", "--json").output))
    assert doc["results"][0]["file"] == str(clip)  # shown verbatim, never interpreted
    assert str(clip) in (tmp_path / "out" / "p.csv").read_text(encoding="utf-8")
    assert not (tmp_path / "pwned").exists() and {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_markup_in_a_manifest_name_is_shown_verbatim_in_progress(tmp_path, monkeypatch, good_wav):
    class Hears:
        model_id = "fake"

        def __init__(self, *a, **k):
            pass

        def transcribe(self, audio):
            return "hello"

    monkeypatch.setattr(asr, "Transcriber", Hears)
    monkeypatch.setattr(asr, "_packaged_model_dir", lambda: tmp_path)
    recs = [Utterance(id=f"u{i}", audio=str(good_wav), text="hello") for i in range(2)]
    manifest = write_manifest(recs, tmp_path / "[red]m.jsonl")
    out = invoke("transcribe", manifest, "--out", tmp_path / "asr.jsonl")
    assert out.code == 0 and "transcribing [red]m.jsonl" in out.output, out.output
