"""Benchmark feature extraction of every encoder that builds on this machine (CPU by default).

Every encoder runs over the *same* clips: ``--n`` clips of ``--seconds`` s (a seeded mix of a
gliding sine, a harmonic and noise, written as 16 kHz WAVs) with a short transcript each, or the
records of ``--manifest``. Each encoder runs in a fresh subprocess, so memory figures do not mix:

* ``load s``: building the encoder (weights resolution and load, or random init);
* ``utt/s`` and ``x RT``: utterances and audio seconds per wall-clock second of
  ``extract_features`` (decode, encode, fp16 shard writes) into a fresh cache, after one untimed
  warm-up batch; the median of ``--repeat`` runs (the JSON also has the best); features too
  large for fp16 (ComParE functionals reach 1e10) are timed with a float32 cache (``dtype``);
* ``cached s``: the same extraction again (every utterance reused from the cache);
* ``peak RSS``: the process' peak resident memory (``getrusage`` ``ru_maxrss``) and its growth
  over the RSS measured after imports, before the encoder is built (weights + activations +
  allocator slack). tracemalloc is not used: it does not see torch's tensor allocations.

Base-size encoders without local weights run with random weights (``allow_random=True``): the
speed is that of the architecture, the features are meaningless. Encoders that cannot be built
here (openSMILE not installed, GloVe without a file) are listed as unavailable.

Usage::

    python benchmarks/encoders.py --n 16 --json
    python benchmarks/encoders.py --only mfcc --only tiny-bert --seconds 5
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SR = 16_000
_WORDS = "the weather was fine and we talked for hours about nothing at all until it got late".split()


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mib()


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def make_clips(folder: Path, n: int, seconds: float, seed: int = 0) -> Path:
    """Write ``n`` seeded clips and a manifest; return the manifest path."""
    from emofuse.data.audio import save_wav
    from emofuse.data.manifest import Utterance, write_manifest

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    records = []
    for i in range(n):
        f0 = rng.uniform(100, 250)
        glide = f0 * (1 + 0.3 * t / seconds)
        tone = 0.3 * np.sin(2 * np.pi * np.cumsum(glide) / SR) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        wav = envelope * tone + 0.03 * rng.standard_normal(len(t))
        save_wav(folder / "wav" / f"c{i:03d}.wav", wav.astype(np.float32))
        text = " ".join(rng.choice(_WORDS, size=int(rng.integers(6, 20))))
        records.append(Utterance(id=f"c{i:03d}", audio=f"wav/c{i:03d}.wav", text=text))
    return write_manifest(records, folder / "clips.jsonl", overwrite=True)


def _time_extraction(manifest: Path, enc, batch_size: int, dtype: str) -> tuple[float, float, object]:
    """Seconds to extract into a fresh cache, seconds to run it again (all reused), and the store."""
    from emofuse.features import extract_features

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        store = extract_features(manifest, enc, out, batch_size=batch_size, progress=False, dtype=dtype)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        extract_features(manifest, enc, out, batch_size=batch_size, progress=False, dtype=dtype)
        return wall, time.perf_counter() - t0, store


def worker(name: str, manifest: Path, batch_size: int, threads: int | None, repeat: int) -> dict:
    """Build one encoder and time its extraction (runs in its own process)."""
    import torch

    from emofuse.data.audio import load_audio
    from emofuse.data.manifest import read_manifest
    from emofuse.encoders import create_encoder

    if threads:
        torch.set_num_threads(threads)
    records = read_manifest(manifest)
    base_rss = _rss_mib()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = create_encoder(name, allow_random=True)
    except Exception as e:  # noqa: BLE001 - any build failure means "not available here"
        return {"encoder": name, "status": "unavailable", "reason": f"{type(e).__name__}: {e}".splitlines()[0]}
    load_s = time.perf_counter() - t0
    first = records[: min(batch_size, len(records))]
    if enc.modality == "audio":  # untimed warm-up batch
        warm = [load_audio(manifest.parent / r.audio) for r in first]
    else:
        warm = [r.text for r in first]
    with torch.inference_mode():
        enc.encode(warm)
    audio_s = None
    if enc.modality == "audio":  # total audio seconds (decoded when the record has no segment bounds)
        audio_s = sum(r.duration or len(load_audio(manifest.parent / r.audio, start=r.start)) / SR for r in records)
    dtype = "float16"
    runs = [_time_extraction(manifest, enc, batch_size, dtype)]
    reasons = list(runs[0][2].failed.values())
    if reasons and not len(runs[0][2]) and all("float16 range" in r for r in reasons):
        dtype = "float32"  # features too large for fp16 (ComParE functionals): time a float32 cache instead
        runs = [_time_extraction(manifest, enc, batch_size, dtype)]
    runs += [_time_extraction(manifest, enc, batch_size, dtype) for _ in range(repeat - 1)]
    walls, cached, store = [r[0] for r in runs], runs[-1][1], runs[-1][2]
    wall = float(np.median(walls))
    peak = _peak_rss_mib()
    prov = enc.provenance
    return {
        "encoder": name,
        "status": "ok",
        "modality": enc.modality,
        "resolved": prov.resolved,
        "architecture": prov.architecture,
        "output_dim": enc.output_dim,
        "frame_rate": enc.frame_rate,
        "parameters": sum(p.numel() for p in enc.parameters()),
        "utterances": len(records),
        "failed": len(store.failed),
        "dtype": dtype,
        "load_s": round(load_s, 3),
        "extract_s": round(wall, 3),
        "utt_per_s": round(len(records) / wall, 2),
        "utt_per_s_best": round(len(records) / min(walls), 2),
        "repeats": repeat,
        "x_realtime": round(audio_s / wall, 1) if enc.modality == "audio" and audio_s else None,
        "cached_s": round(cached, 3),
        "peak_rss_mib": round(peak, 1),
        "rss_growth_mib": round(peak - base_rss, 1),
        "threads": torch.get_num_threads(),
    }


def _run_one(name: str, manifest: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--manifest",
        str(manifest),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"encoder": name, "status": "timeout", "reason": f"more than {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"encoder": name, "status": "error", "reason": tail}
    return json.loads(lines[-1])


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else f"{n / 1e3:.1f}K" if n else "0"


def _table(results: list[dict], title: str) -> None:
    from rich.table import Table

    from emofuse.cli._common import print_wide

    t = Table(title=title)
    cols = (
        "encoder",
        "mod",
        "resolved",
        "D",
        "fps",
        "params",
        "dtype",
        "failed",
        "load s",
        "utt/s",
        "x RT",
        "cached s",
    )
    for col in (*cols, "peak RSS MiB", "+RSS MiB"):
        t.add_column(col, justify="left" if col in ("encoder", "mod", "resolved") else "right")
    for r in results:
        if r["status"] != "ok":
            t.add_row(r["encoder"], "", f"[dim]{r['status']}: {r['reason'][:70]}[/]")
            continue
        fps = f"{r['frame_rate']:g}" if r["frame_rate"] else "-"
        t.add_row(
            r["encoder"], r["modality"], r["resolved"], str(r["output_dim"]), fps, _count(r["parameters"]), r["dtype"],
            str(r["failed"]),
            f"{r['load_s']:.2f}", f"{r['utt_per_s']:.1f}", str(r["x_realtime"] or "-"), f"{r['cached_s']:.2f}",
            f"{r['peak_rss_mib']:.0f}", f"{r['rss_growth_mib']:.0f}",
        )  # fmt: skip
    print_wide(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="number of generated clips")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each generated clip")
    p.add_argument("--manifest", type=Path, help="use this manifest instead of generated clips")
    p.add_argument("--only", action="append", default=[], help="encoder name or glob (repeatable)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3, help="timed extractions per encoder (median reported)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per encoder")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.manifest, args.batch_size, args.threads, args.repeat)))
        return

    from emofuse.encoders import list_encoders

    names = [n for n in list_encoders() if not args.only or any(fnmatch.fnmatch(n, pat) for pat in args.only)]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest.resolve() if args.manifest else make_clips(Path(tmp), args.n, args.seconds)
        results = []
        for name in names:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            results.append(_run_one(name, manifest, args))
    clips = str(args.manifest) if args.manifest else f"{args.n} clips x {args.seconds:g} s"
    if args.json:
        print(
            json.dumps({"clips": clips, "batch_size": args.batch_size, "device": "cpu", "results": results}, indent=2)
        )
    else:
        _table(results, f"feature extraction on CPU, {clips}, batch {args.batch_size}")


if __name__ == "__main__":
    main()
