"""``emofuse serve``: an HTTP service around a :class:`~emofuse.inference.Predictor` (FastAPI + uvicorn).

Endpoints:

* ``POST /predict`` — multipart form: file field ``audio`` (any format :func:`~emofuse.data.audio.load_audio`
  reads), optional text field ``text`` (the transcript; without it a model that reads text transcribes with ASR).
  Answers ``{"label", "probabilities": {class: p}, "transcript", "from_asr", "duration", "windows", "values"}``.
  A body over the size limit gets 413, audio over the duration limit 413, a file that is not audio 415, an empty
  transcript or a missing file 422; every error body is ``{"detail": "<one line>"}``.
* ``GET /health`` — 200 ``{"status": "ok", ...}`` once the model is loaded.
* ``GET /card`` — the model card: model, capabilities, classes, encoders, provenance, the run's metrics.
* ``GET /`` — a small page: upload a file or record in the browser, see the probabilities.

Concurrent requests are micro-batched: decoded waveforms wait at most ``batch_window_ms`` for others, then up to
``max_batch`` of them go through one :meth:`~emofuse.inference.Predictor.predict_batch` call (which gives each the
answer it would get alone), run on one worker thread so the model never runs twice at once.
"""

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from emofuse.data.audio import SAMPLE_RATE, SUPPORTED_EXTS
from emofuse.utils.optional import require

__all__ = ["MicroBatcher", "ServeLimits", "create_app"]


@dataclass(frozen=True)
class ServeLimits:
    """Request limits and micro-batching settings.

    Attributes:
        max_bytes: Largest accepted upload (bytes).
        max_seconds: Longest accepted audio (seconds, after decoding).
        batch_window_ms: How long a request waits for others to share its forward pass.
        max_batch: Most recordings per forward pass.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_seconds: float = 60.0
    batch_window_ms: float = 10.0
    max_batch: int = 16

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_seconds <= 0 or self.batch_window_ms < 0 or self.max_batch < 1:
            raise ValueError(f"bad serve limits: {self}")


@dataclass
class _Job:
    wav: np.ndarray
    text: str | None
    future: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    """Groups concurrent requests into :meth:`Predictor.predict_batch` calls on one worker thread.

    Args:
        predictor: The predictor.
        limits: ``batch_window_ms`` and ``max_batch``.
    """

    def __init__(self, predictor: Any, limits: ServeLimits) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.predictor, self.limits = predictor, limits
        self.queue: asyncio.Queue[_Job] | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emofuse-model")
        self.task: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of the batches run (for tests and the load test)

    def start(self) -> None:
        """Start the batching loop (in the running event loop)."""
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and the worker thread."""
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, wav: np.ndarray, text: str | None) -> Any:
        """The :class:`~emofuse.inference.Prediction` of one waveform (16 kHz), batched with concurrent ones."""
        if self.queue is None:
            raise RuntimeError("the batcher is not running")
        job = _Job(wav, text, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.limits.batch_window_ms / 1000.0
            while len(jobs) < self.limits.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            self.batches.append(len(jobs))
            try:
                results = await loop.run_in_executor(self.pool, self._run, jobs)
            except Exception as e:  # noqa: BLE001 - isolate: every job gets its own answer or error
                results = [await loop.run_in_executor(self.pool, self._one, j) for j in jobs] if len(jobs) > 1 else [e]
            for job, res in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)

    def _run(self, jobs: list[_Job]) -> list[Any]:
        return list(self.predictor.predict_batch([j.wav for j in jobs], [j.text for j in jobs]))

    def _one(self, job: _Job) -> Any:
        try:
            return self.predictor.predict_batch([job.wav], [job.text])[0]
        except Exception as e:  # noqa: BLE001 - returned to its own request
            return e


def _decode(predictor: Any, data: bytes, filename: str | None) -> np.ndarray:
    """Decode an upload through a temporary file (the loaders read paths); raises AudioError / PredictionError."""
    suffix = Path(filename or "").suffix.lower() or ".wav"
    if suffix not in SUPPORTED_EXTS:
        from emofuse.data.audio import AudioError

        raise AudioError(
            f"{filename}: unsupported audio format {suffix!r} (supported: {', '.join(sorted(SUPPORTED_EXTS))})"
        )
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return predictor.load(tmp.name)
        except ValueError as e:  # AudioError / PredictionError: name the upload, never the temporary file
            raise type(e)(" ".join(str(e).replace(tmp.name, filename or "upload").split())) from None


def create_app(predictor: Any, limits: ServeLimits | None = None) -> Any:
    """The FastAPI application serving ``predictor``.

    Args:
        predictor: A loaded :class:`~emofuse.inference.Predictor`.
        limits: Request limits and batching (defaults: 10 MB, 60 s, 10 ms window, 16 per batch).

    Returns:
        A :class:`fastapi.FastAPI` app (run it with uvicorn; ``app.state.batcher`` is its :class:`MicroBatcher`).

    Raises:
        MissingDependencyError: FastAPI is not installed (``pip install 'emofuse[serve]'``).
    """
    require("fastapi", extra="serve", purpose="emofuse serve")
    require("python_multipart", extra="serve", purpose="form uploads in emofuse serve")
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse

    from emofuse.data.audio import AudioError
    from emofuse.inference.page import PAGE
    from emofuse.inference.predictor import PredictionError

    limits = limits or ServeLimits()
    batcher = MicroBatcher(predictor, limits)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="emofuse", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.limits = limits
    card = predictor.card()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": card["model_name"], "uptime_s": round(time.time() - started, 1)}

    @app.get("/card")
    async def model_card() -> dict[str, Any]:
        return {**card, "limits": {"max_bytes": limits.max_bytes, "max_seconds": limits.max_seconds}}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/predict")
    async def predict(
        request: Request,
        audio: Annotated[UploadFile | None, File()] = None,
        text: Annotated[str | None, Form()] = None,
    ) -> JSONResponse:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_bytes + 64 * 1024:
            raise HTTPException(413, f"request of {int(size)} bytes exceeds the {limits.max_bytes}-byte limit")
        if audio is None:
            raise HTTPException(422, "no file in the form field 'audio'")
        data = await audio.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise HTTPException(413, f"{audio.filename}: the file exceeds the {limits.max_bytes}-byte limit")
        if text is not None and not text.strip():
            raise HTTPException(422, "the transcript 'text' is empty; send the spoken words or leave the field out")
        try:
            wav = await asyncio.get_running_loop().run_in_executor(None, _decode, predictor, data, audio.filename)
        except (AudioError, PredictionError) as e:
            raise HTTPException(415, str(e)) from None
        seconds = len(wav) / SAMPLE_RATE
        if seconds > limits.max_seconds:
            raise HTTPException(
                413, f"{audio.filename}: {seconds:.1f} s of audio exceeds the {limits.max_seconds:g} s limit"
            )
        try:
            pred = await batcher.submit(wav, text.strip() if text else None)
        except PredictionError as e:
            raise HTTPException(422, f"{audio.filename or 'upload'}: {e}") from None
        return JSONResponse(
            {
                "label": pred.label,
                "probabilities": pred.probabilities,
                "values": pred.values,
                "transcript": pred.transcript,
                "from_asr": pred.from_asr,
                "duration": pred.duration,
                "windows": len(pred.windows),
            }
        )

    return app


def serve(predictor: Any, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None) -> None:
    """Run the service until interrupted (uvicorn, one process)."""
    require("uvicorn", extra="serve", purpose="emofuse serve")
    import uvicorn

    uvicorn.run(create_app(predictor, limits), host=host, port=port, log_level="warning")
