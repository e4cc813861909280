"""Missing-modality evaluation of trained runs (Rajan 2022, Tables 4.4 / 4.5 and §4.4.2).

:func:`evaluate_missing` rebuilds every finished run of ``RUN_DIR`` and scores its own fold's test split (or
another manifest) once per *condition*, a set of dropped modalities, with the modalities

* ``zero``: fed as zeros (masks kept, the thesis' protocol),
* ``absent``: marked absent (zeros, masks False, ``present`` False), or
* ``knn``: imputed from the ``K`` nearest training samples (:class:`~emofuse.pipeline.imputation.KNNImputer`
  fitted on the run's training split): on the model's per-modality vectors at the input of its fusion when it
  accepts ``batch["latent_override"]`` (``tri_fusion_intra``: the thesis' procedure), else on time-averaged
  input features.

It writes ``missing.json`` and ``missing.md``: one row per condition with ● present / ○ missing per modality and
WA, UA, macro F1 as mean (std) over runs. The ``full`` condition (nothing dropped) is always scored first.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emofuse.config.schema import ExperimentConfig
from emofuse.data.manifest import Utterance, read_manifest
from emofuse.metrics import aggregate, format_mean_std
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.models.checkpoint import load_checkpoint
from emofuse.pipeline.imputation import KNNImputer, impute_inputs, time_averages
from emofuse.pipeline.missing import drop_modalities
from emofuse.runs import RunDir
from emofuse.training.components import Components, DefaultComponents
from emofuse.training.datamodule import make_loader
from emofuse.training.evaluate import open_run, predict, score
from emofuse.training.rundir import resolve_classes, resolve_folds
from emofuse.utils.io import atomic_write, atomic_write_json
from emofuse.utils.tensors import to_device

__all__ = [
    "MISSING_MODES",
    "all_conditions",
    "compare_missing",
    "evaluate_missing",
    "knn_refusal",
    "missing_markdown",
    "supports_latent_imputation",
]

logger = logging.getLogger(__name__)
MISSING_MODES = ("zero", "absent", "knn")


def supports_latent_imputation(model: EmotionModel) -> bool:
    """Whether ``model`` takes ``batch["latent_override"]`` (per-modality fusion-input vectors in ``pooled``)."""
    return getattr(model, "attention", None) == "intra" and hasattr(model, "encode")


def all_conditions(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty proper subset of ``modalities`` to drop, one modality missing first (Table 4.4's rows)."""
    mods = tuple(modalities)
    return [c for r in range(len(mods) - 1, 0, -1) for c in reversed(list(itertools.combinations(mods, r)))]


class _Transformed(EmotionModel):
    """``model`` behind a batch transform (so :func:`~emofuse.training.evaluate.predict` can score it)."""

    def __init__(self, model: EmotionModel, transform: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        super().__init__()
        self.inner = model
        self.transform = transform
        self.model_name = model.model_name

    def forward(self, batch: dict[str, Any]) -> ModelOutput:  # noqa: D102
        return self.inner(self.transform(batch))


def _modality_vectors(
    model: EmotionModel, batch: dict[str, Any], modalities: Sequence[str], latent: bool
) -> dict[str, Tensor]:
    if latent:
        out = model(batch)
        return {m: out.pooled[m] for m in modalities}
    return time_averages(batch, modalities)


def _present(batch: dict[str, Any], modality: str) -> Tensor:
    feats = batch.get("features") or {}
    mask = feats.get(f"{modality}_mask")
    if modality not in feats:
        raise KeyError(f"KNN imputation needs batch['features'][{modality!r}]")
    p = mask.bool().any(1) if mask is not None else torch.ones(feats[modality].shape[0], dtype=torch.bool)
    given = (batch.get("present") or {}).get(modality)
    return p & given.bool() if given is not None else p


def knn_refusal(cfg: ExperimentConfig, model: EmotionModel) -> str | None:
    """Why ``--drop-mode knn`` cannot score this run (``None``: it can).

    KNN imputes vectors: the model's fusion-input vectors (:func:`supports_latent_imputation`) or the time
    averages of frozen feature inputs (``encoders.inputs: features``, ``encoders.files``). A modality the model
    reads raw (CMD's waveform and word pieces) has no vector to impute.
    """
    if supports_latent_imputation(model):
        return None
    raw = [
        m
        for m in model.modalities
        if m in ("audio", "text") and cfg.encoders.inputs == "raw" and m not in cfg.encoders.files
    ]
    if not raw:
        return None
    return (
        f"--drop-mode knn imputes feature vectors, but model {model.model_name!r} reads raw {' and '.join(raw)} "
        "(encoders.inputs: raw), which has none to impute; KNN works for frozen-feature models (encoders.inputs: "
        "features or encoders.files: MulT, tri_fusion, CM-RoBERTa, SEW, probes); score this run with --drop-mode "
        "zero or absent"
    )


def _data_modalities(model: EmotionModel, batch: dict[str, Any]) -> list[str]:
    """The model's modalities the batch has feature inputs for (one the data never has is left out)."""
    feats = batch.get("features") or {}
    return [m for m in model.modalities if m in feats]


def drop_available(batch: dict[str, Any], drop: Sequence[str], mode: str) -> dict[str, Any]:
    """:func:`~emofuse.pipeline.missing.drop_modalities` of the modalities the batch has inputs for.

    A modality the data never has (e.g. no video files at all) is already missing: nothing to drop.
    """
    feats = batch.get("features") or {}
    have = [m for m in drop if m in feats or isinstance(batch.get(m), dict)]
    return drop_modalities(batch, have, mode)  # type: ignore[arg-type]


def fit_imputer(
    model: EmotionModel,
    dataset: Any,
    cfg: ExperimentConfig,
    k: int,
    device: str | torch.device = "cpu",
) -> tuple[KNNImputer, bool]:
    """A :class:`KNNImputer` fitted on ``dataset`` (training split) samples that have every modality.

    Only modalities the data has are used ("every modality" = every modality with feature inputs).

    Returns:
        The imputer and whether it works on the model's latent vectors (else on time-averaged inputs).
    """
    latent = supports_latent_imputation(model)
    model = model.to(device).eval()
    rows: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for batch in make_loader(dataset, cfg.data, shuffle=False, batch_size=cfg.eval.batch_size):
            batch = to_device(batch, torch.device(device))
            mods = _data_modalities(model, batch)
            if not mods:
                raise KeyError(f"KNN imputation needs batch['features'][m] for one of {list(model.modalities)}")
            keep = torch.stack([_present(batch, m) for m in mods]).all(0)  # (B,)
            if not bool(keep.any()):
                continue
            vecs = _modality_vectors(model, batch, mods, latent)
            for m in mods:
                rows.setdefault(m, []).append(vecs[m][keep].float().cpu().numpy())
    if not rows:
        raise ValueError("KNN imputation: no training sample has every modality present")
    return KNNImputer(k).fit({m: np.concatenate(v) for m, v in rows.items()}), latent


def _knn_transform(
    model: EmotionModel, imputer: KNNImputer, latent: bool, drop: Sequence[str]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Drop ``drop`` (absent), then impute every modality a sample lacks from the ones it has.

    Rows are grouped by which modalities they have (a sample may also lack one in the data itself).
    """

    def transform(batch: dict[str, Any]) -> dict[str, Any]:
        dropped = drop_available(batch, drop, "absent")
        cands = [m for m in _data_modalities(model, dropped) if m in imputer.train]
        present = {m: _present(dropped, m) for m in cands}  # (B,) each
        vecs = _modality_vectors(model, dropped, cands, latent)
        filled = {m: vecs[m].clone() for m in cands}
        rows_of: dict[str, Tensor] = {m: torch.zeros_like(present[m]) for m in cands}
        pattern = torch.stack([present[m] for m in cands], 1)  # (B, M)
        for pat in torch.unique(pattern, dim=0):
            have = [m for m, p in zip(cands, pat.tolist(), strict=True) if p]
            miss = [m for m, p in zip(cands, pat.tolist(), strict=True) if not p]
            if not have or not miss:
                continue
            idx = (pattern == pat).all(1)  # (B,)
            values = imputer.impute({m: vecs[m][idx].float() for m in have}, miss)
            for m in miss:
                filled[m][idx] = torch.as_tensor(values[m], dtype=filled[m].dtype, device=filled[m].device)
                rows_of[m] = rows_of[m] | idx
        imputed = [m for m in cands if bool(rows_of[m].any())]
        if latent:
            return {**dropped, "latent_override": {m: filled[m] for m in imputed}}
        out = dropped
        for m in imputed:
            out = impute_inputs(out, {m: filled[m]}, rows_of[m])
        return out

    return transform


def _never_in_data(model: EmotionModel, dataset: Any) -> set[str]:
    """The model's modalities a (collated) first item of ``dataset`` has no input for."""
    try:
        batch = dataset.collate([dataset[0]])
    except (IndexError, KeyError, TypeError, AttributeError):
        return set()
    feats = batch.get("features") or {}
    return {m for m in model.modalities if m not in feats and not isinstance(batch.get(m), dict)}


def evaluate_missing(
    run_dir: str | Path,
    conditions: Sequence[Sequence[str]] | None = None,
    mode: str = "zero",
    k: int | Sequence[int] = 10,
    manifest: str | Path | None = None,
    out_dir: str | Path | None = None,
    components: Components | None = None,
) -> dict[str, Any]:
    """Score every finished run of ``run_dir`` with modalities missing.

    Args:
        run_dir: A folder written by ``emofuse train``.
        conditions: Modality sets to drop, e.g. ``[["video"], ["video", "audio"]]``; ``None``: every non-empty
            proper subset of the model's modalities (Table 4.4's six rows for three modalities).
        mode: ``zero``, ``absent`` or ``knn``.
        k: Neighbours for ``knn`` (one value, or several: one row per ``K``).
        manifest: Score this manifest's labelled records instead of each run's own fold test split.
        out_dir: Write ``missing.json`` and ``missing.md`` there (``None``: don't write).
        components: How to build the inputs (default: the library's).

    Returns:
        ``{"run_dir", "mode", "modalities", "classes", "conditions": [{"name", "drop", "mode", "k", "runs":
        [{"fold", "seed", "metrics"}], "aggregate"}]}``.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no finished runs.
        ValueError: Bad mode, an unknown modality in a condition, a condition that drops every modality, or
            ``knn`` for a model that reads raw inputs (:func:`knn_refusal`).
    """
    if mode not in MISSING_MODES:
        raise ValueError(f"missing-modality mode must be one of {MISSING_MODES}, got {mode!r}")
    ks = [int(k)] if isinstance(k, int) else [int(x) for x in k]
    run_dir = Path(run_dir)
    cfg, runs = open_run(run_dir)
    cfg_path = RunDir(run_dir).config_file
    if cfg.data.manifest is None:
        raise ValueError(f"{cfg_path}: data.manifest is not set")
    records = read_manifest(cfg.data.manifest)
    classes, records = resolve_classes(cfg, records)
    by_id = {r.id: r for r in records}
    folds = {f.name: f for f in resolve_folds(cfg, records)}
    other: list[Utterance] | None = None
    if manifest is not None:
        other = [r for r in read_manifest(manifest) if r.label is not None]
        if not other:
            raise ValueError(f"{manifest}: no labelled records to score")
    components = components or DefaultComponents(progress=False)
    stage = cfg.resolved_stages()[-1]
    device = "cuda" if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"

    modalities: list[str] = []
    never: set[str] = set()  # modalities no scored batch has inputs for (e.g. no video files at all)
    rows: dict[str, dict[str, Any]] = {}
    for fold_name, seed, ckpt in runs:
        model, _ = load_checkpoint(ckpt)
        modalities = list(model.modalities)
        refusal = knn_refusal(cfg, model) if mode == "knn" else None
        if refusal is not None:
            raise ValueError(f"{run_dir}: {refusal}")
        conds = [tuple(c) for c in conditions] if conditions is not None else all_conditions(modalities)
        for c in conds:
            bad = [m for m in c if m not in modalities]
            if bad or not c or len(c) >= len(modalities):
                raise ValueError(
                    f"condition {list(c)}: drop a non-empty proper subset of the model's modalities {modalities}"
                    + (f" ({bad} unknown)" if bad else "")
                )
        if other is None:
            fold = folds.get(fold_name)
            if fold is None:
                raise ValueError(f"run {ckpt}: fold {fold_name!r} is not a fold of the run's protocol")
            test = [by_id[i] for i in fold.test]
        else:
            test = other
        dataset = components.dataset(cfg, stage, model, test, classes, "test")
        never |= _never_in_data(model, dataset)
        plan: list[tuple[str, tuple[str, ...], str, int | None]] = [("full", (), "none", None)]
        for c in conds:
            name = "-" + "-".join(c)
            if mode == "knn":
                plan += [(f"{name} (knn k={kk})", c, "knn", kk) for kk in ks]
            else:
                plan.append((f"{name} ({mode})", c, mode, None))
        imputers: dict[int, tuple[KNNImputer, bool]] = {}
        if mode == "knn":
            if fold_name not in folds:
                raise ValueError(f"run {ckpt}: fold {fold_name!r} has no training split to fit KNN on")
            train = components.dataset(cfg, stage, model, [by_id[i] for i in folds[fold_name].train], classes, "train")
            for kk in ks:
                imputers[kk] = fit_imputer(model, train, cfg, kk, device)
        for name, drop, how, k_row in plan:
            if how == "none":
                scored: EmotionModel = model
            elif how == "knn":
                assert k_row is not None
                imputer, latent = imputers[k_row]
                scored = _Transformed(model, _knn_transform(model, imputer, latent, drop))
            else:
                scored = _Transformed(model, lambda b, d=drop, h=how: drop_available(b, d, h))  # type: ignore[misc]
            preds = predict(scored, dataset, cfg.data, cfg.eval.batch_size, device)
            row = rows.setdefault(name, {"name": name, "drop": list(drop), "mode": how, "k": k_row, "runs": []})
            row["runs"].append(
                {"fold": fold_name, "seed": seed, "checkpoint": str(ckpt), "metrics": score(preds, classes)}
            )
    for row in rows.values():
        row["aggregate"] = aggregate([r["metrics"] for r in row["runs"] if r["metrics"]])
    doc = {
        "run_dir": str(run_dir),
        "name": cfg.name,
        "mode": mode,
        "modalities": modalities,
        "classes": classes,
        "scored": str(manifest) if manifest is not None else "each run's fold test split",
        "n_runs": len(runs),
        "absent_in_data": sorted(never),
        "conditions": list(rows.values()),
    }
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_json(out / "missing.json", doc)
        atomic_write(out / "missing.md", missing_markdown(doc))
    return doc


def _cell(agg: dict[str, Any], key: str, digits: int) -> str:
    node = agg.get(key)
    if not isinstance(node, dict) or "mean" not in node:
        return "–"
    return format_mean_std(node["mean"], node["std"], digits)


def missing_markdown(doc: dict[str, Any], digits: int = 3) -> str:
    """Table 4.4 / 4.5-style Markdown: one row per condition, ● present / ○ missing, WA / UA / macro F1."""
    mods = list(doc.get("modalities", []))
    never = set(doc.get("absent_in_data", []))
    lines = [f"# {doc.get('name', 'experiment')}: missing modalities", ""]
    lines += [
        f"{doc.get('n_runs', 0)} run(s) of {doc.get('run_dir')}, scored on {doc.get('scored')}; missing modalities "
        f"are {doc.get('mode')}. Values are mean (std) over runs, ddof = 1.",
        "",
    ]
    header = [m.capitalize() for m in mods] + ["Missing as", "WA", "UA", "Macro F1"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in doc.get("conditions", []):
        marks = ["–" if m in never else "○" if m in row["drop"] else "●" for m in mods]
        how = "–" if row["mode"] == "none" else row["mode"] + (f" (K={row['k']})" if row.get("k") else "")
        agg = row.get("aggregate", {})
        lines.append(
            "| " + " | ".join([*marks, how, *[_cell(agg, k, digits) for k in ("wa", "ua", "macro_f1")]]) + " |"
        )
    lines += [
        "",
        "● present, ○ missing" + (", – never in the data" if never else "") + ". WA = overall accuracy, UA = mean "
        "per-class recall (the thesis calls overall accuracy UWA and the balanced one WA).",
        "",
    ]
    return "\n".join(lines)


def compare_missing(docs: dict[str, dict[str, Any]], metrics: Sequence[str] = ("ua", "wa"), digits: int = 3) -> str:
    """Several runs' missing-modality rows side by side (Table 4.4: Intra vs Intra-orig; Figs. 4.4-4.5: ModDrop).

    Args:
        docs: ``{column label: evaluate_missing document}`` (e.g. ``{"Intra": a, "Intra+ModDrop": b}``); rows are
            matched by the set of dropped modalities (and K), so the documents may use different modes.
        metrics: Metric keys per column (default UA then WA: the thesis' "WA" then "UWA").
        digits: Decimals.

    Returns:
        Markdown with one row per dropped-modality set (● present / ○ missing) and ``len(docs) * len(metrics)``
        value columns; ``–`` where a document has no such row.
    """
    if not docs:
        raise ValueError("compare_missing needs at least one document")
    mods = list(next(iter(docs.values())).get("modalities", []))
    keys: list[tuple[tuple[str, ...], Any]] = []
    for doc in docs.values():
        for row in doc.get("conditions", []):
            key = (tuple(sorted(row["drop"])), row.get("k"))
            if key not in keys:
                keys.append(key)
    header = [m.capitalize() for m in mods] + ["K"] + [f"{label} {m.upper()}" for label in docs for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for drop, k in keys:
        cells = ["○" if m in drop else "●" for m in mods] + [str(k) if k else "–"]
        for doc in docs.values():
            row = next(
                (r for r in doc.get("conditions", []) if (tuple(sorted(r["drop"])), r.get("k")) == (drop, k)), None
            )
            agg = row.get("aggregate", {}) if row is not None else {}
            cells += [_cell(agg, m, digits) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "UA = mean per-class recall (the thesis' WA); WA = overall accuracy (the thesis' UWA).", ""]
    return "\n".join(lines)
