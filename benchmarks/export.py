"""Benchmark an ONNX-exported CMD student (onnxruntime) against the same student in PyTorch, on CPU, in one run.

Issue 5, deliverable 4: "``benchmarks/export.py`` compares onnxruntime and PyTorch latency on CPU in one run". The
student is exported with :func:`emofuse.inference.export.export_onnx` to a temporary file, then both backends score
the same ``--n`` clips (waveform + transcript), preprocessed once with the teachers' ``preprocess`` (identical for
both backends, so it is not timed):

* ``latency``: batch size 1, per clip the best of ``--rounds`` rounds, then the median and p90 over clips, after
  ``--warmup`` untimed passes. The two backends alternate clip by clip (ABAB, the order flipping each time), so
  drift on a shared machine hits both;
* ``batch``: the clips in batches of ``--batch-size`` (padded), per batch the best of the rounds, interleaved the
  same way; reported as clips per second;
* ``max_abs_diff``: the largest difference of the probabilities between the backends over all clips and batches.

Both run with ``--threads`` intra-op threads (``torch.set_num_threads`` / onnxruntime ``intra_op_num_threads``).
``speedup`` is PyTorch time / onnxruntime time (above 1: onnxruntime is faster).

Models (``--setting``): ``paper`` = the paper-size student (wav2vec 2.0 Base + BERT-base input embeddings, random
init: speed does not depend on the values); ``packaged`` = the student on the packaged teachers (Whisper tiny.en +
MiniLM-L6 input embeddings, as ``emofuse quickstart`` trains it); ``tiny`` = the test-size student (smoke test); or
``--checkpoint`` a trained one (file, stage, seed run or run folder).

Usage::

    python benchmarks/export.py --json
    python benchmarks/export.py --setting tiny --n 8 --threads 2
    python benchmarks/export.py --checkpoint runs/cmd --out export-bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SR = 16_000
SETTINGS = {
    "paper": {"audio": "facebook/wav2vec2-base", "text": "bert-base-uncased", "weights": "random"},
    "packaged": {"audio": "openai/whisper-tiny.en", "text": "all-MiniLM-L6-v2", "weights": "auto"},
    "tiny": {"audio": "tiny-wav2vec2", "text": "tiny-bert", "weights": "auto"},
}
_WORDS = "the quick brown fox jumps over a lazy dog while we talk about nothing in particular today".split()


def _clips(n: int, seconds: tuple[float, float], seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Synthetic speech-like clips (noise-modulated tones) of random length, and random transcripts."""
    rng = np.random.default_rng(seed)
    wavs, texts = [], []
    for _ in range(n):
        s = int(rng.uniform(*seconds) * SR)
        t = np.arange(s) / SR
        f0 = rng.uniform(100, 250)
        wav = np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(s)
        wavs.append(wav.astype(np.float32))
        texts.append(" ".join(rng.choice(_WORDS, size=int(rng.integers(3, 10)))))
    return wavs, texts


def _model(setting: str | None, checkpoint: str | None) -> tuple[Any, Any, str]:
    """``(student, predictor-like preprocessing, description)``."""
    from emofuse.inference.predictor import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if checkpoint is not None:
            p = Predictor.from_checkpoint(checkpoint)
            return p.model, p, f"checkpoint {p.checkpoint}"
        from emofuse.models import create_model

        spec = SETTINGS[setting or "paper"]
        model = create_model(
            "cmd_student",
            audio_teacher=spec["audio"],
            text_teacher=spec["text"],
            teacher_weights=spec["weights"],
            allow_random=True,
        ).eval()
        p = Predictor(model, {"classes": [f"c{i}" for i in range(model.config["num_classes"])]})
    return model, p, f"{setting}: {spec['audio']} + {spec['text']} student ({spec['weights']} teacher weights)"


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(x) * 1e3), "p90_ms": float(np.percentile(x, 90) * 1e3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export, then time both backends interleaved; returns the JSON document."""
    import torch

    from emofuse.inference.export import OnnxStudent, export_onnx, onnx_inputs, onnx_session

    torch.set_num_threads(args.threads)
    model, pre, about = _model(args.setting, args.checkpoint)
    wavs, texts = _clips(args.n, (args.min_seconds, args.max_seconds))
    types = "text" in pre.modalities and "token_type_ids" in pre.encoders["text"].preprocess(["a"])
    names = OnnxStudent(model, types).input_names
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "student.onnx", token_types=types)
        export_s = time.perf_counter() - t0
        onnx_bytes = path.stat().st_size
        session = onnx_session(path, threads=args.threads)

    def torch_run(batch: dict) -> np.ndarray:
        with torch.inference_mode():
            return model(batch).probs.numpy()

    def ort_run(batch: dict) -> np.ndarray:
        return session.run(["probs"], onnx_inputs(batch, names))[0]

    backends = {"pytorch": torch_run, "onnxruntime": ort_run}
    singles = [pre.batch([w], [t]) for w, t in zip(wavs, texts, strict=True)]
    groups = [slice(i, min(i + args.batch_size, args.n)) for i in range(0, args.n, args.batch_size)]
    batched = [pre.batch(wavs[g], texts[g]) for g in groups]
    for _ in range(args.warmup):
        for fn in backends.values():
            fn(singles[0])
            fn(batched[0])
    lat = {k: np.full((args.rounds, len(singles)), np.inf) for k in backends}
    bat = {k: np.full((args.rounds, len(batched)), np.inf) for k in backends}
    diff = 0.0
    flip = False
    for r in range(args.rounds):
        for table, inputs in ((lat, singles), (bat, batched)):
            for i, b in enumerate(inputs):
                order = list(backends)[::-1] if flip else list(backends)
                flip = not flip
                outs = {}
                for k in order:
                    t0 = time.perf_counter()
                    outs[k] = backends[k](b)
                    table[k][r, i] = time.perf_counter() - t0
                if r == 0:
                    diff = max(diff, float(np.abs(outs["pytorch"] - outs["onnxruntime"]).max()))
    best = {k: v.min(axis=0) for k, v in lat.items()}
    best_b = {k: v.min(axis=0) for k, v in bat.items()}
    import onnxruntime

    from emofuse import __version__

    return {
        "model": about,
        "params": int(sum(p.numel() for p in model.parameters())),
        "n": args.n,
        "clip_seconds": [args.min_seconds, args.max_seconds],
        "audio_seconds_total": float(sum(len(w) for w in wavs) / SR),
        "threads": args.threads,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "export_seconds": export_s,
        "onnx_mib": onnx_bytes / 2**20,
        "max_abs_diff": diff,
        "latency_bs1": {k: _stats(v) for k, v in best.items()},
        "throughput_clips_per_s": {k: float(args.n / v.sum()) for k, v in best_b.items()},
        "speedup_bs1_median": float(np.median(best["pytorch"]) / np.median(best["onnxruntime"])),
        "speedup_batch": float(best_b["pytorch"].sum() / best_b["onnxruntime"].sum()),
        "timed": "student forward only (preprocessing shared and untimed); best of rounds per clip, ABAB interleaved",
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "emofuse": __version__,
        },
    }


def _print(doc: dict[str, Any]) -> None:
    lat = doc["latency_bs1"]
    print(f"{doc['model']} ({doc['params'] / 1e6:.2f} M params), {doc['n']} clips, {doc['threads']} thread(s)")
    print(f"export {doc['export_seconds']:.1f} s, {doc['onnx_mib']:.1f} MiB; max |dp| {doc['max_abs_diff']:.2e}")
    print(f"{'backend':<12} {'bs1 median':>11} {'bs1 p90':>9} {'batch clips/s':>14}")
    for k in ("pytorch", "onnxruntime"):
        thr = doc["throughput_clips_per_s"][k]
        print(f"{k:<12} {lat[k]['median_ms']:>9.2f}ms {lat[k]['p90_ms']:>7.2f}ms {thr:>14.1f}")
    print(f"speedup (PyTorch / onnxruntime): bs1 {doc['speedup_bs1_median']:.2f}x, batch {doc['speedup_batch']:.2f}x")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the JSON document."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="paper", help="model to export (default paper)")
    p.add_argument("--checkpoint", help="a trained checkpoint / run folder instead of --setting")
    p.add_argument("--n", type=int, default=16, help="clips (default 16)")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the JSON document")
    p.add_argument("--out", type=Path, help="also write the JSON document here")
    args = p.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--n, --rounds, --batch-size and --threads must be >= 1")
    if not 0.1 <= args.min_seconds <= args.max_seconds:
        p.error("need 0.1 <= --min-seconds <= --max-seconds")
    doc = run(args)
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print(doc)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
