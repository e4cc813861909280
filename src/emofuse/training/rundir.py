"""The experiment's inputs: transcripts, classes, folds, environment record (the run folder: :mod:`emofuse.runs`)."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emofuse.config.schema import DataConfig, ExperimentConfig
from emofuse.data.labels import get_scheme
from emofuse.data.manifest import Utterance
from emofuse.data.protocols import Fold, make_folds
from emofuse.runs import RUNTIME_KEYS, RunDirError, claim_run_dir, config_differences

__all__ = [
    "RUNTIME_KEYS",
    "RunDirError",
    "claim_run_dir",
    "config_differences",
    "resolve_classes",
    "resolve_folds",
    "run_env",
    "select_text",
    "text_inputs",
]

logger = logging.getLogger(__name__)


def select_text(records: Sequence[Utterance], field: str, source: object = "manifest") -> list[Utterance]:
    """The records with ``text`` replaced by the transcript in ``field`` (``data.text_field``).

    ``field`` is a record field or a key of ``extra`` (``asr_text``, as ``emofuse transcribe`` writes it).
    ``"text"`` returns the records unchanged.

    Raises:
        ValueError: A record has no (or a non-string) value in ``field``; names the first few records.
    """
    if field == "text":
        return list(records)
    out, missing = [], []
    for rec in records:
        value = getattr(rec, field, None) if field in Utterance.model_fields else rec.extra.get(field)
        if not isinstance(value, str):
            missing.append(rec.id)
            continue
        out.append(rec.model_copy(update={"text": value}))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        hint = " (run `emofuse transcribe` to add asr_text)" if field == "asr_text" else ""
        raise ValueError(
            f"{source}: data.text_field={field!r}, but {len(missing)} record(s) have no text there: {shown}{hint}"
        )
    return out


def text_inputs(records: Sequence[Utterance], data: DataConfig, source: object = "manifest") -> list[Utterance]:
    """The records' text inputs: ``data.text_field`` (:func:`select_text`), then ``data.text_context`` earlier turns.

    Raises:
        ValueError: A record has no text in ``data.text_field`` (names it).
    """
    from emofuse.data.context import add_dialogue_context

    records = select_text(records, data.text_field, source)
    return add_dialogue_context(records, data.text_context, data.text_context_speakers)


def resolve_classes(cfg: ExperimentConfig, records: list[Utterance]) -> tuple[list[str], list[Utterance]]:
    """Class order and the records kept: the scheme's classes (``data.labels``), else the manifest's.

    Without a scheme the order comes from ``<manifest>.report.json`` (written by ``emofuse prepare``)
    when it lists the labels, else the sorted labels. Records with other labels are dropped (logged).
    """
    found = sorted({r.label for r in records if r.label is not None})
    if cfg.data.labels is not None:
        classes = list(get_scheme(cfg.data.labels).classes)
    else:
        classes = found
        manifest = Path(cfg.data.manifest) if cfg.data.manifest is not None else None
        if manifest is not None:
            report = manifest.with_name(manifest.name.split(".")[0] + ".report.json")
            try:
                listed = json.loads(report.read_text(encoding="utf-8")).get("classes") or []
            except (OSError, ValueError):
                listed = []
            if listed and set(found) <= set(listed):
                classes = [str(c) for c in listed]
    kept = [r for r in records if r.label is None or r.label in classes]
    dropped = len(records) - len(kept)
    if dropped:
        logger.warning("dropped %d records whose label is not one of %s", dropped, classes)
    if not classes:
        if cfg.data.target is not None:  # regression on a continuous target: no classes needed
            return [], list(records)
        raise ValueError(f"{cfg.data.manifest}: no labelled records")
    return classes, kept


def resolve_folds(cfg: ExperimentConfig, records: list[Utterance]) -> list[Fold]:
    """The protocol's folds, restricted to ``data.folds`` (unknown names are an error).

    With a regression target (``data.target``) and unlabelled records, the protocols see each record's
    target binarised at 0 (``low`` / ``high``) as its label, so stratified protocols stratify by it;
    records with neither a label nor a target are left out (the protocol logs them).
    """
    if cfg.data.target is not None:
        from emofuse.pipeline.dataset import target_value

        target = cfg.data.target
        records = [
            r
            if r.label is not None or (t := target_value(r, target)) is None
            else r.model_copy(update={"label": "high" if t >= 0 else "low"})
            for r in records
        ]
    folds = make_folds(records, cfg.data.protocol, **cfg.data.protocol_options)
    if cfg.data.folds is not None:
        names = [f.name for f in folds]
        unknown = [f for f in cfg.data.folds if f not in names]
        if unknown:
            raise ValueError(f"data.folds names unknown folds {unknown}; protocol {cfg.data.protocol!r} has {names}")
        folds = [f for f in folds if f.name in cfg.data.folds]
    return folds


def run_env(
    cfg: ExperimentConfig, fold: Fold, seed: int, provenance: dict[str, Any], overrides: Sequence[str]
) -> dict[str, Any]:
    """``env.json``: fold, seed, sizes, overrides, library versions, platform, devices, encoder provenance."""
    import lightning
    import numpy

    import emofuse

    return {
        "fold": fold.name,
        "seed": seed,
        "speaker_dependent": fold.speaker_dependent,
        "sizes": {"train": len(fold.train), "val": len(fold.val), "test": len(fold.test)},
        "overrides": list(overrides),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "emofuse": emofuse.__version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "numpy": numpy.__version__,
        },
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "devices": {
            "accelerator": cfg.trainer.accelerator,
            "devices": cfg.trainer.devices,
            "strategy": cfg.trainer.strategy,
        },
        "encoders": provenance,
    }
