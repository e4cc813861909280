"""``emofuse extract``: compute an encoder's features for a manifest once, into a resumable cache."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import typer

from emofuse.cli._common import console, err_console, handle_errors, parse_device, print_json

__all__ = ["extract"]


def _parse_layer(layer: str | None) -> int | str | None:
    if layer is None:
        return None
    try:
        return int(layer)
    except ValueError:
        if layer != "weighted":
            raise ValueError(f"--layer must be an index, -1 or 'weighted', got {layer!r}") from None
        return layer


@handle_errors
def extract(
    manifest: Path = typer.Argument(..., help="Manifest (.jsonl / .jsonl.gz) written by 'emofuse prepare'."),
    encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder name (see 'emofuse doctor')."),
    layer: str | None = typer.Option(None, "--layer", help="Hidden layer index (default: last), or 'weighted'."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature root: one sub-folder per encoder key is created in it."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Utterances per encoder call."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Utterances per shard file."),
    allow_random: bool = typer.Option(
        False, "--allow-random", help="Allow random weights when no pretrained weights resolve (loud warning)."
    ),
    weights_dir: Path | None = typer.Option(None, "--weights-dir", help="Folder with the encoder's weights."),
    device: str = typer.Option("cpu", "--device", help="Torch device to run the encoder on (cpu, cuda, cuda:1)."),
    max_duration: float | None = typer.Option(None, "--max-duration", help="Cut audio to at most this many seconds."),
    dtype: str = typer.Option("float16", "--dtype", help="Storage dtype: float16, or float32 for huge values."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes, each extracting a share into its own shards, merged into one cache."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Extract frame/token-level features once (fp16 shards; a killed run resumes where it stopped)."""
    from emofuse.data.audio import AudioWarning
    from emofuse.encoders import create_encoder
    from emofuse.features import extract_features

    if manifest.is_dir():
        raise ValueError(f"{manifest}: is a folder, not a manifest (.jsonl / .jsonl.gz)")
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    if max_duration is not None and not (math.isfinite(max_duration) and max_duration > 0):
        raise ValueError(f"--max-duration must be a positive number of seconds, got {max_duration}")
    dev = parse_device(device)
    chosen = _parse_layer(layer)
    enc = create_encoder(encoder, layer=chosen, weights_dir=weights_dir, allow_random=allow_random)
    enc.to(dev)
    quiet_log = logging.getLogger("emofuse.features.extract")
    level = quiet_log.level
    quiet_log.setLevel(logging.ERROR)  # skipped items are listed below (and in meta.json) instead
    try:
        with warnings.catch_warnings(record=True) as caught:  # truncated files: listed below, one line each
            warnings.simplefilter("always", AudioWarning)
            if workers > 1:
                from emofuse.features.parallel import EncoderSpec, extract_parallel

                spec = EncoderSpec(encoder, chosen, allow_random, str(weights_dir) if weights_dir else None, str(dev))
                store = extract_parallel(
                    manifest,
                    spec,
                    out,
                    workers,
                    encoder=enc,
                    batch_size=batch_size,
                    shard_size=shard_size,
                    max_duration=max_duration,
                    dtype=dtype,
                    progress=not (quiet or json_out),
                )
            else:
                store = extract_features(
                    manifest,
                    enc,
                    out,
                    layer=chosen,
                    batch_size=batch_size,
                    shard_size=shard_size,
                    progress=not (quiet or json_out),
                    max_duration=max_duration,
                    dtype=dtype,
                )
    finally:
        quiet_log.setLevel(level)
    for w in caught:  # other warnings as they would have been shown
        if not issubclass(w.category, AudioWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    notes = [str(w.message) for w in caught if issubclass(w.category, AudioWarning)]
    meta = store.meta
    summary: dict[str, Any] = {
        "dir": str(store.path),
        "key": meta["key"],
        "encoder": store.name,
        "modality": store.modality,
        "layer": store.key.layer,
        "dtype": meta["dtype"],
        "output_dim": store.output_dim,
        "frame_rate": store.frame_rate,
        "provenance": store.key.provenance,
        "items": len(store),
        "shards": len(store.shards),
        "counts": meta["counts"],
        "failed": meta["failed"],
        "seconds": meta["run"]["seconds"],
        "workers": meta.get("workers", 1),
        "warnings": notes,
    }
    if json_out:
        print_json(summary)
    else:
        c = meta["counts"]
        console.print(
            f"features of {store.name} ({store.key.provenance.get('resolved')}) in {store.path}: "
            f"{len(store)} utterances, D={store.output_dim}; this run computed {c['computed']}, "
            f"reused {c['reused']}, skipped {c['failed']}",
            highlight=False,
            markup=False,
        )
        if meta["failed"]:
            shown = list(meta["failed"].items())
            lines = "\n".join(f"  {k}: {v}" for k, v in shown[:5]) + ("\n  ..." if len(shown) > 5 else "")
            where = store.path / "meta.json"
            err_console.print(f"{len(shown)} skipped (all listed in {where}):\n{lines}", style="yellow", markup=False)
        for note in notes:
            err_console.print(f"warning: {note}", style="yellow", markup=False, soft_wrap=True)
    if meta["counts"]["total"] and not len(store):
        raise typer.Exit(code=1)
