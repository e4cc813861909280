"""``emofuse prepare``, ``emofuse validate`` and ``emofuse folds``: corpora → manifests → folds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from emofuse.cli._common import console, err_console, handle_errors, print_json, print_wide
from emofuse.data.corpora import CORPORA, PreparedCorpus, prepare
from emofuse.data.manifest import read_manifest, unreadable_audio, validate_records, write_manifest
from emofuse.utils.io import atomic_write_json

__all__ = ["folds", "prepare_cmd", "validate"]


def _parse_options(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _class_table(prep: PreparedCorpus) -> Table:
    splits = sorted({r.split for r in prep.records if r.split is not None})
    t = Table()
    t.add_column(f"{prep.name} / {prep.scheme}")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_column("total", justify="right")
    for c in prep.classes:
        row = [str(prep.label_counts(s).get(c, 0)) for s in splits]
        t.add_row(escape(c), *row, str(prep.label_counts().get(c, 0)))
    return t


@handle_errors
def prepare_cmd(
    corpus: str = typer.Argument(..., help=f"Corpus: {', '.join(CORPORA)}."),
    root: Path = typer.Argument(
        ..., help="Corpus root (for 'synthetic': the folder to generate into; for 'csv': the CSV file)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Manifest to write (.jsonl or .jsonl.gz). Synthetic default: ROOT/manifest.jsonl."
    ),
    labels: str | None = typer.Option(None, "--labels", "-l", help="Label scheme (default: the corpus' own)."),
    allow_missing_audio: bool = typer.Option(
        False, "--allow-missing-audio", help="Keep records whose audio is missing, with audio=null."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing manifest."),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="Recipe option key=value (e.g. seed=1 for synthetic; video_features=DIR for iemocap; features_dir=DIR "
        "for recola and Poria's mosi pickles; dimension=valence, val_recordings=1 for recola).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Parse a corpus into a validated manifest (one JSON record per utterance) plus a report."""
    if out is None:
        if corpus != "synthetic":
            raise ValueError("--out FILE.jsonl is required")
        out = root / "manifest.jsonl"
    kwargs = _parse_options(option)
    prep = prepare(corpus, root, labels=labels, allow_missing_audio=allow_missing_audio, progress=not quiet, **kwargs)
    if not prep.records:  # nothing to write: say what was found and how to keep it, never an empty manifest
        raise ValueError(_nothing_kept(prep, root, allow_missing_audio))
    new_text = "".join(r.to_json() + "\n" for r in prep.records)
    if out.exists() and not overwrite and out.suffix != ".gz" and out.read_text(encoding="utf-8") == new_text:
        console.print(f"manifest {out} is up to date ({len(prep.records)} records)", markup=False)
    else:
        write_manifest(prep.records, out, overwrite=overwrite)
        console.print(f"wrote {out} ({len(prep.records)} records)", markup=False)
    report_path = out.with_name(out.name.split(".")[0] + ".report.json")
    atomic_write_json(
        report_path,
        {
            "corpus": prep.name,
            "scheme": prep.scheme,
            "classes": list(prep.classes),
            "dropped": prep.dropped,
            **prep.report.to_dict(),
        },
    )
    console.print(_class_table(prep))
    if prep.dropped:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(prep.dropped.items()))
        console.print(f"dropped (label not in scheme {prep.scheme}): {dropped}", markup=False)
    problems = replace(prep.report, missing_audio=[]) if allow_missing_audio else prep.report
    if allow_missing_audio and prep.report.missing_audio:
        console.print(f"text only: {len(prep.report.missing_audio)} utterance(s) kept without audio (audio: null)")
    if not problems.ok:
        err_console.print(
            f"[yellow]problems found[/] (details in {escape(str(report_path))}):\n{escape(prep.report.summary())}"
        )
    elif prep.report.notes:
        console.print("\n".join(prep.report.notes), style="dim", markup=False)


def _nothing_kept(prep: PreparedCorpus, root: Path, allow_missing_audio: bool) -> str:
    """One line: why ``prepare`` kept no record, and the flag that keeps the text when the media are missing."""
    missing = len(prep.report.missing_audio) + len(prep.report.bad_audio)
    if missing and not allow_missing_audio:
        return (
            f"{prep.name}: no records written: {missing} labelled utterance(s) found under {root}, none with "
            "readable audio; --allow-missing-audio keeps their text (a text-only manifest, audio: null)"
        )
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(prep.dropped.items()))
    why = f"every label is outside scheme {prep.scheme!r} ({dropped})" if dropped else "; ".join(prep.report.notes)
    return f"{prep.name}: no records written from {root}: {why or 'no utterances found'}"


@handle_errors
def validate(
    manifest: Path = typer.Argument(..., help="Manifest to check."),
    labels: str | None = typer.Option(None, "--labels", "-l", help="Label scheme whose classes are allowed."),
    require_audio: bool = typer.Option(
        False, "--require-audio", help="Count text-only records (audio: null) as missing audio."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a manifest: records valid, audio present and readable (or null: text only), labels known, ids unique."""
    from emofuse.data.labels import get_scheme

    records = read_manifest(manifest)
    if not records:
        raise ValueError(f"{manifest}: the manifest has no records")
    allowed = get_scheme(labels).classes if labels else None
    report = validate_records(records, labels=allowed, root=manifest.parent, allow_text_only=not require_audio)
    unreadable = unreadable_audio(records, manifest.parent)
    report.bad_audio += [i for i in unreadable if i not in report.bad_audio]
    report.notes += [f"unreadable audio: {why}" for why in unreadable.values()]
    if json_out:
        print_json(report.to_dict())
    else:
        console.print(report.summary(), markup=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(code=1)


@handle_errors
def folds(
    manifest: Path = typer.Argument(..., help="Manifest written by 'emofuse prepare'."),
    protocol: str = typer.Option(
        ..., "--protocol", "-p", help="iemocap-loso, speaker-out, official, random-stratified, kfold."
    ),
    option: list[str] = typer.Option([], "--option", help="Protocol option key=value (groups=4, seed=1, ...)."),
    groups: int | None = typer.Option(
        None, "--groups", "-k", min=2, help="Number of folds (speaker groups for speaker-out; k for kfold)."
    ),
    labels: str | None = typer.Option(
        None, "--labels", "-l", help="Label scheme for the class order (default: from the manifest's report)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print folds with their utterance ids as JSON."),
) -> None:
    """Print the fold table of a protocol (class counts per split per fold)."""
    from emofuse.data.folds import folds_to_json, render_fold_table
    from emofuse.data.protocols import make_folds

    records = read_manifest(manifest)
    options = _parse_options(option)
    if groups is not None:
        options["k" if protocol == "kfold" else "groups"] = groups
    fold_list = make_folds(records, protocol, **options)
    if json_out:
        print_json(folds_to_json(protocol, fold_list))
    else:
        classes = _class_order(manifest, labels, records)
        print_wide(render_fold_table(records, fold_list, classes=classes, title=f"{manifest.name}: {protocol}"))


def _class_order(manifest: Path, labels: str | None, records: list[Any]) -> list[str] | None:
    """Class order: the named scheme, else the one recorded in the manifest's report, else sorted."""
    import json

    from emofuse.data.labels import get_scheme

    if labels:
        return list(get_scheme(labels).classes)
    report = manifest.with_name(manifest.name.split(".")[0] + ".report.json")
    found = {r.label for r in records if r.label is not None}
    if report.is_file():
        try:
            classes = json.loads(report.read_text(encoding="utf-8")).get("classes")
        except (OSError, ValueError):
            classes = None
        if isinstance(classes, list) and found <= set(classes):
            return [c for c in classes if c in found]
    return None
