"""emofuse serve: the HTTP service (TestClient), micro-batching, and the web page in headless Chromium."""

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from emofuse.data.manifest import read_manifest  # noqa: E402
from emofuse.inference.predictor import Predictor  # noqa: E402
from emofuse.inference.serve import MicroBatcher, ServeLimits, create_app  # noqa: E402
from emofuse.testing.checkpoints import train_tiny_cmd  # noqa: E402

pytestmark = pytest.mark.slow


class FakeASR:
    def transcribe(self, audio):
        return "words from the recogniser"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_checkpoint(run, transcriber=FakeASR())


@pytest.fixture(scope="module")
def clips(run):
    manifest = run.parent / "corpus" / "manifest.jsonl"
    return [(manifest.parent / r.audio, r.text) for r in read_manifest(manifest)][:4]


def _post(client, path, text=None, name=None, data=None):
    files = {"audio": (name or Path(path).name, data if data is not None else Path(path).read_bytes())}
    return client.post("/predict", files=files, data={"text": text} if text is not None else {})


def test_predict_health_card_and_page(predictor, clips):
    with TestClient(create_app(predictor)) as client:
        assert client.get("/health").json()["status"] == "ok"
        card = client.get("/card").json()
        assert card["classes"] == predictor.classes and card["capabilities"]["modalities"] == ["audio", "text"]
        assert card["limits"]["max_seconds"] == 60.0 and "test_metrics" in card
        path, text = clips[0]
        res = _post(client, path, text)
        assert res.status_code == 200, res.text
        body = res.json()
        ref = predictor.predict(path, text=text)
        assert body["label"] == ref.label and body["transcript"] == text and not body["from_asr"]
        for c in predictor.classes:
            assert abs(body["probabilities"][c] - ref.probabilities[c]) < 1e-5
        asr = _post(client, path).json()  # no transcript: the recogniser's words are used and returned
        assert asr["from_asr"] and asr["transcript"] == "words from the recogniser"
        page = client.get("/")
        assert page.status_code == 200 and "<title>emofuse</title>" in page.text


def test_bad_requests_get_one_line_4xx(predictor, clips):
    limits = ServeLimits(max_bytes=20_000, max_seconds=0.3)
    with TestClient(create_app(predictor, limits)) as client:
        path, text = clips[0]  # 0.4 s of 16-bit audio: about 13 kB
        cases = [
            (_post(client, path, text, name="notes.wav", data=b"this is not audio at all" * 10), 415, "notes.wav"),
            (_post(client, path, text, name="notes.txt"), 415, "unsupported audio format '.txt'"),
            (_post(client, path, text, data=b"\0" * 30_000), 413, "20000-byte limit"),
            (_post(client, path, text), 413, "exceeds the 0.3 s limit"),
            (_post(client, path, "   "), 422, "transcript 'text' is empty"),
            (client.post("/predict", data={"text": "hello"}), 422, "no file in the form field 'audio'"),
        ]
        for res, code, words in cases:
            detail = res.json()["detail"]
            assert res.status_code == code and words in detail and "\n" not in detail, (code, res.text)
            assert "/tmp/" not in detail  # the temporary file's path never leaks


def test_concurrent_requests_share_batches_and_keep_their_answers(predictor, clips):
    from emofuse.data.audio import load_audio

    waves = [load_audio(p) for p, _ in clips]
    texts = [t for _, t in clips]

    async def go():
        batcher = MicroBatcher(predictor, ServeLimits(batch_window_ms=200.0, max_batch=8))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(w, t) for w, t in zip(waves, texts, strict=True))), batcher
        finally:
            await batcher.stop()

    preds, batcher = asyncio.run(go())
    assert max(batcher.batches) > 1  # at least two requests went through one forward pass
    for w, t, p in zip(waves, texts, preds, strict=True):
        alone = predictor.predict(w, text=t).probabilities
        np.testing.assert_allclose(
            [p.probabilities[c] for c in predictor.classes], [alone[c] for c in predictor.classes], atol=1e-5
        )


def _chromium():
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")


def test_page_predicts_in_headless_chromium(predictor, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("headless Chromium not installed (/usr/bin/chromium or 'chromium' on PATH)")
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"http://127.0.0.1:{port}/?selftest",
        ]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert 'data-state="done"' in dom, dom[-2000:]
    for c in predictor.classes:  # one probability bar per class, the label shown
        assert f'data-cls="{c}"' in dom
    assert 'id="label"' in dom and "transcript: this is a self test" in dom
