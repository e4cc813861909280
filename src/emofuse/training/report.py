"""``results.json`` and the paper-style ``results.md`` of an experiment (mean (std) over folds × seeds).

The Markdown follows the papers' tables: standard per-class F1 always, and per-class F1 in the MulT
convention (one-vs-rest, support-weighted; CMD's Tables 3-4) where the system's paper uses it (the document's
``f1_conventions``), each with its macro average as ``"0.7714 (0.0075)"``; then WA, UA, weighted F1 and macro F1
(the ``headline`` metric first, weighted F1 for MELD-style runs), each as mean (std, ``ddof=1``) over every
fold × seed run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emofuse.metrics import aggregate, format_mean_std
from emofuse.metrics.tables import (
    encoder_notes,
    markdown_table,
    mean_std_cell,
    overall_columns,
    per_class_f1_tables,
)
from emofuse.utils.io import atomic_write, atomic_write_json

__all__ = ["render_markdown", "results_document", "write_results"]


def results_document(
    name: str,
    classes: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    **info: Any,
) -> dict[str, Any]:
    """The ``results.json`` document.

    Args:
        name: Experiment name.
        classes: Class names (column order).
        runs: ``{"fold", "seed", "metrics"}`` per finished run.
        **info: Extra top-level fields (description, protocol, encoders, ...).

    Returns:
        ``{"name", "classes", "n_runs", "runs", "aggregate", **info}``; ``aggregate`` is
        :func:`emofuse.metrics.aggregate` over the runs' metrics (``{}`` without runs).
    """
    metrics = [r["metrics"] for r in runs if r.get("metrics")]
    return {
        "name": name,
        **info,
        "classes": list(classes),
        "n_runs": len(metrics),
        "runs": [dict(r) for r in runs],
        "aggregate": aggregate(metrics) if metrics else {},
    }


def render_markdown(doc: Mapping[str, Any], digits: int = 4) -> str:
    """Paper-format Markdown of a ``results.json`` document."""
    name = str(doc.get("name", "experiment"))
    classes = [str(c) for c in doc.get("classes", [])]
    agg = doc.get("aggregate", {})
    runs = doc.get("runs", [])
    folds = sorted({str(r["fold"]) for r in runs})
    seeds = sorted({int(r["seed"]) for r in runs})
    lines = [f"# {name}", ""]
    if doc.get("description"):
        lines += [str(doc["description"]), ""]
    lines += [
        f"{doc.get('n_runs', 0)} runs ({len(folds)} fold(s): {', '.join(folds) or '–'}; "
        f"{len(seeds)} seed(s): {', '.join(map(str, seeds)) or '–'}). Values are mean (std) over runs, ddof = 1.",
        "",
    ]
    if isinstance(agg, Mapping) and "pcc" in agg:
        return "\n".join(lines + _regression_lines(name, agg, folds, runs, digits))
    overall = overall_columns(doc.get("headline"))
    if doc.get("headline"):
        head = dict((k, h) for h, k in overall)[str(doc["headline"])]
        lines += [f"Headline: {head} {mean_std_cell(agg, str(doc['headline']), digits=digits)}.", ""]
    for table in per_class_f1_tables(doc.get("f1_conventions")):
        lines += [f"## {table.title}", ""]
        lines += markdown_table(
            ["Experiment", *[c.capitalize() for c in classes], "Macro-F1"], [[name, *table.row(agg, classes, digits)]]
        )
        lines += [""]
    lines += ["## Overall", ""]
    lines += markdown_table(
        ["Experiment", *[h for h, _ in overall]], [[name, *[mean_std_cell(agg, k, digits=digits) for _, k in overall]]]
    )
    if len(folds) > 1:
        lines += ["", "## Per fold (mean (std) over seeds)", ""]
        rows = []
        for fold in folds:
            fold_runs = [r["metrics"] for r in runs if str(r["fold"]) == fold and r.get("metrics")]
            fagg = aggregate(fold_runs) if fold_runs else {}
            keys = (("mult_f1", "macro"), ("wa",), ("ua",), ("macro_f1",))
            rows.append([fold, *[mean_std_cell(fagg, *k, digits=digits) for k in keys]])
        lines += markdown_table(["Fold", "MulT Macro-F1", "WA", "UA", "Macro F1"], rows)
    lines += _selection_lines(runs, digits)
    notes = encoder_notes(doc.get("encoders", {}))
    if notes:
        lines += ["", "## Encoders", "", *notes]
    lines += [
        "",
        "WA = overall accuracy; UA = mean per-class recall (the Rajan thesis swaps the two names).",
        "",
    ]
    return "\n".join(lines)


_REGRESSION = (
    ("PCC", "pcc"), ("CCC", "ccc"), ("MAE", "mae"), ("UAR", "uar"), ("WAR", "war"), ("weighted F1", "weighted_f1")
)  # fmt: skip


def _regression_lines(
    name: str, agg: Mapping[str, Any], folds: Sequence[str], runs: Sequence[Mapping[str, Any]], digits: int
) -> list[str]:
    """The regression table: PCC, CCC, MAE and UAR / WAR of the binarised scores."""
    lines = ["## Regression", ""]
    lines += markdown_table(
        ["Experiment", *[h for h, _ in _REGRESSION]],
        [[name, *[mean_std_cell(agg, k, digits=digits) for _, k in _REGRESSION]]],
    )
    if len(folds) > 1:
        lines += ["", "## Per fold (mean (std) over seeds)", ""]
        rows = []
        for fold in folds:
            fold_runs = [r["metrics"] for r in runs if str(r["fold"]) == fold and r.get("metrics")]
            fagg = aggregate(fold_runs) if fold_runs else {}
            rows.append([fold, *[mean_std_cell(fagg, k, digits=digits) for _, k in _REGRESSION]])
        lines += markdown_table(["Fold", *[h for h, _ in _REGRESSION]], rows)
    lines += _selection_lines(runs, digits)
    threshold = agg.get("binarized", {}).get("threshold", {}).get("mean")
    where = f" at {threshold:g}" if isinstance(threshold, (int, float)) else ""
    lines += [
        "",
        f"UAR = mean per-class recall and WAR = overall accuracy of the scores binarised{where} (high if >=).",
        "",
    ]
    return lines


def _selection_lines(runs: Sequence[Mapping[str, Any]], digits: int) -> list[str]:
    """``Model selection: val/ccc 0.81 (0.03) ...``: the tested checkpoints' validation scores (compare on these)."""
    sel = [r["selection"] for r in runs if isinstance(r.get("selection"), Mapping)]
    monitors = {str(s.get("monitor")) for s in sel}
    if not sel or len(sel) != len(runs) or len(monitors) != 1:
        return []
    scores = aggregate([{"score": float(s["score"])} for s in sel])["score"]
    cell = format_mean_std(scores["mean"], scores["std"], digits)
    return [
        "",
        f"Model selection: the tested checkpoints score {monitors.pop()} = {cell} on validation "
        "(compare settings on this, not on the test tables).",
    ]


def write_results(out_dir: str | Path, doc: Mapping[str, Any], digits: int = 4) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` atomically; returns both paths."""
    out_dir = Path(out_dir)
    j = atomic_write_json(out_dir / "results.json", dict(doc))
    m = atomic_write(out_dir / "results.md", render_markdown(doc, digits))
    return j, m
