"""``emofuse serve CKPT``: an HTTP service (POST /predict, GET /health, GET /card, a web page) for any model."""

from __future__ import annotations

from pathlib import Path

import typer

from emofuse.cli._common import err_console, handle_errors

__all__ = ["serve"]


@handle_errors
def serve(
    checkpoint: Path = typer.Argument(
        ..., help="A .safetensors checkpoint, a stage folder, a seed run folder, or a training run folder (RUN_DIR)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    max_mb: float = typer.Option(10.0, "--max-mb", min=0.001, help="Largest accepted upload in MB (413 above)."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", min=0.1, help="Longest accepted audio (413 above)."),
    batch_window_ms: float = typer.Option(
        10.0, "--batch-window-ms", min=0.0, help="How long a request waits to share a forward pass with others."
    ),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Most recordings per forward pass."),
    window: float = typer.Option(10.0, "--window", min=0.1, help="Window length in seconds for long recordings."),
    hop: float = typer.Option(5.0, "--hop", min=0.1, help="Hop between windows in seconds."),
) -> None:
    """Serve a trained model over HTTP until interrupted.

    POST /predict takes a multipart form (file field 'audio', optional text field 'text') and answers the label,
    the class probabilities and the transcript used; GET /health, GET /card (the model card) and GET / (a page to
    upload or record audio) complete it. Needs the 'serve' extra (pip install 'emofuse[serve]').
    """
    from emofuse.inference.predictor import Predictor
    from emofuse.inference.serve import ServeLimits
    from emofuse.inference.serve import serve as run

    limits = ServeLimits(int(max_mb * 1024 * 1024), max_seconds, batch_window_ms, max_batch)
    predictor = Predictor.from_checkpoint(checkpoint, window=window, hop=hop, batch_size=max_batch)
    err_console.print(f"checkpoint: {predictor.checkpoint} ({predictor.selection})", highlight=False)
    err_console.print(f"serving {predictor.meta.get('model_name')} on http://{host}:{port}/", highlight=False)
    run(predictor, host, port, limits)
