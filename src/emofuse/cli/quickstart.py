"""``emofuse quickstart``: synthetic corpus → CMD vs unimodal students → report → two predictions, offline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from emofuse.cli._common import console, err_console, handle_errors, print_json, print_wide

__all__ = ["quickstart", "summary_table"]


def _cell(pair: tuple[float, float]) -> str:
    from emofuse.metrics import format_mean_std

    mean, std = pair
    if math.isnan(mean):
        return "–"
    return format_mean_std(mean, 0.0 if math.isnan(std) else std, 3)


def summary_table(rows: list[Any], title: str) -> Table:
    """The summary table: one row per variant, mean (std) over folds × seeds."""
    t = Table(title=title)
    for name, justify in (("model", "left"), ("runs", "right"), ("MulT macro-F1", "right"), ("WA", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    t.add_column("UA", justify="right")
    t.add_column("macro F1", justify="right")
    for r in rows:
        t.add_row(r.label, str(r.n_runs), _cell(r.mult_f1), _cell(r.wa), _cell(r.ua), _cell(r.macro_f1))
    return t


def _prediction_table(predictions: list[dict[str, Any]]) -> Table:
    t = Table(title="predictions of the CMD student on held-out utterances")
    t.add_column("file")
    t.add_column("truth")
    t.add_column("predicted")
    t.add_column("probabilities", justify="right")
    t.add_column("transcript used")
    for p in predictions:
        probs = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])
        t.add_row(
            Path(p["audio"]).name,
            str(p["label"]),
            str(p["pred"]),
            "  ".join(f"{k} {v:.2f}" for k, v in probs),
            str(p["transcript"]),
        )
    return t


@handle_errors
def quickstart(
    out: Path = typer.Option(Path("emofuse-quickstart"), "--out", "-o", help="Quickstart folder (reused if present)."),
    audio_teacher: str = typer.Option("openai/whisper-tiny.en", "--audio-teacher", help="Audio teacher encoder."),
    text_teacher: str = typer.Option("all-MiniLM-L6-v2", "--text-teacher", help="Text teacher encoder."),
    speakers: int = typer.Option(
        6, "--speakers", min=3, help="Speakers of the synthetic corpus (3 groups, a fold each)."
    ),
    per_class: int = typer.Option(12, "--per-class", min=1, help="Utterances per speaker and class."),
    conflict_rate: float = typer.Option(
        0.8, "--conflict-rate", min=0.0, max=1.0, help="Share of each emotion whose words and voice disagree."
    ),
    conflict_mode: str = typer.Option(
        "neutral", "--conflict-mode", help="neutral (one channel neutral: fusion helps) or other (contradictory)."
    ),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds per fold, e.g. 0,1,2."),
    folds: str | None = typer.Option(None, "--folds", help="Comma-separated folds to run (default: all)."),
    distill_epochs: int | None = typer.Option(None, "--distill-epochs", min=1, help="Stage-1 epochs."),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", min=1, help="Stage-2 epochs."),
    transcribe: bool = typer.Option(
        True, "--transcribe/--no-transcribe", help="Predict from speech recognition, or the manifest transcripts."
    ),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a config key of every run: section.key=value."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain from scratch (needed if settings changed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or step lines."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json instead of the tables."),
) -> None:
    """Train CMD and its unimodal students on the synthetic corpus, report, and predict two utterances."""
    from emofuse.training.quickstart import run_quickstart

    def ints(text: str, what: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--{what} must be comma-separated integers, got {text!r}") from None

    seed_list = ints(seeds, "seeds")
    if not seed_list:
        raise ValueError("--seeds needs at least one seed")
    fold_list = [f.strip() for f in folds.split(",") if f.strip()] if folds else None
    quiet_all = quiet or json_out

    def echo(line: str) -> None:
        err_console.print(line, highlight=False, markup=False)

    result = run_quickstart(
        out,
        audio_teacher=audio_teacher,
        text_teacher=text_teacher,
        num_speakers=speakers,
        per_class=per_class,
        conflict_rate=conflict_rate,
        conflict_mode=conflict_mode,
        seeds=seed_list,
        folds=fold_list,
        distill_epochs=distill_epochs,
        finetune_epochs=finetune_epochs,
        transcribe=transcribe,
        overrides=set_,
        overwrite=overwrite,
        progress=not quiet_all,
        echo=None if quiet_all else echo,
    )
    if json_out:
        print_json(result.to_dict())
        return
    title = "quickstart: speaker-independent test results (unseen speakers), mean (std) over runs"
    print_wide(summary_table(result.rows, title))
    if result.predictions:
        print_wide(_prediction_table(result.predictions))
    reused = [k for k, v in result.reused.items() if v]
    console.print(
        f"report: {result.report['html']} (and {result.report['markdown'].name})\n"
        f"CMD checkpoint: {result.checkpoint}\n"
        f"took {result.seconds['total']:.0f} s" + (f" (reused from cache: {', '.join(reused)})" if reused else ""),
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
