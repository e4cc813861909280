"""``emofuse predict``: emotion label and class probabilities (values for regression models) of audio files.

Any model family that reads audio and text works (``emofuse models`` lists which do); a dialogue-level model scores
each file as a one-turn dialogue (use :meth:`~emofuse.inference.Predictor.predict_dialogue` for conversations).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from emofuse.cli._common import console, err_console, handle_errors, print_json, print_wide

__all__ = ["predict"]

_TRANSCRIPTS_HELP = (
    'Transcripts per file: a CSV with a header \'path,text\' or a JSONL file of {"path": ..., "text": ...} '
    "lines. Paths are matched as given, relative to the transcripts file's folder, or by file name. Files "
    "without a transcript are transcribed by ASR."
)


@dataclass
class _Item:
    """One recording to score."""

    name: str
    path: Path
    text: str | None = None
    start: float | None = None
    end: float | None = None


def _audio_files(folder: Path) -> list[Path]:
    from emofuse.data.audio import SUPPORTED_EXTS

    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in SUPPORTED_EXTS and not any(part.startswith(".") for part in p.parts)
    )


def _items(inputs: list[Path]) -> list[_Item]:
    """Expand files, folders and manifests into recordings (errors for inputs that do not exist)."""
    items: list[_Item] = []
    for src in inputs:
        if src.is_dir():
            files = _audio_files(src)
            if not files:
                raise FileNotFoundError(f"{src}: folder has no audio files")
            items += [_Item(str(p), p) for p in files]
        elif src.name.endswith((".jsonl", ".jsonl.gz")):
            from emofuse.data.manifest import read_manifest

            for rec in read_manifest(src):
                path = rec.audio_path(src.parent)
                if path is None:
                    raise ValueError(f"{src}: record {rec.id!r} has no audio file")
                text = rec.text if rec.text and rec.text.strip() else None
                items.append(_Item(rec.id, path, text, rec.start, rec.end))
        else:  # a missing or unreadable file is reported with the others, not fatal
            items.append(_Item(str(src), src))
    return items


def _read_transcripts(path: Path) -> dict[str, str]:
    """``path or name -> text`` from a CSV (``path,text``) or JSONL transcripts file."""
    if not path.is_file():
        raise FileNotFoundError(f"transcripts file not found: {path}")
    rows: list[tuple[int, Any, Any]] = []
    from emofuse.utils.io import read_utf8

    raw = read_utf8(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object with 'path' and 'text'")
            rows.append((n, obj.get("path", obj.get("audio")), obj.get("text")))
    else:
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or not {"path", "text"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: a transcripts CSV needs a header with 'path' and 'text' (got {reader.fieldnames})"
            )
        rows = [(n, r.get("path"), r.get("text")) for n, r in enumerate(reader, 2)]
    out: dict[str, str] = {}
    for n, p, text in rows:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{path}:{n}: missing 'path'")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{n}: empty transcript for {p!r}")
        key = Path(p)
        out[str(key)] = text
        out[str((path.parent / key).resolve())] = text
        out.setdefault(f"name:{key.name}", text)
    return out


def _lookup(transcripts: dict[str, str], item: _Item) -> str | None:
    for key in (str(item.path), str(item.path.resolve()), f"name:{item.path.name}"):
        if key in transcripts:
            return transcripts[key]
    return None


def _table(rows: list[dict[str, Any]], classes: list[str], show_text: bool) -> Table:
    t = Table(title="emofuse predict")
    t.add_column("file", overflow="fold")
    t.add_column("label", style="bold")
    for c in classes:
        t.add_column(c, justify="right")
    if not classes:  # a regression model: its continuous outputs
        t.add_column("values", justify="right")
    if show_text:
        t.add_column("transcript", overflow="fold")
    for r in rows:
        best = r["label"] or ""
        cells = [
            f"[bold]{r['probabilities'][c]:.3f}[/]" if c == best else f"{r['probabilities'][c]:.3f}" for c in classes
        ]
        if not classes:
            cells = [", ".join(f"{v:.4f}" for v in r.get("values") or [])]
        extra = []
        if show_text:
            text = r.get("transcript") or ""
            extra = [f"[dim](ASR)[/] {escape(text)}" if r.get("from_asr") else escape(text)]
        t.add_row(escape(r["file"]), escape(best), *cells, *extra)
    return t


def _window_table(row: dict[str, Any], classes: list[str]) -> Table:
    t = Table(title=f"{escape(row['file'])}: {len(row['windows'])} windows")
    t.add_column("window (s)")
    t.add_column("label")
    for c in classes:
        t.add_column(c, justify="right")
    for w in row["windows"]:
        probs = (f"{w['probabilities'][c]:.3f}" for c in classes)
        t.add_row(f"{w['start']:.2f}-{w['end']:.2f}", escape(w["label"] or ""), *probs)
    return t


def _write_csv(path: Path, rows: list[dict[str, Any]], failures: list[dict[str, str]], classes: list[str]) -> None:
    from emofuse.utils.io import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "label", *(classes or ["values"]), "transcript", "from_asr", "duration", "windows", "error"])
    for r in rows:
        probs = [f"{r['probabilities'][c]:.6f}" for c in classes] or [" ".join(f"{v:.6f}" for v in r["values"])]
        w.writerow(
            [
                r["file"],
                r["label"],
                *probs,
                r.get("transcript") or "",
                r["from_asr"],
                f"{r['duration']:.3f}",
                len(r["windows"]),
                "",
            ]
        )
    for f in failures:
        w.writerow([f["file"], "", *([""] * max(1, len(classes))), "", "", "", "", f["error"]])
    atomic_write(path, buf.getvalue().encode("utf-8"))


@handle_errors
def predict(
    checkpoint: Path = typer.Argument(
        ..., help="A .safetensors checkpoint, a stage folder, a seed run folder, or a training run folder (RUN_DIR)."
    ),
    audio: list[Path] = typer.Argument(..., help="Audio files, folders (searched recursively) or manifests (.jsonl)."),
    text: str | None = typer.Option(None, "--text", "-t", help="Transcript, used for every input (no ASR)."),
    transcripts: Path | None = typer.Option(None, "--transcripts", help=_TRANSCRIPTS_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout (no table)."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Also write the results to this CSV file."),
    window: float = typer.Option(10.0, "--window", min=0.1, help="Window length in seconds for long recordings."),
    hop: float = typer.Option(5.0, "--hop", min=0.1, help="Hop between windows in seconds."),
    windows: bool = typer.Option(False, "--windows", help="Also print the per-window results of long recordings."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per forward pass."),
    dialogue: bool = typer.Option(
        False, "--dialogue", help="Score the inputs, in the order given, as one conversation (dialogue-level models)."
    ),
) -> None:
    """Predict the emotion of each recording: label and class probabilities.

    Without --text or --transcripts (or a manifest's own transcripts) each recording is transcribed with the
    packaged speech recogniser (the 'asr' extra of emofuse) and the transcript used is shown. Recordings longer
    than --window are cut into windows and their probabilities averaged. A file that fails is reported and
    skipped; the exit code is 1 when any failed.
    """
    from emofuse.data.audio import AudioWarning
    from emofuse.inference.predictor import Predictor

    if text is not None and transcripts is not None:
        raise ValueError("give either --text or --transcripts, not both")
    if text is not None and not text.strip():
        raise ValueError("--text is empty; give the spoken words, or leave it out to transcribe with ASR")
    table = _read_transcripts(transcripts) if transcripts is not None else {}
    items = _items(list(audio))
    predictor = Predictor.from_checkpoint(checkpoint, window=window, hop=hop, batch_size=batch_size)
    err_console.print(f"checkpoint: {predictor.checkpoint} ({predictor.selection})", highlight=False, markup=False)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    from emofuse.utils.progress import track

    if dialogue:  # one conversation, read in context (CM-RoBERTa); any bad utterance stops it, named
        if not predictor.dialogue_level:
            raise ValueError(
                f"--dialogue needs a dialogue-level model; {predictor.meta.get('model_name')!r} scores utterances"
            )
        waves = [predictor.load(i.path, i.start, i.end) for i in items]
        said = [text if text is not None else (_lookup(table, i) if table else None) or i.text for i in items]
        preds = predictor.predict_dialogue(waves, said)
        rows = [{"file": i.name, **p.to_dict()} for i, p in zip(items, preds, strict=True)]
    for item in track([] if dialogue else items, "predicting", disable=json_out or len(items) < 2):
        given = text if text is not None else _lookup(table, item) if table else None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AudioWarning)
                pred = predictor.predict(
                    item.path, given if given is not None else item.text, start=item.start, end=item.end
                )
        except (ValueError, OSError, ImportError) as e:  # one bad file never stops the batch
            msg = str(e) if str(e).startswith(item.name) else f"{item.name}: {e}"
            failures.append({"file": item.name, "error": str(e)})
            if not json_out:
                err_console.print(f"[red]failed:[/] {escape(msg)}", highlight=False, soft_wrap=True)
            continue
        notes = [str(w.message) for w in caught if issubclass(w.category, AudioWarning)]
        for note in notes if not json_out else []:
            err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
        rows.append({"file": item.name, **pred.to_dict(), **({"warnings": notes} if notes else {})})
    classes = predictor.classes
    if csv_out is not None:
        _write_csv(csv_out, rows, failures, classes)
    if json_out:
        print_json({"checkpoint": str(predictor.checkpoint), "classes": classes, "results": rows, "failed": failures})
    else:
        if rows:
            print_wide(_table(rows, classes, predictor.needs_text))
            if windows:
                for r in rows:
                    if len(r["windows"]) > 1:
                        print_wide(_window_table(r, classes))
        summary = f"{len(rows)} of {len(items)} recording(s) predicted"
        if failures:
            summary += f", {len(failures)} failed:"
        console.print(summary, highlight=False)
        for f in failures:
            msg = f["error"] if f["error"].startswith(f["file"]) else f"{f['file']}: {f['error']}"
            console.print(f"  {msg}", highlight=False, soft_wrap=True, markup=False)
        if csv_out is not None:
            console.print(f"wrote {csv_out}", highlight=False)
    if failures:
        raise typer.Exit(code=1)
