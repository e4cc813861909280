"""``emofuse train`` (folds × seeds into a resumable run folder) and ``emofuse evaluate`` (score it elsewhere)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from emofuse.cli._common import console, err_console, handle_errors, print_json

__all__ = ["evaluate", "train"]


def _summary_table(doc: dict[str, Any], title: str) -> Table:
    from emofuse.metrics import format_mean_std
    from emofuse.metrics.tables import overall_columns

    agg = doc.get("aggregate", {})
    t = Table(title=escape(title))
    t.add_column("metric")
    t.add_column("mean (std)", justify="right")
    conventions = doc.get("f1_conventions") or ["standard", "mult"]  # older run folders: both, labelled
    rows: list[tuple[str, tuple[str, ...]]] = [(h, (k,)) for h, k in overall_columns(doc.get("headline"))]
    if "mult" in conventions:  # the system's paper leads with it (CMD)
        rows.insert(0, ("MulT macro-F1", ("mult_f1", "macro")))
    classes = doc.get("classes", [])
    rows += [(f"F1 {c} (standard)", ("per_class_f1", c)) for c in classes]
    if "mult" in conventions:
        rows += [(f"F1 {c} (MulT)", ("mult_f1", "per_class", c)) for c in classes]
    rows += [(key.upper(), (key,)) for key in ("pcc", "ccc", "mae", "uar", "war")]  # regression runs
    for label, path in rows:
        node: Any = agg
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and "mean" in node:
            t.add_row(escape(label), format_mean_std(node["mean"], node["std"]))
    return t


@contextlib.contextmanager
def _stop_cleanly() -> Iterator[None]:
    """Ctrl-C and SIGTERM end ``emofuse train`` with one line saying how to resume, and the signal's exit code.

    Inside a fit Lightning's own SIGTERM handler stops at the next step (the stage keeps its last finished epoch);
    outside (feature extraction, between runs) SIGTERM stops like Ctrl-C. Finished work is always kept.
    """
    from emofuse.training import TrainingInterrupted

    def on_sigterm(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:  # else Lightning's handler is in charge (it calls us too)
            raise TrainingInterrupted("training stopped by SIGTERM; run the same command again to resume", "SIGTERM")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        yield
    except KeyboardInterrupt:
        err_console.print("stopped by Ctrl-C (SIGINT); run the same command again to resume", highlight=False)
        raise typer.Exit(code=130) from None
    except TrainingInterrupted as e:
        err_console.print(f"stopped: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=e.exit_code) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def check_accelerator(cfg: Any) -> None:
    """Refuse, in one line, an accelerator this machine does not have (``trainer.accelerator`` or a stage's).

    Raises:
        ValueError: ``gpu`` / ``cuda`` without a visible CUDA device, or ``mps`` without Apple's MPS.
    """
    import torch

    wanted = {cfg.trainer.accelerator, *(s.trainer.get("accelerator") for s in cfg.stages)} - {None, "auto", "cpu"}
    for name in sorted(map(str, wanted)):
        if name in ("gpu", "cuda") and not torch.cuda.is_available():
            build = (
                "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
            )
            raise ValueError(
                f"trainer.accelerator={name}, but this machine has no usable GPU (torch {torch.__version__}: {build}); "
                "use --accelerator cpu (or auto)"
            )
        if name == "mps" and not torch.backends.mps.is_available():
            raise ValueError("trainer.accelerator=mps, but Apple's MPS is not available here; use --accelerator cpu")


@handle_errors
def train(
    config: Path = typer.Argument(..., help="Experiment YAML (overrides of the defaults; see configs/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (RUN_DIR); an unfinished one is resumed."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a config key: section.key=value (repeatable)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over: delete RUN_DIR's runs (needed if the config differs)."
    ),
    accelerator: str | None = typer.Option(None, "--accelerator", help="cpu, gpu or auto (trainer.accelerator)."),
    devices: str | None = typer.Option(None, "--devices", help="Device count, or auto (trainer.devices)."),
    strategy: str | None = typer.Option(None, "--strategy", help="Lightning strategy: auto, ddp, fsdp, ..."),
    num_nodes: int | None = typer.Option(None, "--num-nodes", min=1, help="Nodes for multi-node training."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-run lines."),
    json_out: bool = typer.Option(False, "--json", help="Print results.json instead of the summary table."),
) -> None:
    """Train the config's folds × seeds (and stages), then write RUN_DIR/results.json and results.md."""
    from emofuse.config import ExperimentConfig, load_config
    from emofuse.training import run_experiment

    overrides = list(set_)
    for key, value in (
        ("accelerator", accelerator),
        ("devices", devices),
        ("strategy", strategy),
        ("num_nodes", num_nodes),
    ):
        if value is not None:
            overrides.append(f"trainer.{key}={value}")
    cfg: ExperimentConfig = load_config(config, overrides)
    check_accelerator(cfg)
    with _stop_cleanly():
        doc = run_experiment(cfg, out, overrides, overwrite=overwrite, progress=not (quiet or json_out))
    if doc is None:  # a non-zero DDP rank: rank 0 reports
        return
    if json_out:
        print_json(doc)
        return
    console.print(_summary_table(doc, f"{doc['name']}: {doc['n_runs']} run(s)"))
    console.print(f"wrote {out / 'results.json'} and {out / 'results.md'}", highlight=False, markup=False)


@handle_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run folder written by 'emofuse train'."),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="Prepared manifest to score (same label set); with --drop: default each run's test fold.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="metrics.json to write (with --drop: a folder for missing.json/.md)."
    ),
    drop: list[str] = typer.Option(
        [], "--drop", help="Score with this modality missing (repeatable: one row each; 'video+audio' drops two)."
    ),
    drop_all: bool = typer.Option(
        False, "--drop-all", help="One row per non-empty proper modality subset (Table 4.4)."
    ),
    drop_mode: str = typer.Option("zero", "--drop-mode", help="Missing modalities as: zero, absent or knn."),
    k: list[int] = typer.Option([], "--k", help="Neighbours for --drop-mode knn (repeatable; default 5, 10, 100)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics JSON."),
) -> None:
    """Score every finished run of RUN_DIR (its best checkpoint) on another manifest, or with modalities missing."""
    if manifest is not None and not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    if drop or drop_all:
        from emofuse.training.missing import evaluate_missing, missing_markdown

        conditions = None if drop_all else [[m for m in d.split("+") if m] for d in drop]
        doc = evaluate_missing(run_dir, conditions, drop_mode, k or [5, 10, 100], manifest, out)
        if json_out:
            print_json(doc)
            return
        console.print(missing_markdown(doc), highlight=False, markup=False)
        err_console.print(f"wrote {out / 'missing.json'} and {out / 'missing.md'}", highlight=False, markup=False)
        return
    if manifest is None:
        raise ValueError("--manifest is required (unless --drop / --drop-all scores each run's test fold)")
    from emofuse.training import evaluate_run
    from emofuse.training.components import DefaultComponents

    doc = evaluate_run(run_dir, manifest, out, components=DefaultComponents(progress=not json_out))
    if json_out:
        print_json(doc)
        return
    console.print(_summary_table(doc, f"{run_dir} on {manifest.name}: {doc['n_runs']} run(s)"))
    err_console.print(f"wrote {out}", highlight=False, markup=False)
