"""Real-data benchmark: emofuse's recipes against the simple references, on speakers never seen.

Tasks (``../shared/data``; every number is measured here, by this script):

* ``ravdess8`` / ``ravdess4``: RAVDESS speech, actors 01-20 (``ravdess-dev``), 8 classes and the
  neutral / happy / sad / angry subset; speaker-independent: 5 folds of 4 actors (``speaker-out``,
  ``groups=5``), the next group validates, the other 3 train. UA / WA / macro F1, mean (std) over folds.
* ``meld7``: MELD text, 7 classes. The official train split trains (one dialogue in ten is held out of it
  to validate: ``Dialogue_ID % 10 == 0``), the official dev split is the test set (the official test split is
  not here). Weighted F1 (the MELD convention) and macro F1.

Rows are **references** (scikit-learn ``StandardScaler`` + ``LogisticRegression(C=0.5)`` on frozen pooled
features that emofuse's encoders compute into its feature cache: the "twenty lines" a user would write) and
**recipes** (``emofuse train`` on a config, the same folds). A reference fits on train + validation speakers
(16 actors: it selects nothing); ``fit=train`` rows fit on the training speakers only, the same data a recipe
trains on, to compare a probe with logistic regression on equal terms. Extraction rows time each Whisper input
policy (clips per second over the whole corpus, from an empty cache).

Every row runs in its own subprocess (wall time and peak RSS are that row's own) and writes
``WORK/rows/<row>.json``; a finished row is not run again (``--rerun`` forces it). The driver then writes
``OUT/real_data.json`` and ``OUT/real_data.md``.

Usage::

    python benchmarks/real_data.py                     # every row (hours on a 2-core CPU; resumable)
    python benchmarks/real_data.py --list
    python benchmarks/real_data.py --only 'ravdess8/*' --threads 2
    python benchmarks/real_data.py --setting tiny --data DIR --work W --out O   # smoke test (tiny random encoders)

Skips with a message (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
TASKS = ("ravdess8", "ravdess4", "meld7")
SPEECH_PROTOCOL = ("data.protocol=speaker-out", "data.protocol_options={groups: 5, val_groups: 1}")


@dataclass(frozen=True)
class Features:
    """An encoder and its options, as the feature cache keys them."""

    encoder: str
    options: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()) if k != "output")
        return self.encoder + (f" ({opts})" if opts else "")


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table.

    Attributes:
        name: ``<task>/<id>``.
        kind: ``reference`` / ``sklearn`` (scikit-learn on cached features), ``recipe`` (``emofuse train``) or
            ``extract`` (timing of one input policy).
        features: What the scikit-learn rows read (and extraction rows time).
        select: Which pooled features: ``last`` (mean + std of the last layer), ``all`` (every layer's mean + std
            concatenated), ``layer<i>``, ``each`` (one regression per layer), ``mean`` (mean over tokens / frames).
        fit: ``train+val`` or ``train`` (scikit-learn rows).
        config: Recipe config (relative to the repository).
        overrides: ``--set`` strings of the recipe (after the benchmark's own manifest / protocol / cache ones).
        note: What the row is, for the table.
    """

    name: str
    kind: str
    features: Features | None = None
    select: str = "last"
    fit: str = "train+val"
    config: str | None = None
    overrides: tuple[str, ...] = ()
    note: str = ""

    @property
    def task(self) -> str:
        return self.name.split("/", 1)[0]


# --------------------------------------------------------------------------------------------- rows


def _speech_rows(task: str, tiny: bool) -> list[Row]:
    tw, base = ("tiny-whisper", "tiny-whisper") if tiny else ("openai/whisper-tiny.en", "openai/whisper-base")
    stats = {"output": "layer_stats"}
    unpadded, padded = Features(tw, stats), Features(tw, {**stats, "pad_to": 30})
    rows = [
        Row(f"{task}/lr-tiny-unpadded", "reference", unpadded, note="LR on mean+std of the last layer, unpadded"),
        Row(f"{task}/lr-tiny-pad30", "reference", padded, note="LR on mean+std of the last layer, 30 s padding"),
        Row(f"{task}/lr-tiny-unpadded-all-train", "sklearn", unpadded, "all", "train", note="every layer, unpadded"),
        Row(f"{task}/lr-tiny-pad30-all", "sklearn", padded, "all", note="LR on every layer's mean+std, 30 s"),
        Row(f"{task}/lr-tiny-pad30-all-train", "sklearn", padded, "all", "train", note="same, training actors only"),
    ]
    if not tiny:
        rows += [
            Row(f"{task}/lr-base-unpadded", "reference", Features(base, stats), note="Whisper base, last layer"),
            Row(f"{task}/lr-base-unpadded-all", "sklearn", Features(base, stats), "all", note="Whisper base, all"),
            Row(f"{task}/lr-tiny-pad10-all", "sklearn", Features(tw, {**stats, "pad_to": 10}), "all", note="10 s"),
        ]
    if task == "ravdess8":  # one LR per hidden state: which layers carry the emotion
        rows += [Row(f"{task}/layers-tiny-unpadded", "sklearn", unpadded, "each", note="LR per layer, unpadded"),
                 Row(f"{task}/layers-tiny-pad30", "sklearn", padded, "each", note="LR per layer, 30 s")]  # fmt: skip
        if not tiny:
            rows.append(Row(f"{task}/layers-base-unpadded", "sklearn", Features(base, stats), "each", note="base"))
    labels = () if task == "ravdess8" else ("data.labels=ravdess4",)
    smoke = ("encoders.audio=tiny-whisper", "model.num_layers=3", "trainer.max_epochs=1") if tiny else ()
    rows += [
        Row(
            f"{task}/probe-unpadded",
            "recipe",
            config="configs/evidence/ravdess-probe.yaml",
            overrides=(*labels, "encoders.audio_options={output: layer_stats}", *smoke),
            note="emofuse probe, every layer, unpadded (twin of lr-tiny-unpadded-all-train)",
        ),
        Row(
            f"{task}/probe",
            "recipe",
            config="configs/evidence/ravdess-probe.yaml",
            overrides=labels + smoke,
            note="emofuse probe, every layer, 30 s (ravdess-probe.yaml; twin of lr-tiny-pad30-all-train)",
        ),
    ]
    if not tiny and task == "ravdess4":
        rows.append(
            Row(
                f"{task}/recipe",
                "recipe",
                config="configs/recipes/ravdess-speech.yaml",
                overrides=(*labels, "data.protocol_options={groups: 5, val_groups: 0}",
                           "stages.train.task_options={loss: ce, l2: 0.0045}"),  # 1/(C n_train), 448 clips
                note="the 8-class recipe on the 4 classes (L2 for its 448 training clips)",
            )
        )  # fmt: skip
    if not tiny and task == "ravdess8":
        rows += [
            Row(
                f"{task}/recipe",
                "recipe",
                config="configs/recipes/ravdess-speech.yaml",
                overrides=("data.protocol_options={groups: 5, val_groups: 0}",),  # same test actors; all others train
                note="recommended recipe (configs/recipes/ravdess-speech.yaml): the probe on every Whisper base "
                "layer, fitted on all 16 non-test actors",
            ),
        ]
    return rows


def _text_rows(tiny: bool) -> list[Row]:
    minilm = Features("tiny-bert" if tiny else "all-MiniLM-L6-v2")
    rows = [Row("meld7/lr-minilm-mean", "reference", minilm, "mean", note="LR on mean-pooled MiniLM tokens")]
    if not tiny:
        rows += [
            Row("meld7/lr-mpnet-mean", "sklearn", Features("all-mpnet-base-v2"), "mean", note="mean-pooled MPNet"),
            Row("meld7/recipe", "recipe", config="configs/recipes/meld-text.yaml", note="recommended recipe"),
            Row(
                "meld7/finetune-4epochs",
                "recipe",
                config="configs/recipes/meld-text.yaml",
                overrides=("trainer.max_epochs=4",),
                note="the recipe with 4 epochs (3 with a learning rate above 0)",
            ),
            Row(
                "meld7/finetune-context1-1epoch",
                "recipe",
                config="configs/recipes/meld-text.yaml",
                overrides=("data.text_context=1", "trainer.max_epochs=1"),
                note="the recipe with one earlier turn as context, one epoch",
            ),
        ]
    return rows


SEEDS = (0, 1, 2)
#: MELD 7-class overrides of the paper's MELD configs (4 classes, bert-base-uncased): the packaged MiniLM teacher,
#: the manifest's 7 emotions, MELD's characters in every split, selection on weighted F1, shorter schedules.
MELD_CMD = ("data.labels=meld7", "data.protocol_options={speaker_dependent: true}",
            "trainer.monitor=val/weighted_f1", "trainer.monitor_mode=max")  # fmt: skip


def _cmd_rows(tiny: bool) -> list[Row]:
    """CMD's Table 4 on real data: frozen-teacher rows against distilled students, one row per seed."""
    if tiny:
        return []
    rows = []
    for k in SEEDS:
        rows += [
            Row(f"ravdess8/cmd-wav2-s{k}", "recipe", config="configs/evidence/ravdess-wav2.yaml",
                overrides=(f"seeds=[{k}]",), note=f"CMD Table 4 'wav2': MulT on frozen tiny.en states, seed {k}"),
            Row(f"ravdess8/cmd-wav2-distill-s{k}", "recipe", config="configs/evidence/ravdess-wav-distill.yaml",
                overrides=(f"seeds=[{k}]",), note=f"CMD Table 4 'wav2 + distill': the audio student, seed {k}"),
            Row(f"meld7/cmd-bert-s{k}", "recipe", config="configs/cmd/meld/bert.yaml",
                overrides=(*MELD_CMD, "encoders.text=all-MiniLM-L6-v2", f"seeds=[{k}]", "trainer.max_epochs=12"),
                note=f"CMD Table 4 'bert': MulT on frozen MiniLM token states, seed {k}"),
            Row(f"meld7/cmd-bert-distill-s{k}", "recipe", config="configs/cmd/meld/bert-distill.yaml",
                overrides=(*MELD_CMD, "model.text_teacher=all-MiniLM-L6-v2", f"seeds=[{k}]", "data.batch_size=32",
                           "data.max_batch_samples=null", "optim.warmup_epochs=1",
                           "stages.distill.trainer.max_epochs=5", "stages.finetune.trainer.max_epochs=10"),
                note=f"CMD Table 4 'bert + distill': the text student (MiniLM teacher), seed {k}"),
        ]  # fmt: skip
    rows.append(
        Row("ravdess8/cmd-wav2-distill-paper-s0", "recipe", config="configs/evidence/ravdess-wav-distill.yaml",
            overrides=("seeds=[0]", "model.freeze_embedding=false", "model.dropout=0.1", "data.augment=null"),
            note="the audio student with the paper's settings (front-end trained, dropout 0.1, no augmentation)")
    )  # fmt: skip
    rows += [
        Row(f"ravdess8/cmd-wav2-distill-narrow64-s{k}", "recipe", config="configs/evidence/ravdess-wav-distill.yaml",
            overrides=(f"seeds=[{k}]", "model.front_end_channels=64", "model.freeze_embedding=false"),
            note=f"the audio student on a narrow 64-channel front-end trained from scratch, seed {k}")
        for k in SEEDS
    ]  # fmt: skip
    rows.append(
        Row("ravdess8/cmd-student-k2-probe", "recipe", config="configs/evidence/ravdess-probe.yaml",
            overrides=("encoders.audio_options={num_layers: 2, output: layer_stats}", "model.num_layers=3"),
            note="the probe on a student = the teacher's first 2 layers, unpadded, no distillation")
    )  # fmt: skip
    return rows


def _extract_rows(tiny: bool) -> list[Row]:
    return [Row("ravdess8/extract-speed", "extract", note="Whisper input policies timed on the same clips")]


def all_rows(setting: str) -> list[Row]:
    """Every row of the benchmark, references first."""
    tiny = setting == "tiny"
    speech = _speech_rows("ravdess8", tiny) + _speech_rows("ravdess4", tiny)
    return speech + _text_rows(tiny) + _cmd_rows(tiny) + _extract_rows(tiny)


# ------------------------------------------------------------------------------------------ corpora


def prepare_task(task: str, data: Path, work: Path) -> Path:
    """The task's manifest under ``work`` (made once from ``data``)."""
    from emofuse.data.manifest import write_manifest

    out = work / f"{task}.jsonl"
    if out.is_file():
        return out
    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.startswith("ravdess"):
            from emofuse.data.corpora.acted import prepare_ravdess

            records = prepare_ravdess(data / "ravdess-dev", labels=task, progress=False).records
        else:
            from emofuse.data.corpora.meld import prepare_meld

            official = prepare_meld(data / "meld-csv", labels="meld7", allow_missing_audio=True, progress=False)
            records = []
            for r in official.records:  # official dev = test; one train dialogue in ten validates
                split = "test" if r.split == "dev" else "train"
                if split == "train" and int(str(r.dialogue).rsplit("dia", 1)[-1]) % 10 == 0:
                    split = "dev"
                records.append(r.model_copy(update={"split": split}))
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    write_manifest(records, tmp, overwrite=True)
    os.replace(tmp, out)  # atomic: concurrent rows never see a half-written manifest
    return out


def task_folds(task: str, manifest: Path) -> tuple[list[Any], list[Any], list[str]]:
    """``(records, folds, classes)`` of a task, with the protocol its recipes use."""
    from emofuse.data.labels import get_scheme
    from emofuse.data.manifest import read_manifest
    from emofuse.data.protocols import make_folds

    records = list(read_manifest(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.startswith("ravdess"):
            folds = make_folds(records, "speaker-out", groups=5, val_groups=1)
        else:
            folds = make_folds(records, "official")
    return records, folds, list(get_scheme(task).classes)


# ---------------------------------------------------------------------------------------- features


def cached_store(manifest: Path, feats: Features, cache: Path, progress: bool = True) -> Any:
    """The emofuse feature cache of ``feats`` over the manifest (extracted once, resumably)."""
    from emofuse.encoders import create_encoder
    from emofuse.features import extract_features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = create_encoder(feats.encoder, frozen=True, allow_random=feats.encoder.startswith("tiny"), **feats.options)
    return extract_features(manifest, enc, cache, batch_size=8, progress=progress)


def pooled_matrix(store: Any, ids: list[str], select: str) -> np.ndarray:
    """``(N, F)`` pooled features of ``ids`` from a cache (layer statistics or frames)."""
    from emofuse.layers.pooling import mean_std_pool

    rows = []
    for i in ids:
        x = store.get(i).float()  # (T, D)
        if select == "mean":
            rows.append(x.mean(0).numpy())
            continue
        if x.shape[0] != 1:  # frames: mean + std of the last layer
            rows.append(mean_std_pool(x[None], None)[0].numpy())
            continue
        v = x[0].numpy()  # [mean_0 | std_0 | ... | mean_L | std_L]
        blocks = v.reshape(_num_states(store), -1)
        if select == "last":
            rows.append(blocks[-1])
        elif select == "all":
            rows.append(v)
        elif select.startswith("layer"):
            rows.append(blocks[int(select[5:])])
        else:
            raise ValueError(f"unknown feature selection {select!r}")
    return np.stack(rows)


def _num_states(store: Any) -> int:
    """Hidden states in a Whisper ``layer_stats`` vector: ``output_dim / (2 d_model)``."""
    from emofuse.encoders.whisper import whisper_config

    return int(store.output_dim) // (2 * int(whisper_config(store.name).d_model))


def run_sklearn(row: Row, manifest: Path, cache: Path) -> dict[str, Any]:
    """StandardScaler + LogisticRegression(C=0.5) per fold; metrics by emofuse's metrics module."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emofuse.metrics.functional import classification_metrics

    assert row.features is not None
    records, folds, classes = task_folds(row.task, manifest)
    label = {r.id: r.label for r in records}
    store = cached_store(manifest, row.features, cache, progress=False)
    if row.select == "each":
        layers = []
        for i in range(_num_states(store)):
            sub = run_sklearn(Row(row.name, row.kind, row.features, f"layer{i}", row.fit), manifest, cache)
            layers.append({"layer": i, **_summary(sub)})
        best = max(layers, key=lambda r: r["ua"]["mean"])
        return {"layers": layers, "folds": [], "best_layer": best["layer"]}
    per_fold = []
    for fold in folds:
        train = list(fold.train) + (list(fold.val) if row.fit == "train+val" else [])
        x_tr, x_te = pooled_matrix(store, train, row.select), pooled_matrix(store, list(fold.test), row.select)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
        clf.fit(x_tr, [label[i] for i in train])
        m = classification_metrics([label[i] for i in fold.test], clf.predict(x_te), labels=classes)
        per_fold.append({"fold": fold.name, **{k: m[k] for k in ("ua", "wa", "macro_f1", "weighted_f1")}})
    return {"folds": per_fold, "dim": int(x_tr.shape[1])}


def extract_policies(tiny: bool) -> list[Features]:
    """The Whisper input policies the extraction row times (pooled per-layer statistics)."""
    stats = {"output": "layer_stats"}
    if tiny:
        return [Features("tiny-whisper", stats), Features("tiny-whisper", {**stats, "pad_to": 30})]
    return [
        Features(enc, {**stats, **({} if pad is None else {"pad_to": pad})})
        for enc in ("openai/whisper-tiny.en", "openai/whisper-base")
        for pad in (None, 10, 30)
    ]


def run_extract(row: Row, manifest: Path, work: Path, tiny: bool, clips: int) -> dict[str, Any]:
    """Clips per second of each input policy on the same ``clips`` clips, from empty caches, in one process.

    The policies run in turn on the same clips (the first ``clips`` of the manifest), so their ratios are
    comparable even on a loaded machine; the absolute speeds are this machine's at the time.
    """
    import shutil
    import tempfile

    import soundfile

    from emofuse.data.manifest import read_manifest

    records = read_manifest(manifest)[:clips]
    audio = sum(soundfile.info(str(r.audio_path(manifest.parent))).duration for r in records)
    subset = work / f"extract-{len(records)}.jsonl"
    if not subset.is_file():
        from emofuse.data.manifest import write_manifest

        write_manifest(records, subset, overwrite=True)
    policies = []
    for feats in extract_policies(tiny):
        tmp = Path(tempfile.mkdtemp(dir=work))
        try:
            start = time.perf_counter()
            store = cached_store(subset, feats, tmp, progress=False)
            seconds = time.perf_counter() - start
            policies.append({"features": asdict(feats), "clips": len(store.ids), "extract_s": seconds,
                             "clips_per_s": len(store.ids) / seconds, "x_real_time": audio / seconds})  # fmt: skip
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    base = policies[0]["clips_per_s"]
    for p in policies:
        p["relative"] = p["clips_per_s"] / base
    return {"policies": policies, "audio_s": audio}


def run_recipe(row: Row, manifest: Path, cache: Path, runs: Path, threads: int) -> dict[str, Any]:
    """``emofuse train`` on the row's config with the benchmark's manifest, protocol and cache."""
    from emofuse.config import load_config
    from emofuse.training.runner import run_experiment

    assert row.config is not None
    protocol = SPEECH_PROTOCOL if row.task.startswith("ravdess") else ("data.protocol=official",)
    overrides = [
        f"data.manifest={manifest}",
        *protocol,
        f"encoders.cache_dir={cache}",
        "data.folds=null",
        *row.overrides,
    ]
    cfg = load_config(ROOT / row.config, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_experiment(cfg, runs / row.name.replace("/", "--"), overrides, progress=False, echo=lambda s: None)
    assert doc is not None
    per_fold = []
    for run in doc["runs"]:
        m = run["metrics"]
        per_fold.append({"fold": run["fold"], "seed": run["seed"], **{k: m[k] for k in ("ua", "wa", "macro_f1",
                                                                                          "weighted_f1")}})  # fmt: skip
    return {"folds": per_fold, "run_dir": str(runs / row.name.replace("/", "--"))}


# ------------------------------------------------------------------------------------------- driver


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    folds = result.get("folds") or []
    out: dict[str, Any] = {}
    for k in ("ua", "wa", "macro_f1", "weighted_f1"):
        vals = [f[k] for f in folds]
        if vals:
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            out[k] = {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}
    return out


def run_row(row: Row, args: argparse.Namespace) -> dict[str, Any]:
    """Run one row in this process; returns its result with wall time and peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    work, data = Path(args.work), Path(args.data)
    manifest = prepare_task(row.task, data, work)
    cache = work / "features"
    start = time.perf_counter()
    if row.kind in ("reference", "sklearn"):
        result = run_sklearn(row, manifest, cache)
    elif row.kind == "extract":
        result = run_extract(row, manifest, work, args.setting == "tiny", args.extract_clips)
    else:
        result = run_recipe(row, manifest, cache, work / "runs", args.threads)
    result.update(
        row=asdict(row),
        summary=_summary(result),
        wall_s=time.perf_counter() - start,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        threads=args.threads,
    )
    return result


def _fmt(s: dict[str, Any], key: str) -> str:
    if key not in s:
        return "–"
    return f"{s[key]['mean']:.3f}" + (f" ({s[key]['std']:.3f})" if s[key].get("n", 2) > 1 else "")


def markdown(results: list[dict[str, Any]]) -> str:
    """The tables: one per task, then the extraction speeds."""
    lines = []
    for task in TASKS:
        rows = [r for r in results if r["row"]["name"].startswith(task + "/") and r["row"]["kind"] != "extract"]
        rows = [r for r in rows if not r.get("layers")]
        if not rows:
            continue
        keys = ("weighted_f1", "macro_f1") if task == "meld7" else ("ua", "wa", "macro_f1")
        lines += [f"### {task}", "", "| row | kind | " + " | ".join(keys) + " | wall | peak RSS |",
                  "|---|---|" + "---:|" * (len(keys) + 2)]  # fmt: skip
        for r in rows:
            row = r["row"]
            what = row["note"] + (f" — {Features(**row['features']).label()}" if row["features"] else "")
            kind = row["kind"] + (f", fit {row['fit']}" if row["kind"] != "recipe" else "")
            vals = " | ".join(_fmt(r["summary"], k) for k in keys)
            lines.append(
                f"| `{row['name']}`: {what} | {kind} | {vals} | {r['wall_s']:.0f} s | {r['peak_rss_mb']:.0f} MB |"
            )
        lines.append("")
    each = [r for r in results if r.get("layers")]
    if each:
        depth = max(len(r["layers"]) for r in each)
        lines += ["### Which layer: LR on one hidden state's mean + std (UA, 8 classes; 0 = input embedding)", "",
                  "| features | " + " | ".join(str(i) for i in range(depth)) + " |",
                  "|---|" + "---:|" * depth]  # fmt: skip
        for r in each:
            cells = [f"{x['ua']['mean']:.3f}" for x in r["layers"]] + [""] * (depth - len(r["layers"]))
            lines.append(f"| {Features(**r['row']['features']).label()} | " + " | ".join(cells) + " |")
        lines.append("")
    for r in (r for r in results if r["row"]["kind"] == "extract"):
        lines += [f"### Whisper input policy: extraction speed ({r['policies'][0]['clips']} clips, "
                  f"{r['audio_s']:.0f} s of audio, pooled per-layer statistics)", "",
                  "| encoder (policy) | clips/s | x real time | relative |", "|---|---:|---:|---:|"]  # fmt: skip
        for p in r["policies"]:
            label = Features(**p["features"]).label()
            lines.append(f"| {label} | {p['clips_per_s']:.2f} | {p['x_real_time']:.1f} | {p['relative']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding ravdess-dev/ and meld-csv/")
    p.add_argument("--work", default=str(ROOT / ".emofuse-cache" / "bench"), help="manifests, caches, runs, rows")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where real_data.json / .md go")
    p.add_argument("--only", action="append", default=[], help="row name patterns (fnmatch), repeatable")
    p.add_argument("--setting", choices=("real", "tiny"), default="real", help="tiny: random test encoders (CI)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per row")
    p.add_argument("--rerun", action="store_true", help="run finished rows again")
    p.add_argument("--extract-clips", type=int, default=96, help="clips the extraction-speed row times")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    args = p.parse_args(argv)
    rows = [r for r in all_rows(args.setting) if not args.only or any(fnmatch.fnmatch(r.name, o) for o in args.only)]
    if args.list:
        for r in rows:
            print(f"{r.name:40s} {r.kind:9s} {r.note}")
        return 0
    data = Path(args.data)
    if not (data / "ravdess-dev").is_dir() and not (data / "meld-csv").is_dir():
        print(f"real_data: skipped, no ravdess-dev/ or meld-csv/ under {data} (the real data is not on this machine)")
        return 0
    work = Path(args.work)
    done = work / "rows"
    done.mkdir(parents=True, exist_ok=True)
    if args.row:
        row = next(r for r in all_rows(args.setting) if r.name == args.row)
        result = run_row(row, args)
        (done / (row.name.replace("/", "--") + ".json")).write_text(json.dumps(result, indent=1))
        return 0
    results = []
    for row in rows:
        if (row.task.startswith("ravdess") and not (data / "ravdess-dev").is_dir()) or (
            row.task == "meld7" and not (data / "meld-csv").is_dir()
        ):
            print(f"{row.name}: skipped (its data is absent)")
            continue
        path = done / (row.name.replace("/", "--") + ".json")
        if args.rerun or not path.is_file():
            cmd = [sys.executable, __file__, "--row", row.name, "--data", str(data), "--work", str(work),
                   "--setting", args.setting, "--threads", str(args.threads),
                   "--extract-clips", str(args.extract_clips)]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
            print(f"{row.name}: running ...", flush=True)
            proc = subprocess.run(cmd, env=env)
            if proc.returncode != 0 or not path.is_file():
                print(f"{row.name}: FAILED (exit {proc.returncode})", flush=True)
                continue
        result = json.loads(path.read_text())
        results.append(result)
        s = result["summary"]
        speeds = ", ".join(f"{p['clips_per_s']:.2f}" for p in result.get("policies", []))
        shown = ", ".join(f"{k} {_fmt(s, k)}" for k in s) or f"clips/s {speeds}"
        if result.get("layers"):
            shown = "UA per layer " + ", ".join(f"{x['ua']['mean']:.3f}" for x in result["layers"])
        print(f"{row.name}: {shown}  [{result['wall_s']:.0f} s, {result['peak_rss_mb']:.0f} MB]", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"setting": args.setting, "threads": args.threads, "rows": results}
    (out / "real_data.json").write_text(json.dumps(doc, indent=1))
    (out / "real_data.md").write_text(markdown(results))
    print(f"wrote {out / 'real_data.json'} and {out / 'real_data.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
