"""Plain-text pieces of results tables: ``mean (std)`` cells, Markdown tables, encoder provenance notes.

The cells of ``results.md`` (:mod:`emofuse.training.report`), importable without Lightning, for
``emofuse report`` (:mod:`emofuse.evaluation.report`), which must not import the training engine.

Example:
    >>> agg = {"wa": {"mean": 0.75, "std": 0.05, "n": 3}}
    >>> mean_std_cell(agg, "wa", digits=2), mean_std_cell(agg, "ua", digits=2)
    ('0.75 (0.05)', '–')
    >>> for line in markdown_table(["a", "b"], [["1", "2"]]):
    ...     print(line)
    | a | b |
    |---|---|
    | 1 | 2 |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emofuse.metrics.functional import format_mean_std

__all__ = [
    "F1Table",
    "encoder_flags",
    "encoder_notes",
    "f1_conventions",
    "headline_metric",
    "markdown_table",
    "mean_std_cell",
    "overall_columns",
    "per_class_f1_tables",
]

#: Model families whose papers report per-class F1 in MulT's convention (one-vs-rest, support-weighted binary F1):
#: the CMD student (CMD Tables 3-4) and the MulT baselines it compares with.
MULT_F1_MODELS = ("cmd_student", "mult")
#: Overall columns ``(heading, metric key)`` in the default order.
OVERALL = (("WA", "wa"), ("UA", "ua"), ("Weighted F1", "weighted_f1"), ("Macro F1", "macro_f1"))


def f1_conventions(model_name: str | None) -> list[str]:
    """Per-class F1 conventions a run's tables show: ``standard`` always, ``mult`` where the system's paper uses it.

    Example:
        >>> f1_conventions("cmd_student_late"), f1_conventions("cm_roberta")
        (['standard', 'mult'], ['standard'])
    """
    return ["standard", "mult"] if model_name and str(model_name).startswith(MULT_F1_MODELS) else ["standard"]


def headline_metric(model_name: str | None, labels: str | None) -> str | None:
    """``weighted_f1`` for MELD-style runs (a MELD label scheme, or CM-RoBERTa, whose Table 1 leads with it)."""
    if (labels and str(labels).startswith("meld")) or (model_name and str(model_name).startswith("cm_roberta")):
        return "weighted_f1"
    return None


def overall_columns(headline: str | None) -> list[tuple[str, str]]:
    """The overall table's ``(heading, key)`` columns, the headline metric first."""
    cols = list(OVERALL)
    return sorted(cols, key=lambda c: c[1] != headline) if headline else cols


@dataclass(frozen=True)
class F1Table:
    """One labelled per-class F1 table: its title, the metric path of a class's cell and of the macro column."""

    title: str
    per_class: tuple[str, ...]
    macro: tuple[str, ...]

    def row(self, agg: Mapping[str, Any], classes: Sequence[str], digits: int = 4) -> list[str]:
        """``mean (std)`` cells of every class, then the macro average."""
        cells = [mean_std_cell(agg, *self.per_class, c, digits=digits) for c in classes]
        return [*cells, mean_std_cell(agg, *self.macro, digits=digits)]


_F1_TABLES = {
    "standard": F1Table("Per-class F1 (standard: each class's precision and recall)", ("per_class_f1",), ("macro_f1",)),
    "mult": F1Table(
        "Per-class F1 (MulT convention: one-vs-rest, support-weighted; CMD's tables)",
        ("mult_f1", "per_class"),
        ("mult_f1", "macro"),
    ),
}


def per_class_f1_tables(conventions: Sequence[str] | None) -> list[F1Table]:
    """The per-class F1 tables for a results document's ``f1_conventions`` (``None``, older runs: both)."""
    return [_F1_TABLES[c] for c in (conventions or ("standard", "mult")) if c in _F1_TABLES]


def mean_std_cell(agg: Mapping[str, Any], *path: str, digits: int = 4) -> str:
    """``"mean (std)"`` of the aggregate node at ``path`` (``"–"`` when it is missing).

    Args:
        agg: An :func:`emofuse.metrics.aggregate` result.
        *path: Keys down to a ``{"mean", "std", "n"}`` node, e.g. ``"mult_f1", "per_class", "sad"``.
        digits: Decimal places.

    Returns:
        The formatted cell.
    """
    node: Any = agg
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return "–"
        node = node[key]
    if not isinstance(node, Mapping) or "mean" not in node:
        return "–"
    return format_mean_std(node["mean"], node["std"], digits)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table as lines (cells are written as given: escape them first if needed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def encoder_flags(prov: Mapping[str, Any]) -> list[str]:
    """Warnings about one encoder's provenance: ``"RANDOM weights"``, ``"STAND-IN weights"`` (empty when fine)."""
    flags = []
    if prov.get("stand_in"):
        flags.append("STAND-IN weights: not comparable to the paper")
    if prov.get("resolved") == "random":
        flags.append("RANDOM weights")
    return flags


def encoder_notes(encoders: Mapping[str, Any]) -> list[str]:
    """One Markdown bullet per encoder: ``- key: name → resolved (source)`` plus its :func:`encoder_flags`."""
    out = []
    for key, prov in sorted(encoders.items()):
        if not isinstance(prov, Mapping):
            continue
        what = f"- {key}: {prov.get('name')} → {prov.get('resolved')} ({prov.get('source', '')})"
        what += "".join(f" — {flag}" for flag in encoder_flags(prov))
        out.append(what)
    return out
