"""Scoring: predictions of a model on a dataset, their metrics, and ``emofuse evaluate`` on a trained run.

:func:`evaluate_run` rebuilds every finished run's final checkpoint of ``RUN_DIR`` (no YAML needed for
the model; the run's ``config.yaml`` only says how to build the inputs), predicts another prepared
manifest with the same label set, and writes per-run metrics plus their mean (std) to ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from emofuse.config.schema import DataConfig, ExperimentConfig
from emofuse.data.manifest import Utterance, read_manifest
from emofuse.losses.classification import IGNORE_INDEX
from emofuse.metrics import aggregate
from emofuse.metrics.scoring import score_classes, score_values
from emofuse.metrics.tables import f1_conventions, headline_metric
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.models.checkpoint import load_checkpoint
from emofuse.runs import Run, RunDir
from emofuse.training.components import Components, DefaultComponents
from emofuse.training.datamodule import make_loader
from emofuse.training.rundir import text_inputs
from emofuse.utils.io import atomic_write, atomic_write_json
from emofuse.utils.tensors import to_device

__all__ = [
    "evaluate_run",
    "finished_runs",
    "open_run",
    "predict",
    "predict_values",
    "resolve_rescale",
    "score",
    "score_regression",
    "write_predictions",
    "write_regression_predictions",
]

logger = logging.getLogger(__name__)


def predict(
    model: EmotionModel,
    dataset: Dataset,
    data: DataConfig,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Class probabilities of every item, in id order.

    Returns:
        ``{"ids": [...], "labels": LongTensor (N,) | None, "probs": FloatTensor (N, C)}``.

    Raises:
        ValueError: The model returns neither probabilities nor logits, or NaN / infinite ones (the items named).
    """

    def probs_of(out: ModelOutput) -> Tensor:
        if out.probs is not None:
            return out.probs.float()
        if out.logits is not None:
            return out.logits.float().softmax(-1)
        raise ValueError(f"model {model.model_name!r} returned neither probs nor logits: nothing to score")

    ids, probs, labels = _collect(model, dataset, data, batch_size, device, probs_of, "labels")
    return {"ids": ids, "labels": labels, "probs": probs if probs is not None else torch.empty(0, 0)}


def _collect(
    model: EmotionModel,
    dataset: Dataset,
    data: DataConfig,
    batch_size: int | None,
    device: str | torch.device,
    output: Callable[[ModelOutput], Tensor],
    truth_key: str,
) -> tuple[list[str], Tensor | None, Tensor | None]:
    """Run ``model`` over ``dataset`` in inference mode; ``output(out)`` and ``batch[truth_key]``, in id order."""
    device = torch.device(device)
    model = model.to(device).eval()
    ids: list[str] = []
    outs: list[Tensor] = []
    truths: list[Tensor] = []
    with torch.inference_mode():
        for batch in make_loader(dataset, data, shuffle=False, batch_size=batch_size):
            out = output(model(to_device(batch, device))).cpu()
            rows = ~torch.isfinite(out.reshape(len(out), -1)).all(-1)
            if bool(rows.any()):  # NaN is a failure, never a label or a score
                bad = [str(batch["ids"][i]) for i in rows.nonzero().flatten().tolist()]
                raise ValueError(
                    f"model {model.model_name!r} gave NaN or infinite outputs for {len(bad)} item(s) "
                    f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"
                )
            outs.append(out)
            ids += list(batch["ids"])
            if truth_key in batch:
                truths.append(batch[truth_key].cpu())
    order = sorted(range(len(ids)), key=ids.__getitem__)
    all_outs = torch.cat(outs)[order] if outs else None
    all_truths = torch.cat(truths)[order] if truths and len(truths) == len(outs) else None
    return [ids[i] for i in order], all_outs, all_truths


def predict_values(
    model: EmotionModel,
    dataset: Dataset,
    data: DataConfig,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Continuous predictions of a regression model (``ModelOutput.values``, else ``logits``), in id order.

    Returns:
        ``{"ids": [...], "targets": FloatTensor (N, K) | None (NaN = no target), "preds": FloatTensor (N, K)}``.
    """

    def values_of(out: ModelOutput) -> Tensor:
        v = out.values if out.values is not None else out.logits
        if v is None:
            raise ValueError(f"model {model.model_name!r} returned neither values nor logits: nothing to score")
        v = v.float()
        return v[:, None] if v.ndim == 1 else v

    ids, preds, targets = _collect(model, dataset, data, batch_size, device, values_of, "targets")
    if targets is not None:
        targets = targets.float()
        targets = targets[:, None] if targets.ndim == 1 else targets
    return {"ids": ids, "targets": targets, "preds": preds if preds is not None else torch.empty(0, 1)}


def score_regression(
    predictions: Mapping[str, Any], threshold: float = 0.0, rescale_to: tuple[float, float] | None = None
) -> dict[str, Any]:
    """:func:`~emofuse.metrics.regression_metrics` (PCC, CCC, MAE, UAR / WAR) of the first target column.

    Rows without a target (NaN) are left out. With several targets, ``per_target`` holds the metrics of each. The
    same computation scores validation epochs (:mod:`emofuse.metrics.scoring`).
    """
    targets, preds = predictions["targets"], predictions["preds"]
    if targets is None:
        return {}
    per_target = score_values(targets.numpy(), preds.numpy(), threshold, rescale_to)
    metrics = dict(per_target[0]) if per_target else {}
    if len(per_target) > 1:
        metrics["per_target"] = per_target
    return metrics


def resolve_rescale(option: Any, train: Sequence[Utterance], target: str | None) -> tuple[float, float] | None:
    """The ``rescale_to`` range of a regress stage: ``(lo, hi)`` as given, or ``"train"`` → the train targets' range.

    Raises:
        ValueError: ``"train"`` without a target or without any training target.
    """
    if option is None:
        return None
    if option != "train":
        return float(option[0]), float(option[1])
    from emofuse.pipeline.dataset import target_value

    values = [v for r in train if target is not None and (v := target_value(r, target)) is not None]
    if not values:
        raise ValueError("rescale_to='train' needs training records with a target (data.target)")
    return min(values), max(values)


def write_regression_predictions(path: str | Path, predictions: Mapping[str, Any]) -> Path:
    """``predictions.jsonl`` of a regression run: ``{"id", "target", "pred"}`` (lists when K > 1)."""
    lines = []
    targets = predictions["targets"]
    for i, utt in enumerate(predictions["ids"]):
        pred = [round(float(x), 6) for x in predictions["preds"][i]]
        tgt = None
        if targets is not None:
            tgt = [None if not torch.isfinite(x) else round(float(x), 6) for x in targets[i]]
        one = len(pred) == 1
        row = {"id": utt, "target": tgt[0] if one and tgt else tgt, "pred": pred[0] if one else pred}
        lines.append(json.dumps(row))
    return atomic_write(path, "".join(line + "\n" for line in lines))


def score(predictions: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """``classification_metrics`` (WA, UA, F1s, confusion, ...) plus ``mult_f1`` of labelled predictions.

    The same computation scores validation epochs (:func:`emofuse.metrics.scoring.score_classes`).
    """
    labels = predictions["labels"]
    if labels is None:
        return {}
    keep = labels != IGNORE_INDEX
    return score_classes(labels[keep].tolist(), predictions["probs"][keep].numpy(), classes)


def write_predictions(path: str | Path, predictions: Mapping[str, Any], classes: Sequence[str]) -> Path:
    """``predictions.jsonl``: ``{"id", "label", "pred", "probs"}`` per line (``probs`` in class order)."""
    lines = []
    labels = predictions["labels"]
    for i, utt in enumerate(predictions["ids"]):
        row = predictions["probs"][i]
        lab = None if labels is None or int(labels[i]) == IGNORE_INDEX else classes[int(labels[i])]
        pred = classes[int(row.argmax())]
        lines.append(json.dumps({"id": utt, "label": lab, "pred": pred, "probs": [round(float(x), 6) for x in row]}))
    return atomic_write(path, "".join(line + "\n" for line in lines))


def open_run(run_dir: str | Path) -> tuple[ExperimentConfig, list[tuple[str, int, Path]]]:
    """The resolved config of a training run folder and its :func:`finished_runs`.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no finished runs.
    """
    cfg, runs = RunDir(run_dir).open()
    return cfg, [_entry(r) for r in runs]


def finished_runs(run_dir: str | Path) -> list[tuple[str, int, Path]]:
    """``(fold, seed, checkpoint)`` of every run of ``run_dir`` with a ``DONE`` marker."""
    return [_entry(r) for r in RunDir(run_dir).finished()]


def _entry(run: Run) -> tuple[str, int, Path]:
    return run.fold, run.seed, run.path / str((run.done_info() or {}).get("checkpoint", ""))


def _device(cfg: ExperimentConfig) -> str:
    return "cuda" if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def evaluate_run(
    run_dir: str | Path,
    manifest: str | Path,
    out: str | Path | None = None,
    components: Components | None = None,
) -> dict[str, Any]:
    """Score every finished run of ``run_dir`` on another prepared manifest with the same labels.

    Args:
        run_dir: A folder written by ``emofuse train``.
        manifest: Manifest to score (its labelled records are used).
        out: ``metrics.json`` to write (``None``: don't write).
        components: How to build the inputs (default: the library's).

    Returns:
        ``{"run_dir", "manifest", "classes", "runs": [{"fold", "seed", "checkpoint", "metrics"}], "aggregate"}``.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no finished runs.
        ValueError: The manifest's labels are not the model's label set (both sets are named).
    """
    run_dir = Path(run_dir)
    cfg, runs = open_run(run_dir)
    stage = cfg.resolved_stages()[-1]
    from emofuse.tasks import get_task

    regress = get_task(stage.task, stage.name).target == "regression"
    records: list[Utterance] = [r for r in read_manifest(manifest) if regress or r.label is not None]
    records = text_inputs(records, cfg.data, manifest)
    if not records:
        raise ValueError(f"{manifest}: no labelled records to score")
    components = components or DefaultComponents()
    results: list[dict[str, Any]] = []
    classes: list[str] = []
    found = sorted({r.label for r in records if r.label is not None})
    for fold, seed, ckpt in runs:
        model, meta = load_checkpoint(ckpt)
        classes = [str(c) for c in meta.get("classes") or []]
        unknown = sorted(set(found) - set(classes))
        if unknown and not regress:
            raise ValueError(
                f"{manifest} has labels {found}, but the model of {ckpt} was trained on {classes} "
                f"(unknown here: {unknown}); prepare it with the same label scheme"
            )
        missing = sorted(set(classes) - set(found))
        if missing:
            logger.warning("%s has no utterances of classes %s (model classes: %s)", manifest, missing, classes)
        dataset = components.dataset(cfg, stage, model, records, classes, "test")
        if regress:
            values = predict_values(model, dataset, cfg.data, cfg.eval.batch_size, _device(cfg))
            opts = stage.task_options
            rescale = opts.get("rescale_to")
            if rescale == "train":  # the training split of this run's fold, as at training time
                from emofuse.training.rundir import resolve_folds

                assert cfg.data.manifest is not None
                own = read_manifest(cfg.data.manifest)
                fold_of = {f.name: f for f in resolve_folds(cfg, own)}
                by_id = {r.id: r for r in own}
                rescale = resolve_rescale("train", [by_id[i] for i in fold_of[fold].train], cfg.data.target)
            else:
                rescale = resolve_rescale(rescale, [], cfg.data.target)
            run_metrics = score_regression(values, float(opts.get("threshold", 0.0)), rescale)
        else:
            try:
                preds = predict(model, dataset, cfg.data, cfg.eval.batch_size, _device(cfg))
            except ValueError as e:
                raise ValueError(f"{ckpt}: {e}") from None
            run_metrics = score(preds, classes)
        results.append({"fold": fold, "seed": seed, "checkpoint": str(ckpt), "metrics": run_metrics})
    metrics = [r["metrics"] for r in results]
    doc = {
        "run_dir": str(run_dir),
        "manifest": str(manifest),
        "classes": classes,
        "n_runs": len(results),
        "f1_conventions": f1_conventions(cfg.model.name),
        "headline": headline_metric(cfg.model.name, cfg.data.labels),
        "runs": results,
        "aggregate": aggregate(metrics),
    }
    if out is not None:
        atomic_write_json(out, doc)
    return doc
