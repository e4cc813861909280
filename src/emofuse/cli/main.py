"""The ``emofuse`` command line. Each command lives in its own module and only parses arguments."""

from __future__ import annotations

import typer

from emofuse import __version__
from emofuse.cli import (
    analyze,
    data,
    doctor,
    export,
    extract,
    models,
    predict,
    quickstart,
    report,
    serve,
    train,
    transcribe,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="emofuse",
    help="Multimodal emotion recognition: prepare corpora, extract features, train, evaluate, predict, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"emofuse {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Multimodal emotion recognition toolkit."""


app.command("quickstart")(quickstart.quickstart)
app.command("doctor")(doctor.doctor)
app.command("prepare")(data.prepare_cmd)
app.command("validate")(data.validate)
app.command("folds")(data.folds)
app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("models")(models.models)
app.command("extract")(extract.extract)
app.command("transcribe")(transcribe.transcribe)
app.command("analyze")(analyze.analyze)
app.command("report")(report.report)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.command("serve")(serve.serve)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
