"""Benchmark the distilled CMD student against its teacher pair on CPU, on the same clips, in one run.

DESIGN.md §9: "Distilled student vs its teacher, same input, same machine, one run: parameters, CPU latency
per utterance, throughput, peak memory. The student must be a multiple faster; the ratio is reported, not
assumed." Per setting (``--setting``, repeatable; default ``paper`` then ``packaged``):

* ``paper``: ``facebook/wav2vec2-base`` + ``bert-base-uncased`` architectures (specs/cmd.md §2.2), random init
  (no pretrained weights are needed to time an architecture); the student is the paper-size CMD student
  (audio ≈ 4.70 M, text ≈ 23.94 M parameters, §2.3 / §2.8);
* ``packaged``: the packaged teachers with their real weights, ``openai/whisper-tiny.en`` + ``all-MiniLM-L6-v2``,
  and the CMD student built on their input embeddings;
* ``tiny``: ``tiny-wav2vec2`` + ``tiny-bert`` (test-size, for the smoke test);
* ``run`` (with ``--run PATH``, and the default then): a **trained** student, e.g. the audio student of a recipe
  (``cmd_student_audio``), read from a checkpoint, a seed run folder or a whole ``RUN_DIR`` (the run whose final
  stage scored best on validation, :func:`emofuse.runs.resolve_checkpoint`), against the teacher path it replaces:
  its teacher(s) with the weights it was distilled from (Whisper tiny.en encoder) plus a linear probe head
  (mean + std pooling, one linear layer, as ``configs/evidence/ravdess-probe.yaml``; random weights, speed does
  not depend on them).

What is compared, for the same ``--n`` utterances (waveform + transcript):

* **teacher pair**: the audio teacher's and the text teacher's ``preprocess`` + forward (what inference with the
  frozen teachers costs; a classifier on top of them would add next to nothing);
* **student**: the same two ``preprocess`` calls (the student consumes the teachers' preprocess dicts) + the full
  CMD student forward (both branches, cross/self blocks, classifier) to fused probabilities;
* **input embedding**: the student's copied teacher embeddings alone (Whisper's two-conv front-end, BERT's word
  embeddings) on the same preprocessed clip, timed in the same interleaved loop, to say whether they dominate the
  student's time: ``time_shares`` in the JSON (median over clips of preprocessing / embedding share of the batch-1
  latency, and the embedding's share of the forward pass), printed under the table with what to do about it.

Measurements (all under ``torch.inference_mode()`` with ``torch.set_num_threads(--threads)``):

* ``params``: teacher counts from the encoders, student counts from ``CMDStudent.branch_parameters()`` (audio
  branch, text branch, shared head);
* ``latency``: batch size 1, preprocessing included, per utterance the best of ``--rounds`` rounds, then the
  median (and p90) over utterances, after ``--warmup`` untimed passes. Teacher and student alternate
  utterance by utterance (ABAB, the order flipping each time) so that drift on a shared machine hits both;
* ``utt/s``: throughput at batch ``--batch-size`` (consecutive clips, padded), per batch the best of the rounds,
  teacher and student interleaved batch by batch; ``x RT`` is audio seconds per wall-clock second;
* ``memory``: each model runs again in a **fresh subprocess** (RSS never shrinks, so models must not share a
  process). It is built once and thrown away (so that lazily imported modules, tokenizers and library caches are
  resident), then the baseline RSS is taken and the model is built again. ``+RSS bs1`` / ``+RSS batch`` are the
  peak resident set size during the batch-1 pass over all clips / during the batched pass, minus that baseline:
  resident weights + activations + allocator and library caches (first-call caches included: there is no
  separate warm-up). The peak of the *build* (the student copies its embeddings out of a full teacher) is
  excluded by resetting the kernel's high-water mark (``/proc/self/clear_refs``) once the model is built; where
  that is not possible ``ru_maxrss`` is used and the JSON says so (``peak_source``). ``weights`` is the RSS
  growth from building the model (after ``gc`` and ``malloc_trim``); ``param_mib`` in the JSON is the
  parameters' own size. The memory workers run with a fixed glibc mmap threshold (``--mmap-threshold``, default
  128 KiB, via ``MALLOC_MMAP_THRESHOLD_``): every large tensor is then mapped and unmapped on its own, so the
  peak tracks live memory and repeats to within a few MiB. With glibc's default *dynamic* threshold freed
  activations stay in the heap and the peak depends on allocation history (the paper student measured 370-650
  MiB across identical runs, against 207 MiB fixed). ``--mmap-threshold 0`` keeps glibc's default. The timing
  runs always use the default allocator.

Ratios are teacher/student for parameters, latency and memory, and student/teacher for throughput, so every
ratio above 1 means "the student is that many times cheaper".

Usage::

    python benchmarks/student_vs_teacher.py --n 16 --json
    python benchmarks/student_vs_teacher.py --setting packaged --threads 1 --out student.json
    python benchmarks/student_vs_teacher.py --manifest data/iemocap.jsonl --n 64
    python benchmarks/student_vs_teacher.py --run runs/ravdess-wav-distill --manifest data/ravdess.jsonl --n 32
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SR = 16_000
ROOT = Path(__file__).resolve().parent

#: Teacher pair and how its weights are obtained, per setting.
SETTINGS: dict[str, dict[str, Any]] = {
    "paper": {
        "audio": "facebook/wav2vec2-base",
        "text": "bert-base-uncased",
        "weights": "random",  # the named architectures, random init (speed does not depend on the values)
        "allow_random": True,
        "about": "paper-size architectures (wav2vec 2.0 Base + BERT-base), random init",
    },
    "packaged": {
        "audio": "openai/whisper-tiny.en",
        "text": "all-MiniLM-L6-v2",
        "weights": "auto",
        "allow_random": False,  # the real packaged weights or an error
        "about": "packaged teachers with their real weights (Whisper tiny.en encoder + MiniLM-L6)",
    },
    "tiny": {
        "audio": "tiny-wav2vec2",
        "text": "tiny-bert",
        "weights": "auto",
        "allow_random": True,
        "about": "test-size encoders (smoke test only)",
    },
}
DEFAULT_SETTINGS = ("paper", "packaged")
MEMORY_NOTE = (
    "peak RSS during the batch-1 pass (bs1) / the batched pass (batch) minus RSS before the model was built, each "
    "model in a fresh subprocess after a throwaway build; weights + activations + allocator/library caches; "
    "build-time peak excluded"
)


# ----------------------------------------------------------------------------------------------------------------
# memory probes


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` field of ``/proc/self/status`` in MiB (``None`` off Linux)."""
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


def _maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _rss_mib() -> float:
    """Current resident set size (``ru_maxrss`` where ``/proc`` is missing)."""
    rss = _status_mib("VmRSS")
    return rss if rss is not None else _maxrss_mib()


def _reset_peak() -> bool:
    """Reset the process' RSS high-water mark (Linux >= 4.0); True when it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    hwm, rss = _status_mib("VmHWM"), _status_mib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 1.0


def _peak_mib(reset_ok: bool) -> float:
    hwm = _status_mib("VmHWM") if reset_ok else None
    return hwm if hwm is not None else _maxrss_mib()


# ----------------------------------------------------------------------------------------------------------------
# clips


def _write_clips(folder: Path, wavs: list[np.ndarray], texts: list[str], source: str) -> Path:
    np.savez(folder / "clips.npz", *wavs)
    (folder / "clips.json").write_text(json.dumps({"texts": texts, "source": source}))
    return folder


def make_clips(folder: Path, n: int, manifest: Path | None = None, seed: int = 0) -> Path:
    """Write ``n`` waveforms and transcripts to ``folder`` (``clips.npz`` + ``clips.json``) once for all runs.

    Args:
        folder: Output folder (exists).
        n: Number of utterances.
        manifest: Take the first ``n`` records with audio and a transcript from this manifest; otherwise
            synthesise them with eSpeak NG (:func:`~emofuse.data.corpora.synthetic.prepare_synthetic`).
        seed: Seed of the synthetic corpus.

    Returns:
        ``folder``.
    """
    from emofuse.data.audio import load_audio

    if manifest is not None:
        from emofuse.data.manifest import read_manifest

        records = [r for r in read_manifest(manifest) if r.audio and r.text.strip()][:n]
        if not records:
            raise SystemExit(f"{manifest}: no record with audio and a transcript")
        wavs = [load_audio(r.audio_path(manifest.parent), start=r.start, end=r.end) for r in records]
        source = f"manifest {manifest} (first {len(records)} records with audio and text)"
    else:
        from emofuse.data.corpora.synthetic import prepare_synthetic

        speakers, classes = 4, 4
        per_class = max(1, math.ceil(n / (speakers * classes)))
        prep = prepare_synthetic(folder / "synthetic", progress=False, seed=seed, num_speakers=speakers,
                                 per_class=per_class)  # fmt: skip
        records = prep.records[:n]
        wavs = [load_audio(r.audio) for r in records]
        source = f"synthetic eSpeak NG speech (seed {seed}, {speakers} speakers)"
    return _write_clips(folder, [np.asarray(w, dtype=np.float32) for w in wavs], [r.text for r in records], source)


def load_clips(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    """The waveforms and transcripts :func:`make_clips` wrote."""
    with np.load(folder / "clips.npz") as z:
        wavs = [z[f"arr_{i}"] for i in range(len(z.files))]
    return wavs, json.loads((folder / "clips.json").read_text())["texts"]


# ----------------------------------------------------------------------------------------------------------------
# models (run inside the workers)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    with torch.inference_mode():  # start the thread pool and the conv/matmul backends before measuring anything
        x = torch.randn(1, 8, 400)
        torch.nn.functional.conv1d(x, torch.randn(8, 8, 3))
        torch.nn.functional.layer_norm(x @ torch.randn(400, 16), (16,))


def _preprocessors(setting: dict[str, Any], drop_weights: bool, modalities: tuple[str, ...]) -> dict[str, Any]:
    """The teacher encoders (their ``preprocess`` is shared by both models); weights dropped if unneeded."""
    from emofuse.models.cmd_student import build_teacher

    encs = {}
    for m in modalities:
        enc = build_teacher(setting[m], setting["weights"], setting["allow_random"], fast=drop_weights)
        if enc.modality != m:
            raise ValueError(f"{setting[m]!r} is not an {m} encoder")
        encs[m] = enc.to("meta") if drop_weights else enc  # preprocess uses tokenizers/feature extractors only
    return encs


def _student(setting: dict[str, Any]) -> Any:
    """The paper-style CMD student of a setting, or the trained student of ``--run`` (its checkpoint)."""
    if "checkpoint" in setting:
        from emofuse.models.checkpoint import load_checkpoint

        model, _ = load_checkpoint(setting["checkpoint"])
    else:
        from emofuse.models import create_model

        model = create_model(
            "cmd_student",
            audio_teacher=setting["audio"],
            text_teacher=setting["text"],
            teacher_weights=setting["weights"],
            allow_random=setting["allow_random"],
        )
    return model.eval().requires_grad_(False)


def run_setting_of(path: Path) -> dict[str, Any]:
    """The ``run`` setting of a trained CMD student: a checkpoint, a seed run folder or a whole ``RUN_DIR``.

    The teacher path it is compared with is what the student replaces: each of its modalities' teacher (the encoder
    whose input embedding it copied, with the weights it was distilled from) plus a linear probe head on its
    mean + std pooled states (:class:`~emofuse.models.probe.LinearProbe`; random weights: speed does not depend on
    them), the probabilities averaged over modalities.
    """
    from emofuse.models.checkpoint import read_checkpoint_meta
    from emofuse.runs import resolve_checkpoint

    ckpt, why = resolve_checkpoint(path)
    cfg = read_checkpoint_meta(ckpt).get("model_config") or {}
    mods = tuple(
        m for m in ("audio", "text") if cfg.get(f"{m}_teacher") and m in cfg.get("modalities", ("audio", "text"))
    )
    if not mods:
        raise SystemExit(f"{ckpt}: not a CMD student checkpoint (its model config names no teacher)")
    return {
        **{m: cfg[f"{m}_teacher"] for m in mods},
        "modalities": mods,
        "weights": cfg.get("teacher_weights", "auto"),
        "allow_random": bool(cfg.get("allow_random", False)),
        "checkpoint": str(ckpt),
        "num_classes": int(cfg.get("num_classes", 4)),
        "about": f"trained student {ckpt} ({why}) vs its teacher(s) + a linear probe head",
    }


class _Pair:
    """Preprocess once with the teacher encoders, then run the teacher path, the student or its input embedding."""

    def __init__(self, encoders: dict[str, Any], student: Any = None, probes: dict[str, Any] | None = None) -> None:
        self.encoders, self.student, self.probes = encoders, student, probes or {}

    def preprocess(self, wavs: list[np.ndarray], texts: list[str]) -> dict[str, dict]:
        return {m: enc.preprocess(wavs if m == "audio" else texts) for m, enc in self.encoders.items()}

    def teacher(self, inputs: dict[str, dict]) -> Any:
        outs = {m: enc(**inputs[m]) for m, enc in self.encoders.items()}
        if not self.probes:
            return [o.hidden for o in outs.values()]
        probs = [p({"features": {m: outs[m].hidden, f"{m}_mask": outs[m].mask}}).probs for m, p in self.probes.items()]
        return sum(probs) / len(probs)

    def run_student(self, inputs: dict[str, dict]) -> Any:
        return self.student(inputs).probs

    def embedding(self, inputs: dict[str, dict]) -> Any:
        """The student's copied input embeddings only (Whisper's conv front-end, BERT's word embeddings)."""
        return [self.student.branch(m).embedding(inputs[m]) for m in self.student.modalities]

    def step(self, role: str, wavs: list[np.ndarray], texts: list[str]) -> tuple[float, float]:
        """Seconds for preprocessing and for preprocessing + forward of one batch."""
        t0 = time.perf_counter()
        inputs = self.preprocess(wavs, texts)
        t1 = time.perf_counter()
        {"teacher": self.teacher, "student": self.run_student, "embedding": self.embedding}[role](inputs)
        return t1 - t0, time.perf_counter() - t0


def _build(setting: dict[str, Any], role: str, drop_weights: bool = False) -> tuple[_Pair, list[Any]]:
    """The pair for ``role`` (``teacher``, ``student`` or ``both``) and the modules whose memory it holds."""
    mods = tuple(setting.get("modalities", ("audio", "text")))
    student = _student(setting) if role != "teacher" else None
    encoders = _preprocessors(setting, drop_weights and role == "student", mods)
    probes = {}
    if "checkpoint" in setting and role != "student":
        from emofuse.models.probe import LinearProbe

        for m, enc in encoders.items():
            probes[m] = LinearProbe(
                modality=m, input_dim=int(enc.output_dim), num_classes=setting["num_classes"]
            ).eval()
    held = [*encoders.values(), *probes.values()] if role == "teacher" else [student]
    return _Pair(encoders, student, probes), held


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _warm(pair: _Pair, roles: tuple[str, ...], wavs: list, texts: list, batch_size: int, warmup: int) -> None:
    for _ in range(warmup):
        for role in roles:
            for i in range(min(2, len(wavs))):
                pair.step(role, wavs[i : i + 1], texts[i : i + 1])
            pair.step(role, wavs[:batch_size], texts[:batch_size])


def time_worker(setting_name: str, clips: Path, threads: int, batch_size: int, rounds: int, warmup: int) -> dict:
    """Build the teacher pair and the student in one process and time them interleaved (ABAB)."""
    import torch

    _threads(threads)
    setting = SETTINGS[setting_name]
    wavs, texts = load_clips(clips)
    n = len(wavs)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init warnings: intended for the paper setting
        pair, _ = _build(setting, "both")
    student, encoders = pair.student, pair.encoders
    build_s = time.perf_counter() - t0
    roles = ("teacher", "student")
    timed = (*roles, "embedding")  # the student's input embedding alone, on the same preprocessed input
    lat = {r: np.full((rounds, n), np.inf) for r in timed}
    pre = {r: np.full((rounds, n), np.inf) for r in timed}
    bat = {r: np.full((rounds, len(_batches(n, batch_size))), np.inf) for r in roles}
    with torch.inference_mode():
        _warm(pair, timed, wavs, texts, batch_size, warmup)
        for k in range(rounds):
            for i in range(n):
                for role in timed if (i + k) % 2 == 0 else timed[::-1]:
                    pre[role][k, i], lat[role][k, i] = pair.step(role, wavs[i : i + 1], texts[i : i + 1])
            for j, sl in enumerate(_batches(n, batch_size)):
                for role in roles if (j + k) % 2 == 0 else roles[::-1]:
                    bat[role][k, j] = pair.step(role, wavs[sl], texts[sl])[1]
    audio_s = sum(len(w) for w in wavs) / SR
    out: dict[str, Any] = {}
    for role in roles:
        best = lat[role].min(axis=0)  # (n,) best of the rounds per utterance
        batch_s = float(bat[role].min(axis=0).sum())
        out[role] = {
            "latency_ms": {
                "median": round(1e3 * float(np.median(best)), 3),
                "p90": round(1e3 * float(np.percentile(best, 90)), 3),
                "mean": round(1e3 * float(best.mean()), 3),
                "median_all_rounds": round(1e3 * float(np.median(lat[role])), 3),
            },
            "preprocess_ms_median": round(1e3 * float(np.median(pre[role].min(axis=0))), 3),
            "utt_per_s": round(n / batch_s, 2),
            "utt_per_s_bs1": round(n / float(best.sum()), 2),
            "x_realtime": round(audio_s / batch_s, 1),
        }
    out["student"]["time_shares"] = _shares(pre["student"], lat["student"], lat["embedding"] - pre["embedding"])
    bp = student.branch_parameters()
    tp = {m: _params(e) for m, e in encoders.items()}
    tp.update({"probe": sum(_params(p) for p in pair.probes.values())} if pair.probes else {})
    out["teacher"]["parameters"] = {**tp, "total": sum(tp.values())}
    out["student"]["parameters"] = {**bp, "total": sum(bp.values())}
    return {
        "status": "ok",
        "models": out,
        "build_s": round(build_s, 2),
        "threads": torch.get_num_threads(),
        "provenance": {
            "teacher": {m: e.provenance.to_dict() for m, e in encoders.items()},
            "student_embeddings": student.teacher_provenance,
        },
        "architecture": {m: e.provenance.architecture for m, e in encoders.items()},
    }


def _shares(pre: np.ndarray, total: np.ndarray, embed: np.ndarray) -> dict[str, float]:
    """Where the student's batch-1 time goes: preprocessing, the copied input embedding, the rest (medians).

    Args:
        pre: Preprocessing seconds ``(rounds, n)`` of the student's timed calls.
        total: Preprocessing + forward seconds ``(rounds, n)``.
        embed: Input-embedding seconds ``(rounds, n)`` (its own calls, preprocessing subtracted).
    """
    best_total, best_pre, best_emb = total.min(axis=0), pre.min(axis=0), embed.min(axis=0)  # (n,) each
    forward = np.maximum(best_total - best_pre, 1e-9)
    return {
        "preprocess_ms": round(1e3 * float(np.median(best_pre)), 3),
        "embedding_ms": round(1e3 * float(np.median(best_emb)), 3),
        "forward_ms": round(1e3 * float(np.median(forward)), 3),
        "preprocess_share": round(float(np.median(best_pre / best_total)), 3),
        "embedding_share": round(float(np.median(np.minimum(best_emb, forward) / best_total)), 3),
        "embedding_share_of_forward": round(float(np.median(np.minimum(best_emb / forward, 1.0))), 3),
    }


def _collect() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS reflects live objects."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_worker(setting_name: str, role: str, clips: Path, threads: int, batch_size: int) -> dict:
    """Peak RSS growth of one model (teacher pair or student) in this fresh process."""
    import torch

    _threads(threads)
    setting = SETTINGS[setting_name]
    wavs, texts = load_clips(clips)

    def build() -> tuple[_Pair, list[Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _build(setting, role, drop_weights=True)  # a student builds (then drops) full teachers: a peak

    # build once and throw it away, so that the lazy imports (transformers model modules), tokenizer and
    # backend caches are resident before the baseline: the growth below is this model's own
    build()
    _collect()
    rss0 = _rss_mib()
    pair, model = build()
    _collect()
    rss_built = _rss_mib()
    build_peak = _maxrss_mib()
    reset_ok = _reset_peak()
    with torch.inference_mode():  # no separate warm-up: first-call caches are part of what a model costs
        for i in range(len(wavs)):
            pair.step(role, wavs[i : i + 1], texts[i : i + 1])
        peak_bs1 = _peak_mib(reset_ok)
        reset_ok = reset_ok and _reset_peak()
        for sl in _batches(len(wavs), batch_size):
            pair.step(role, wavs[sl], texts[sl])
        peak_batch = _peak_mib(reset_ok)
    param_bytes = sum(p.numel() * p.element_size() for m in model for p in m.parameters() if p.device.type != "meta")
    return {
        "status": "ok",
        "rss_before_mib": round(rss0, 1),
        "weights_mib": round(rss_built - rss0, 1),
        "param_mib": round(param_bytes / 2**20, 1),
        "peak_growth_bs1_mib": round(peak_bs1 - rss0, 1),
        "peak_growth_batch_mib": round(peak_batch - rss0, 1),
        "peak_rss_mib": round(max(peak_bs1, peak_batch), 1),
        "build_peak_rss_mib": round(build_peak, 1),
        "peak_source": "VmHWM reset after building" if reset_ok else "ru_maxrss (includes building)",
    }


# ----------------------------------------------------------------------------------------------------------------
# driver


def _run_worker(kind: str, setting: str, clips: Path, args: argparse.Namespace, role: str = "") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--setting", setting, "--clips", str(clips),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--rounds", str(args.rounds),
           "--warmup", str(args.warmup), "--role", role or "teacher"]  # fmt: skip
    if setting == "run":
        cmd += ["--run", str(args.run)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}  # keep the thread count honest
    if kind == "memory" and args.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)  # reproducible peaks (module docstring)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"more than {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": tail}
    return json.loads(lines[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b not in (None, 0) else None


def _minus_embedding(student: dict[str, Any]) -> float | None:
    """The student's median batch-1 latency without its copied input embedding (a bound, not a measurement)."""
    median, shares = student.get("latency_ms", {}).get("median"), student.get("time_shares")
    return None if median is None or not shares else max(median - shares["embedding_ms"], 1e-6)


def _ratios(models: dict[str, Any]) -> dict[str, float | None]:
    t, s = models["teacher"], models["student"]
    tp, sp = t.get("parameters", {}), s.get("parameters", {})
    tm, sm = t.get("memory", {}), s.get("memory", {})
    return {
        "params_audio": _ratio(tp.get("audio"), sp.get("audio")),
        "params_text": _ratio(tp.get("text"), sp.get("text")),
        "params_total": _ratio(tp.get("total"), sp.get("total")),
        "latency": _ratio(t.get("latency_ms", {}).get("median"), s.get("latency_ms", {}).get("median")),
        "latency_p90": _ratio(t.get("latency_ms", {}).get("p90"), s.get("latency_ms", {}).get("p90")),
        "latency_without_embedding": _ratio(t.get("latency_ms", {}).get("median"), _minus_embedding(s)),
        "throughput": _ratio(s.get("utt_per_s"), t.get("utt_per_s")),
        "memory_bs1": _ratio(tm.get("peak_growth_bs1_mib"), sm.get("peak_growth_bs1_mib")),
        "memory_batch": _ratio(tm.get("peak_growth_batch_mib"), sm.get("peak_growth_batch_mib")),
    }


def run_setting(name: str, clips: Path, args: argparse.Namespace, log: Any) -> dict:
    """Memory of each model (fresh subprocesses), then the interleaved timing run, then the ratios."""
    spec = SETTINGS[name]
    result: dict[str, Any] = {"about": spec["about"], "audio_teacher": spec.get("audio"),
                              "text_teacher": spec.get("text"), "teacher_weights": spec["weights"]}  # fmt: skip
    if "checkpoint" in spec:
        result["checkpoint"] = spec["checkpoint"]
    mem = {}
    for role in ("teacher", "student"):
        log(f"[{name}] peak memory of the {role} (fresh process) ...")
        mem[role] = _run_worker("memory", name, clips, args, role)
    log(f"[{name}] timing teacher path vs student, interleaved ...")
    timing = _run_worker("time", name, clips, args)
    if timing.get("status") != "ok":
        result.update(status=timing.get("status", "error"), reason=timing.get("reason", ""))
        models: dict[str, Any] = {"teacher": {}, "student": {}}
    else:
        result.update(status="ok", provenance=timing["provenance"], architecture=timing["architecture"],
                      build_s=timing["build_s"], threads=timing["threads"])  # fmt: skip
        models = timing["models"]
    for role in ("teacher", "student"):
        models[role]["memory"] = mem[role]
    result["models"] = models
    result["ratios"] = _ratios(models)
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("emofuse", "torch", "transformers", "tokenizers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "usable_cpus": _usable_cpus(), "platform": platform.platform()}


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}K"


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def render_table(results: dict[str, Any], stderr: bool = False) -> None:
    """Print one rich table: a teacher row, a student row and a ratio row per setting."""
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"CMD student vs teacher pair on CPU: {results['n']} utterances, {results['threads']} thread(s), "
        f"batch {results['batch_size']}, best of {results['rounds']} rounds",
        caption="latency: batch 1 incl. preprocessing, median (p90) over utterances; +RSS: peak RSS growth in a "
        "fresh process; ratio row: teacher/student (throughput: student/teacher)",
    )
    cols = ("setting", "model", "audio params", "text params", "total params", "latency ms", "p90 ms",
            "utt/s", "x RT", "+RSS bs1 MiB", "+RSS batch MiB", "weights MiB")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("setting", "model") else "right")
    for name, r in results["settings"].items():
        if r.get("status") != "ok":
            t.add_row(name, f"[red]{r.get('status')}[/]", r.get("reason", "")[:80])
            t.add_section()
            continue
        for role in ("teacher", "student"):
            m = r["models"][role]
            p, mem = m["parameters"], m["memory"]
            teachers = " + ".join(t for t in (r["audio_teacher"], r["text_teacher"]) if t)
            label = teachers + (" + probe" if "checkpoint" in r else "") if role == "teacher" else "CMD student"
            if mem.get("status") != "ok":
                mem = {}
            t.add_row(
                name if role == "teacher" else "", label, _count(p.get("audio")), _count(p.get("text")),
                _count(p.get("total")), _fmt(m["latency_ms"]["median"]), _fmt(m["latency_ms"]["p90"]),
                _fmt(m["utt_per_s"]), _fmt(m["x_realtime"]), _fmt(mem.get("peak_growth_bs1_mib"), ".0f"),
                _fmt(mem.get("peak_growth_batch_mib"), ".0f"), _fmt(mem.get("weights_mib"), ".0f"),
            )  # fmt: skip
        q = r["ratios"]
        x = lambda v: _fmt(v, ".2f", "x")  # noqa: E731
        t.add_row("", "[bold]ratio[/]", x(q["params_audio"]), x(q["params_text"]), x(q["params_total"]),
                  x(q["latency"]), x(q["latency_p90"]), x(q["throughput"]), "", x(q["memory_bs1"]),
                  x(q["memory_batch"]), "", style="bold")  # fmt: skip
        t.add_section()
    console = Console(stderr=stderr)
    width = max(console.width, 200)
    Console(stderr=stderr, width=width).print(t)
    for name, r in results["settings"].items():
        if r.get("status") == "ok":
            note = embedding_note(name, r["models"]["student"]["time_shares"])
            bound = r["ratios"].get("latency_without_embedding")
            note += f" (latency ratio without the embedding: {bound:.1f}x, a bound)" if bound else ""
            Console(stderr=stderr, width=width).print(note, markup=False, highlight=False)


def embedding_note(name: str, shares: dict[str, float]) -> str:
    """One paragraph: where the student's batch-1 time goes, and whether its input embedding dominates."""
    emb, fwd = shares["embedding_share"], shares["embedding_share_of_forward"]
    line = (
        f"[{name}] student batch-1 time (median): preprocessing {shares['preprocess_ms']:.1f} ms "
        f"({100 * shares['preprocess_share']:.0f} %), input embedding {shares['embedding_ms']:.1f} ms "
        f"({100 * emb:.0f} % of the total, {100 * fwd:.0f} % of the forward pass), "
        f"forward {shares['forward_ms']:.1f} ms"
    )
    if fwd >= 0.5:
        line += (
            ". The embedding dominates the forward pass: a copied one runs at the teacher's width (Whisper tiny.en: "
            "two 384-channel convolutions over 100 mel frames/s) before the student's conv reduces it to its own "
            "width. To cut it, train the student on a narrow front-end instead (model.front_end_channels: 64, "
            "distilled in stage 1 with the rest); 'latency_without_embedding' in the ratios is the bound that "
            "removing it entirely would give"
        )
    elif shares["preprocess_share"] >= 0.5:
        line += ". Preprocessing (the log-mel / tokenizer, shared with the teacher path) dominates, not the embedding"
    else:
        rest = max(shares["forward_ms"] - shares["embedding_ms"], 0.0)
        line += (
            f". The embedding does not dominate: the student's own layers take {rest:.1f} ms, mostly per-"
            "operator overhead at batch 1 (its blocks are 32 wide), which an exported or compiled graph cuts"
        )
    return line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", action="append", choices=sorted([*SETTINGS, "run"]),
                   help="paper, packaged or tiny (repeatable; default: paper and packaged)")  # fmt: skip
    p.add_argument("--n", type=int, default=32, help="utterances (same clips and transcripts for every model)")
    p.add_argument("--manifest", type=Path, help="take the clips from this manifest instead of synthesising them")
    p.add_argument("--run", type=Path, help="a trained CMD student (checkpoint, seed run folder or RUN_DIR): adds "
                   "the setting 'run', that student vs its teacher(s) + a probe head")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="batch size of the throughput measurement")
    p.add_argument("--threads", type=int, default=min(_usable_cpus(), 8), help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (best per utterance / batch is kept)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up passes per model")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=131072,
        help="glibc MALLOC_MMAP_THRESHOLD_ of the memory workers, bytes (0: glibc's dynamic default)",
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds per worker process")
    p.add_argument("--json", action="store_true", help="print the results as JSON (the table goes to stderr)")
    p.add_argument("--out", type=Path, help="also write the JSON to this file (atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--worker", choices=("time", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--role", choices=("teacher", "student"), default="teacher", help=argparse.SUPPRESS)
    p.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (or one worker); print the table and/or JSON and return the results dict."""
    args = _parser().parse_args(argv)
    if args.run is not None:
        args.run = args.run.resolve()
        SETTINGS["run"] = run_setting_of(args.run)
    elif "run" in (args.setting or []):
        raise SystemExit("--setting run needs --run PATH (a trained CMD student)")
    if args.n < 1 or args.batch_size < 1 or args.rounds < 1 or args.threads < 1 or args.warmup < 0:
        raise SystemExit("--n, --batch-size, --rounds and --threads must be >= 1, --warmup >= 0")
    if args.worker:
        (name,) = args.setting or ["tiny"]
        if args.worker == "time":
            res = time_worker(name, args.clips, args.threads, args.batch_size, args.rounds, args.warmup)
        else:
            res = memory_worker(name, args.role, args.clips, args.threads, args.batch_size)
        print(json.dumps(res))
        return res

    start = time.perf_counter()
    settings = list(args.setting or ([] if args.run is not None else DEFAULT_SETTINGS))
    settings = list(dict.fromkeys(settings + (["run"] if args.run is not None else [])))
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="emofuse-svt-") as tmp:
        log(f"preparing {args.n} clips ...")
        clips = make_clips(Path(tmp), args.n, args.manifest.resolve() if args.manifest else None)
        wavs, texts = load_clips(clips)
        source = json.loads((clips / "clips.json").read_text())["source"]
        per_setting = {name: run_setting(name, clips, args, log) for name in settings}
    secs = np.array([len(w) / SR for w in wavs])
    results: dict[str, Any] = {
        "benchmark": "student_vs_teacher",
        "device": "cpu",
        "n": len(wavs),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "clips": {
            "source": source,
            "audio_seconds_total": round(float(secs.sum()), 2),
            "audio_seconds_median": round(float(np.median(secs)), 2),
            "audio_seconds_range": [round(float(secs.min()), 2), round(float(secs.max()), 2)],
            "words_median": float(np.median([len(t.split()) for t in texts])),
        },
        "memory_measure": MEMORY_NOTE,
        "memory_mmap_threshold": args.mmap_threshold or "glibc default (dynamic)",
        "ratio_definitions": "params/latency/memory: teacher / student; throughput: student / teacher "
        "(above 1 = the student is cheaper)",
        "versions": _versions(),
        "machine": _machine(),
        "settings": per_setting,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if args.out:
        from emofuse.utils.io import atomic_write_json

        atomic_write_json(args.out, results)
    if args.json:
        render_table(results, stderr=True)
        print(json.dumps(results, indent=2))
    else:
        render_table(results)
    return results


if __name__ == "__main__":
    main()
