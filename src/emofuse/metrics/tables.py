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
from typing import Any

from emofuse.metrics.functional import format_mean_std

__all__ = ["encoder_flags", "encoder_notes", "markdown_table", "mean_std_cell"]


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
