"""Aggregation of per-run metrics over folds x seeds: mean and sample std (ddof=1), and their formatting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate", "format_mean_std"]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _aggregate(runs: list[Mapping[Any, Any]], path: str) -> dict[Any, Any]:
    keys: list[Any] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    out: dict[Any, Any] = {}
    for key in keys:
        name = f"{path}{key}"
        present = [run[key] for run in runs if key in run]
        numeric = [_is_number(v) for v in present]
        nested = [isinstance(v, Mapping) for v in present]
        if not any(numeric) and not any(nested):
            continue  # strings, lists (confusion), None, booleans: not aggregated
        if len(present) != len(runs):
            missing = [i for i, run in enumerate(runs) if key not in run]
            raise ValueError(f"aggregate: key {name!r} is missing from run(s) {missing} of {len(runs)}")
        if all(numeric):
            values = np.asarray(present, dtype=np.float64)
            n = len(values)
            std = float(np.std(values, ddof=1)) if n > 1 else 0.0
            out[key] = {"mean": float(np.mean(values)), "std": std, "n": n}
        elif all(nested):
            sub = _aggregate(present, f"{name}.")
            if sub:
                out[key] = sub
        else:
            kinds = sorted({type(v).__name__ for v in present})
            raise ValueError(f"aggregate: key {name!r} is a number in some runs and not in others ({kinds})")
    return out


def aggregate(runs: Sequence[Mapping[Any, Any]]) -> dict[Any, Any]:
    """Mean and sample std (``ddof=1``) of every numeric metric over runs (folds × seeds).

    Nested dicts (e.g. ``per_class_f1``) are aggregated recursively. Values that are not numbers or
    dicts (strings, lists such as ``confusion``, ``None``, booleans) are skipped. With a single run
    the std is reported as ``0.0`` (not ``nan``, so reports stay JSON-clean); ``n`` says how many
    runs went in, so a reader can tell. ``nan`` values (e.g. an undefined PCC) propagate.

    Args:
        runs: One metrics dict per run, all with the same numeric keys.

    Returns:
        ``{key: {"mean": m, "std": s, "n": n}}``, nested like the input.

    Raises:
        ValueError: No runs; a numeric (or dict) key is missing from some runs (the key path and
            the runs are named); a key is a number in some runs and not in others.

    Example:
        >>> agg = aggregate([{"wa": 0.70, "pc": {"a": 1.0}}, {"wa": 0.80, "pc": {"a": 0.5}}])
        >>> round(agg["wa"]["mean"], 4), round(agg["wa"]["std"], 4), agg["pc"]["a"]["n"]
        (0.75, 0.0707, 2)
    """
    runs = list(runs)
    if not runs:
        raise ValueError("aggregate: no runs")
    bad = [i for i, r in enumerate(runs) if not isinstance(r, Mapping)]
    if bad:
        raise ValueError(f"aggregate: run(s) {bad} are not dicts")
    return _aggregate(runs, "")


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    """Paper-style ``"mean (std)"`` with a fixed number of decimals.

    Args:
        mean: The mean.
        std: The standard deviation.
        digits: Decimals for both numbers.

    Returns:
        E.g. ``"0.7714 (0.0075)"``.

    Example:
        >>> format_mean_std(0.77142, 0.00751)
        '0.7714 (0.0075)'
    """
    if digits < 0:
        raise ValueError(f"digits must be >= 0, got {digits}")
    return f"{mean:.{digits}f} ({std:.{digits}f})"
