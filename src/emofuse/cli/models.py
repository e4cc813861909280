"""``emofuse models``: every registered model with its parameter counts, declared capabilities and what it serves.

Each row says what the family reads (modalities, raw input or encoder features, utterance or dialogue level),
what it outputs (classes or values), whether ``emofuse predict`` / ``serve`` can score it from audio and text, and
whether ``emofuse export --onnx`` can export it (with the reason when not).
"""

from __future__ import annotations

import warnings
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from emofuse.cli._common import console, handle_errors, print_json, print_wide

__all__ = ["model_report", "models"]


def _count(name: str) -> dict[str, Any]:
    """Build ``name`` with its default config and count its parameters.

    The model is built on the meta device (no memory, no weights read; CMD students then use the named teacher
    architectures, e.g. bert-base-uncased rather than a packaged stand-in). A model that cannot be built there is
    built on the CPU.
    """
    import torch

    from emofuse.models import create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = create_model(name)
            device = "meta"
        except Exception:  # noqa: BLE001 - retry for real on the CPU
            model = create_model(name)
            device = "cpu"
    caps = model.capabilities()
    other = [m for m in caps.modalities if m not in ("audio", "text")]
    return {
        "name": name,
        "class": type(model).__name__,
        "total": model.num_parameters(),
        "trainable": model.num_parameters(trainable_only=True),
        "branches": model.branch_parameters(),
        "built_on": device,
        "capabilities": caps.to_dict(),
        "predict": f"no: reads {', '.join(other)} features from feature files" if other else "yes",
        "export": _export_note(model),
    }


def _export_note(model: Any) -> str:
    """``yes`` (raw input in), ``yes: encoder features in``, or ``no: <why>`` for ``emofuse export --onnx``."""
    if model.export_limit is not None:
        return f"no: {model.export_limit}"
    return "yes: encoder features in" if model.input_kind == "features" else "yes"


def model_report(pattern: str | None = None) -> list[dict[str, Any]]:
    """Parameter counts of every registered model (optionally those whose name contains ``pattern``).

    Returns:
        One dict per model: ``name``, ``class``, ``total``, ``trainable``, ``branches`` (``{branch: count}``) and
        ``built_on``; a model that fails to build has ``error`` instead of the counts.
    """
    from emofuse.models import list_models

    rows = []
    for name in list_models(pattern):
        try:
            rows.append(_count(name))
        except Exception as e:  # noqa: BLE001 - one broken model must not hide the others
            rows.append({"name": name, "error": f"{type(e).__name__}: {e}"})
    return rows


def _fmt(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


@handle_errors
def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    filter_: str | None = typer.Option(None, "--filter", "-f", help="Only models whose name contains this."),
) -> None:
    """List registered models with total and per-branch parameter counts (default configs)."""
    rows = model_report(filter_)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no registered model matches {filter_!r}", markup=False)
        return
    table = Table(title="Registered models (default configs)")
    cols = ("model", "total", "exact", "branches", "reads", "predict / serve", "export --onnx")
    for col in cols:
        table.add_column(col, justify="right" if col in ("total", "exact") else "left")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "-", "-", f"[red]{escape(r['error'])}[/]", "", "", "")
            continue
        branches = ", ".join(f"{b} {_fmt(n)}" for b, n in r["branches"].items())
        c = r["capabilities"]
        reads = f"{'+'.join(c['modalities'])} {c['input_kind']}, {c['level']}, {c['target']}"
        table.add_row(
            r["name"], _fmt(r["total"]), f"{r['total']:,}", branches, reads, escape(r["predict"]), escape(r["export"])
        )
    print_wide(table)
