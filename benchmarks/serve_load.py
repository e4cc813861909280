"""Load test of ``emofuse serve`` on loopback: N concurrent clients for T seconds, p50 / p95 latency and throughput.

The service runs in this process (uvicorn in a thread, on a free 127.0.0.1 port) around a checkpoint; ``--clients``
threads each post the same clip (a WAV of ``--clip-seconds`` of synthetic speech-like audio, with a transcript)
to ``POST /predict`` back to back until ``--seconds`` have passed. Reported: requests, failures (any non-200),
latency percentiles over all requests (ms), throughput (requests per second), and the micro-batch sizes the server
formed. The exit code is 1 when any request failed.

Without ``--checkpoint`` a tiny CMD student is trained first (the test-size model of
:mod:`emofuse.testing.checkpoints`, seconds on a CPU), so the numbers measure the service, not a paper-size model.

Usage::

    python benchmarks/serve_load.py --clients 8 --seconds 20
    python benchmarks/serve_load.py --checkpoint runs/cmd --clients 4 --seconds 30 --json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _clip(seconds: float) -> bytes:
    """A 16 kHz mono WAV: a gliding tone with noise (any audio will do for timing)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (140 + 40 * t) * t) + 0.02 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the service, run the clients, stop; the measurements."""
    import httpx
    import torch
    import uvicorn

    from emofuse.inference.predictor import Predictor
    from emofuse.inference.serve import ServeLimits, create_app

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from emofuse.testing.checkpoints import train_tiny_cmd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = train_tiny_cmd(Path(tempfile.mkdtemp(prefix="emofuse-serve-load-")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor.from_checkpoint(checkpoint, batch_size=args.max_batch)
    limits = ServeLimits(batch_window_ms=args.batch_window_ms, max_batch=args.max_batch)
    app = create_app(predictor, limits)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}/predict"
    body = _clip(args.clip_seconds)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(deadline: float) -> None:
        with httpx.Client(timeout=60.0) as http:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    res = http.post(url, files={"audio": ("clip.wav", body)}, data={"text": args.text})
                    ok, why = res.status_code == 200, f"{res.status_code}: {res.text[:120]}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt * 1000) if ok else failures.append(why))

    with httpx.Client() as http:  # one untimed request: first-call costs stay out of the numbers
        http.post(url, files={"audio": ("clip.wav", body)}, data={"text": args.text}, timeout=60.0)
    app.state.batcher.batches.clear()
    started = time.perf_counter()
    deadline = started + args.seconds
    workers = [threading.Thread(target=client, args=(deadline,)) for _ in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    server.should_exit = True
    thread.join(timeout=10)
    batches = list(app.state.batcher.batches)
    return {
        "checkpoint": str(predictor.checkpoint),
        "model": predictor.meta.get("model_name"),
        "clients": args.clients,
        "seconds": round(wall, 2),
        "clip_seconds": args.clip_seconds,
        "requests": len(latencies),
        "failed": len(failures),
        "failures": failures[:5],
        "latency_ms": {
            "p50": round(_percentile(latencies, 50), 1),
            "p95": round(_percentile(latencies, 95), 1),
            "mean": round(float(np.mean(latencies)), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
        "throughput_rps": round(len(latencies) / wall, 2),
        "batches": {"count": len(batches), "mean_size": round(float(np.mean(batches)), 2) if batches else None},
        "settings": {"max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms, "threads": args.threads},
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="Checkpoint to serve (default: a tiny CMD student).")
    p.add_argument("--clients", type=int, default=4, help="Concurrent clients.")
    p.add_argument("--seconds", type=float, default=10.0, help="How long the clients send requests.")
    p.add_argument("--clip-seconds", type=float, default=2.0, help="Length of the posted clip.")
    p.add_argument("--text", default="I can't believe you did that", help="Transcript sent with each clip.")
    p.add_argument("--max-batch", type=int, default=16, help="Server: most recordings per forward pass.")
    p.add_argument("--batch-window-ms", type=float, default=10.0, help="Server: micro-batching wait.")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    p.add_argument("--json", action="store_true", help="Print the JSON document only.")
    p.add_argument("--out", type=Path, default=None, help="Also write the JSON document here.")
    args = p.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        p.error("--clients must be >= 1 and --seconds > 0")
    doc = run(args)
    text = json.dumps(doc, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    else:
        lat = doc["latency_ms"]
        print(
            f"{doc['requests']} requests, {doc['failed']} failed, {doc['clients']} clients, {doc['seconds']} s: "
            f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, {doc['throughput_rps']} req/s, "
            f"mean batch {doc['batches']['mean_size']}"
        )
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
