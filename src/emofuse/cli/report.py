"""``emofuse report RUN_DIR... --out DIR``: Markdown + one self-contained HTML page over one or many run folders."""

from __future__ import annotations

from pathlib import Path

import typer

from emofuse.cli._common import console, handle_errors

__all__ = ["report"]


@handle_errors
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR", help="Run folders written by 'emofuse train' (same label set)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md, report_figures/ and report.html."),
    title: str | None = typer.Option(None, "--title", help="Page title (default: the experiment names)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a report already in --out (other files there are never touched)."
    ),
) -> None:
    """Results tables, confusion matrices, F1 plots, curves, encoder provenance and CMD analyses of runs."""
    from emofuse.evaluation.report import write_report

    paths = write_report(run_dirs, out, title=title, overwrite=overwrite)
    console.print(f"wrote {paths['markdown']} and {paths['html']}", highlight=False, soft_wrap=True, markup=False)
