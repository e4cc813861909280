"""The quickstart: synthetic corpus → packaged teachers → CMD vs its unimodal students → report → predictions.

:func:`run_quickstart` is what ``emofuse quickstart`` runs, offline, in minutes on a CPU:

1. generates the synthetic corpus (:func:`~emofuse.data.corpora.synthetic.prepare_synthetic`; eSpeak NG) and
   writes its manifest. By default its conflicts are ``neutral``: in 80 % of each emotional class one channel
   (the words or the voice) is neutral while the other carries the emotion, as in real speech, so neither
   modality alone can tell those utterances from neutral ones and fusion has something to add (with the
   corpus' contradictory ``other`` conflicts no model can beat the better modality);
2. trains, with the experiment runner, three experiments built from the packaged
   ``emofuse/configs/quickstart.yaml``: the CMD student (audio + text, early fusion) and its unimodal
   variants (``cmd_student_audio``, ``cmd_student_text``), each distilled from the frozen teachers (Whisper
   tiny.en, all-MiniLM-L6-v2 by default) and then fine-tuned, evaluated on unseen speakers (the speakers in
   three groups: each fold tests on one group and validates on the next). The teachers' states are extracted
   once into a shared feature cache before the first training;
3. writes the report over the three run folders (:func:`emofuse.evaluation.report.write_report`);
4. predicts two held-out utterances with the trained CMD checkpoint (:class:`emofuse.inference.Predictor`).

Everything is cached under ``out_dir``: a second call re-synthesises nothing, extracts nothing and trains
nothing (the runner resumes and skips finished runs); only the report and the predictions are made again.

Layout of ``out_dir``::

    corpus/    wav/, synthetic.json, manifest.jsonl      the synthetic corpus
    features/  <encoder>-<hash>/                          teacher-state cache (shared by the three runs)
    runs/      cmd/  audio/  text/                        run folders (see emofuse.training.runner)
    report/    report.md  report.html                     the report
    summary.json                                          the summary table, predictions and step timings

This module orchestrates the library's layers end to end (it is the only place in ``training/`` that also
calls ``inference/`` and ``evaluation/``), and stays free of printing: progress lines go to ``echo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from emofuse.config import ExperimentConfig, apply_overrides, load_config, load_yaml
from emofuse.config.loader import ConfigError
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.runs import RunDir
from emofuse.utils.io import atomic_write_json

__all__ = [
    "DEFAULT_AUDIO_TEACHER",
    "DEFAULT_TEXT_TEACHER",
    "VARIANTS",
    "QuickstartResult",
    "SummaryRow",
    "quickstart_config",
    "run_quickstart",
]

DEFAULT_AUDIO_TEACHER = "openai/whisper-tiny.en"
DEFAULT_TEXT_TEACHER = "all-MiniLM-L6-v2"
#: The corpus: 6 speakers (in the packaged config's 3 speaker groups, one fold each), 12 utterances per speaker and
#: class, and in 80 % of each emotional class one channel neutral while the other carries the emotion.
DEFAULT_SPEAKERS = 6
DEFAULT_PER_CLASS = 12
DEFAULT_CONFLICT_RATE = 0.8
DEFAULT_CONFLICT_MODE = "neutral"
#: ``key -> (registered model, table label)``: CMD first, then its unimodal students.
VARIANTS: dict[str, tuple[str, str]] = {
    "cmd": ("cmd_student", "CMD (audio + text)"),
    "audio": ("cmd_student_audio", "audio only + distill"),
    "text": ("cmd_student_text", "text only + distill"),
}
STEPS = 4


@dataclass(frozen=True)
class SummaryRow:
    """One line of the quickstart's summary table (mean and std over folds × seeds).

    Attributes:
        variant: ``cmd``, ``audio`` or ``text``.
        label: Human-readable name.
        n_runs: Finished runs (folds × seeds).
        mult_f1: MulT-convention macro F1 ``(mean, std)`` (the CMD paper's headline metric).
        wa: Weighted accuracy (overall accuracy).
        ua: Unweighted accuracy (mean per-class recall).
        macro_f1: Macro F1.
    """

    variant: str
    label: str
    n_runs: int
    mult_f1: tuple[float, float]
    wa: tuple[float, float]
    ua: tuple[float, float]
    macro_f1: tuple[float, float]


@dataclass
class QuickstartResult:
    """What :func:`run_quickstart` made.

    Attributes:
        out_dir: The quickstart folder.
        manifest: The synthetic corpus' manifest.
        run_dirs: Run folder per variant.
        rows: The summary table, one row per variant (CMD first).
        report: ``{"markdown": ..., "html": ...}``.
        predictions: Per example: ``audio``, ``id``, ``label`` (the truth), ``pred``, ``probabilities``,
            ``transcript`` (what the predictor used) and ``transcribed`` (True if it ran speech recognition).
        checkpoint: The CMD checkpoint the predictions used.
        seconds: Wall-clock seconds per step (``corpus``, ``train``, ``report``, ``predict``, ``total``).
        reused: Per step, whether everything came from the cache (``corpus``, ``features``, ``train``).
    """

    out_dir: Path
    manifest: Path
    run_dirs: dict[str, Path]
    rows: list[SummaryRow]
    report: dict[str, Path]
    predictions: list[dict[str, Any]]
    checkpoint: Path
    seconds: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to ``summary.json``)."""
        return {
            "out_dir": str(self.out_dir),
            "manifest": str(self.manifest),
            "run_dirs": {k: str(v) for k, v in self.run_dirs.items()},
            "rows": [asdict(r) for r in self.rows],
            "report": {k: str(v) for k, v in self.report.items()},
            "predictions": self.predictions,
            "checkpoint": str(self.checkpoint),
            "seconds": self.seconds,
            "reused": self.reused,
        }


def _packaged_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The packaged ``quickstart.yaml`` as a dict; ``overrides`` are checked against it (errors name the key)."""
    res = resources.files("emofuse") / "configs" / "quickstart.yaml"
    with resources.as_file(res) as path:
        if overrides:
            load_config(path, overrides)  # a bad user override fails here with the loader's clear message
        return load_yaml(path)


def quickstart_config(
    variant: str,
    manifest: str | Path,
    cache_dir: str | Path,
    *,
    audio_teacher: str = DEFAULT_AUDIO_TEACHER,
    text_teacher: str = DEFAULT_TEXT_TEACHER,
    seeds: Sequence[int] = (0,),
    folds: Sequence[str] | None = None,
    distill_epochs: int | None = None,
    finetune_epochs: int | None = None,
    allow_random: bool = False,
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """The experiment of one quickstart variant: the packaged ``quickstart.yaml`` with these settings.

    Args:
        variant: ``cmd``, ``audio`` or ``text`` (:data:`VARIANTS`).
        manifest: The corpus manifest.
        cache_dir: Feature cache root (shared by the variants).
        audio_teacher: Registered audio teacher (whose input embedding the student copies).
        text_teacher: Registered text teacher.
        seeds: Seeds (each fold is trained once per seed).
        folds: Leave-one-speaker-out folds to run (``None``: all, one per speaker).
        distill_epochs: Stage-1 epochs (``None``: the packaged value).
        finetune_epochs: Stage-2 epochs (``None``: the packaged value).
        allow_random: Let teachers without pretrained weights run with random ones (tiny test encoders
            never need it).
        overrides: Further ``section.key=value`` overrides, applied last.

    Raises:
        ValueError: An unknown variant, or a bad setting (named).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown quickstart variant {variant!r}; choose from {', '.join(VARIANTS)}")
    data = _packaged_config(overrides)
    model_name, label = VARIANTS[variant]
    data["name"] = f"quickstart-{variant}"
    data["description"] = f"Quickstart: {label} on the synthetic corpus ({audio_teacher} + {text_teacher}), speaker-out"
    data["seeds"] = list(seeds)
    data["data"] = {**data.get("data", {}), "manifest": str(manifest), "folds": list(folds) if folds else None}
    data["model"] = {
        **data.get("model", {}),
        "name": model_name,
        "audio_teacher": audio_teacher,
        "text_teacher": text_teacher,
        "allow_random": allow_random,
    }
    data["encoders"] = {**data.get("encoders", {}), "cache_dir": str(cache_dir), "allow_random": allow_random}
    for stage, epochs in zip(data.get("stages", []), (distill_epochs, finetune_epochs), strict=False):
        if epochs is not None:
            stage.setdefault("trainer", {})["max_epochs"] = int(epochs)
    data = apply_overrides(data, overrides)
    try:
        return ExperimentConfig.model_validate(data)
    except Exception as e:  # pydantic's ValidationError: name the setting
        raise ConfigError(f"quickstart settings: {e}") from None


def _corpus(
    root: Path, num_speakers: int, per_class: int, conflict_rate: float, conflict_mode: str, progress: bool
) -> tuple[Path, list[Utterance], bool]:
    """Generate (or reload) the synthetic corpus; write its manifest when it changed."""
    from emofuse.data.corpora.synthetic import prepare_synthetic

    prep = prepare_synthetic(
        root,
        num_speakers=num_speakers,
        per_class=per_class,
        conflict_rate=conflict_rate,
        conflict_mode=conflict_mode,
        progress=progress,
    )
    reused = any("nothing synthesised" in n for n in prep.report.notes)
    manifest = root / "manifest.jsonl"
    text = "".join(r.to_json() + "\n" for r in prep.records)
    if not manifest.is_file() or manifest.read_text(encoding="utf-8") != text:
        write_manifest(prep.records, manifest, overwrite=True)
    return manifest, list(prep.records), reused


def _fold_line(records: Sequence[Utterance], cfg: ExperimentConfig) -> str:
    from emofuse.training.rundir import resolve_folds

    folds = resolve_folds(cfg, list(records))
    f = folds[0]
    by_id = {r.id: r for r in records}
    test = sorted({str(by_id[i].speaker) for i in f.test})
    return (
        f"{len(folds)} speaker-independent fold(s) ({', '.join(x.name for x in folds)}); "
        f"e.g. {f.name}: train {len(f.train)} / val {len(f.val)} / test {len(f.test)} utterances "
        f"(test speakers {', '.join(test)})"
    )


def _row(variant: str, doc: dict[str, Any]) -> SummaryRow:
    agg = doc.get("aggregate", {})

    def pair(*path: str) -> tuple[float, float]:
        node: Any = agg
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict) or "mean" not in node:
            return (float("nan"), float("nan"))
        return (float(node["mean"]), float(node["std"]))

    return SummaryRow(
        variant=variant,
        label=VARIANTS[variant][1],
        n_runs=int(doc.get("n_runs", 0)),
        mult_f1=pair("mult_f1", "macro"),
        wa=pair("wa"),
        ua=pair("ua"),
        macro_f1=pair("macro_f1"),
    )


def _checkpoint(run_dir: Path, fold: str, seed: int) -> Path:
    """The checkpoint a finished run scored its test split with (from its ``DONE``)."""
    ckpt = RunDir(run_dir).run(fold, seed).checkpoint()
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: run {fold}/seed{seed} has no finished checkpoint")
    return ckpt


def _examples(records: Sequence[Utterance], test_ids: Sequence[str], n: int) -> list[Utterance]:
    """``n`` held-out utterances with different labels, the first in id order (no choice by outcome)."""
    by_id = {r.id: r for r in records}
    picked: list[Utterance] = []
    for i in sorted(test_ids):
        r = by_id[i]
        if r.audio and all(p.label != r.label for p in picked):
            picked.append(r)
        if len(picked) == n:
            break
    return picked


def _predict(checkpoint: Path, examples: Sequence[Utterance], transcribe: bool) -> list[dict[str, Any]]:
    """Run the trained CMD student on the examples (the one call into :mod:`emofuse.inference`)."""
    from emofuse.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    out = []
    for r in examples:
        assert r.audio is not None
        res = predictor.predict(r.audio, text=None if transcribe else r.text)
        out.append(
            {
                "id": r.id,
                "audio": r.audio,
                "label": r.label,
                "manifest_text": r.text,
                "pred": res.label,
                "probabilities": {str(k): float(v) for k, v in dict(res.probabilities).items()},
                "transcript": res.transcript,
                "transcribed": bool(res.from_asr),
            }
        )
    return out


def _report(run_dirs: Sequence[Path], out_dir: Path) -> dict[str, Path]:
    """Write the report over the run folders (the one call into :mod:`emofuse.evaluation.report`)."""
    from emofuse.evaluation.report import write_report

    return write_report(list(run_dirs), out_dir, title="emofuse quickstart: CMD vs unimodal students", overwrite=True)


def run_quickstart(
    out_dir: str | Path,
    *,
    audio_teacher: str = DEFAULT_AUDIO_TEACHER,
    text_teacher: str = DEFAULT_TEXT_TEACHER,
    num_speakers: int = DEFAULT_SPEAKERS,
    per_class: int = DEFAULT_PER_CLASS,
    conflict_rate: float = DEFAULT_CONFLICT_RATE,
    conflict_mode: str = DEFAULT_CONFLICT_MODE,
    seeds: Sequence[int] = (0,),
    folds: Sequence[str] | None = None,
    distill_epochs: int | None = None,
    finetune_epochs: int | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    examples: int = 2,
    transcribe: bool = True,
    allow_random: bool = False,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> QuickstartResult:
    """Run the whole quickstart into ``out_dir`` (layout in the module docstring), reusing what is cached.

    Args:
        out_dir: Quickstart folder (created).
        audio_teacher: Registered audio teacher (default: the packaged Whisper tiny.en).
        text_teacher: Registered text teacher (default: the packaged all-MiniLM-L6-v2).
        num_speakers: Speakers of the synthetic corpus (at least 3: train, val and test speakers).
        per_class: Utterances per speaker and class.
        conflict_rate: Share of each emotional class whose text and prosody disagree (synthetic corpus).
        conflict_mode: ``neutral`` (the disagreeing channel is neutral: fusion can help) or ``other`` (another
            emotion: contradictory); see :mod:`emofuse.data.corpora.synthetic`.
        seeds: Seeds per fold.
        folds: Folds to run (``None``: every fold).
        distill_epochs: Stage-1 epochs (``None``: ``quickstart.yaml``).
        finetune_epochs: Stage-2 epochs (``None``: ``quickstart.yaml``).
        variants: Which of :data:`VARIANTS` to train; ``cmd`` is required (it makes the predictions).
        examples: Held-out utterances to predict.
        transcribe: Let the predictor transcribe the examples (packaged speech recogniser) instead of
            giving it the manifest transcript.
        allow_random: Let teachers without pretrained weights run with random ones.
        overrides: ``section.key=value`` overrides for every variant's config.
        overwrite: Retrain from scratch (needed when the settings differ from an earlier run in ``out_dir``).
        progress: Progress bars (corpus, feature extraction, training).
        echo: ``echo(line)`` for step headers and per-run lines (default: discard).

    Returns:
        The :class:`QuickstartResult` (also written to ``out_dir/summary.json``).

    Raises:
        ValueError: A bad setting (named), or fewer than 3 speakers.
        MissingDependencyError: eSpeak NG (``emofuse[synth]``) or a teacher's weights package is missing.
    """
    say = echo or (lambda s: None)
    if "cmd" not in variants:
        raise ValueError(f"variants must include 'cmd' (it makes the predictions), got {list(variants)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown quickstart variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if num_speakers < 3:
        raise ValueError(f"num_speakers must be at least 3 (train, val and test speakers), got {num_speakers}")
    if examples < 0:
        raise ValueError(f"examples must be >= 0, got {examples}")
    out = Path(out_dir).expanduser().resolve()
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}
    start = t0 = time.monotonic()

    manifest, cache = out / "corpus" / "manifest.jsonl", out / "features"
    cfgs = {
        v: quickstart_config(
            v,
            manifest,
            cache,
            audio_teacher=audio_teacher,
            text_teacher=text_teacher,
            seeds=seeds,
            folds=folds,
            distill_epochs=distill_epochs,
            finetune_epochs=finetune_epochs,
            allow_random=allow_random,
            overrides=overrides,
        )
        for v in VARIANTS
        if v in variants
    }
    size = (
        f"{num_speakers} speakers x 4 classes x {per_class}; {conflict_mode} conflicts in "
        f"{conflict_rate:.0%} of each emotion"
    )
    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/{STEPS}] synthetic corpus ({size}, eSpeak NG) in {out / 'corpus'}")
    _, records, reused["corpus"] = _corpus(
        out / "corpus", num_speakers, per_class, conflict_rate, conflict_mode, progress
    )
    say(f"      {len(records)} utterances; {_fold_line(records, cfgs['cmd'])}")
    seconds["corpus"] = time.monotonic() - t0

    from emofuse.training.components import DefaultComponents
    from emofuse.training.runner import run_experiment

    t0 = time.monotonic()
    stages = cfgs["cmd"].resolved_stages()
    epochs = " + ".join(f"{s.name} {s.trainer.get('max_epochs', cfgs['cmd'].trainer.max_epochs)}" for s in stages)
    say(
        f"[2/{STEPS}] teachers {audio_teacher} + {text_teacher} (features cached in {cache}); "
        f"training {', '.join(VARIANTS[v][0] for v in cfgs)} ({epochs} epochs)"
    )
    existing = {p.name for p in cache.iterdir()} if cache.is_dir() else set()
    components = DefaultComponents(progress=progress)  # one set of encoders and caches for every variant
    run_dirs: dict[str, Path] = {}
    docs: dict[str, dict[str, Any]] = {}
    all_done = True
    for v, cfg in cfgs.items():
        run_dir = out / "runs" / v
        all_done &= _finished(run_dir, cfg)
        say(f"  {VARIANTS[v][1]} ({cfg.model.name}) -> {run_dir}")
        doc = run_experiment(cfg, run_dir, overwrite=overwrite, components=components, progress=progress, echo=say)
        assert doc is not None  # the quickstart never runs under DDP
        run_dirs[v], docs[v] = run_dir, doc
    reused["features"] = bool(existing) and {p.name for p in cache.iterdir()} == existing
    reused["train"] = all_done and not overwrite
    seconds["train"] = time.monotonic() - t0

    t0 = time.monotonic()
    say(f"[3/{STEPS}] report over {len(run_dirs)} run folder(s) -> {out / 'report'}")
    report = _report(list(run_dirs.values()), out / "report")
    seconds["report"] = time.monotonic() - t0

    t0 = time.monotonic()
    cmd = cfgs["cmd"]
    from emofuse.training.rundir import resolve_folds

    fold = resolve_folds(cmd, records)[0]
    checkpoint = _checkpoint(run_dirs["cmd"], fold.name, cmd.seeds[0])
    picked = _examples(records, fold.test, examples)
    how = "transcribing with the packaged speech recogniser" if transcribe else "with the manifest transcripts"
    say(f"[4/{STEPS}] predicting {len(picked)} held-out utterance(s) of fold {fold.name} ({how})")
    predictions = _predict(checkpoint, picked, transcribe) if picked else []
    seconds["predict"] = time.monotonic() - t0
    seconds["total"] = time.monotonic() - start

    result = QuickstartResult(
        out_dir=out,
        manifest=manifest,
        run_dirs=run_dirs,
        rows=[_row(v, docs[v]) for v in run_dirs],
        report=report,
        predictions=predictions,
        checkpoint=checkpoint,
        seconds=seconds,
        reused=reused,
    )
    atomic_write_json(out / "summary.json", result.to_dict())
    return result


def _finished(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``run_dir`` already holds every finished fold × seed of ``cfg`` (so nothing will train)."""
    return RunDir(run_dir).complete(cfg.seeds)
