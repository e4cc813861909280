"""``emofuse export``: a trained CMD student to ONNX (audio + text inputs, dynamic lengths), checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from emofuse.cli._common import console, err_console, handle_errors, print_json

__all__ = ["export"]


@handle_errors
def export(
    checkpoint: Path = typer.Argument(
        ..., help="A .safetensors checkpoint, a stage folder, a seed run folder, or a training run folder (RUN_DIR)."
    ),
    onnx: Path = typer.Option(..., "--onnx", help="Output .onnx file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare onnxruntime with PyTorch on several input lengths after export."
    ),
    dynamo: bool = typer.Option(
        False, "--dynamo", help="Use the torch.export (dynamo) exporter (needs onnxscript; minutes instead of seconds)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Export a trained model to ONNX, checked against PyTorch (`emofuse models` lists which families export).

    A CMD student takes the teachers' preprocessed audio and token ids; a feature-input classifier (MulT, probes)
    takes its encoders' frames and masks, its standardisation inside the graph. Batch and time axes are dynamic;
    the output is the class probabilities in the checkpoint's class order (metadata 'classes').
    """
    from emofuse.inference.export import ExportError, OnnxStudent, export_onnx, verify_onnx
    from emofuse.inference.predictor import Predictor

    if onnx.exists() and not overwrite:
        raise FileExistsError(f"{onnx} already exists; pass --overwrite to replace it")
    predictor = Predictor.from_checkpoint(checkpoint)
    if predictor.model.export_limit is not None:  # see `emofuse models` for every family
        raise ExportError(
            f"model {predictor.model.model_name!r} cannot be exported to ONNX: {predictor.model.export_limit}"
        )
    err_console.print(f"checkpoint: {predictor.checkpoint} ({predictor.selection})", highlight=False, markup=False)
    model = predictor.model
    meta = {
        "classes": json.dumps(predictor.classes),
        "model_name": str(predictor.meta.get("model_name")),
        "checkpoint": str(predictor.checkpoint),
        "model_config": json.dumps(model.config),
    }
    if model.input_kind == "features":  # encoder features in; the encoders run outside the graph
        from emofuse.inference.export_features import OnnxFeatureModel, export_feature_model, verify_feature_onnx

        meta["encoders"] = json.dumps(predictor.inputs.names)
        path = export_feature_model(model, onnx, overwrite=overwrite, meta=meta)
        names = OnnxFeatureModel(model).input_names
        diff = verify_feature_onnx(model, path) if check else None
    else:
        # the graph takes segment ids only when the tokenizer produces them
        types = "text" in predictor.modalities and "token_type_ids" in predictor.encoders["text"].preprocess(["a"])
        path = export_onnx(model, onnx, overwrite=overwrite, meta=meta, dynamo=dynamo, token_types=types)
        names = OnnxStudent(model, types).input_names
        diff = verify_onnx(model, path) if check else None
    doc: dict[str, Any] = {
        "onnx": str(path),
        "checkpoint": str(predictor.checkpoint),
        "inputs": names,
        "outputs": ["probs"],
        "classes": predictor.classes,
        "bytes": path.stat().st_size,
        "max_abs_diff": diff,
    }
    if json_out:
        print_json(doc)
        return
    console.print(f"wrote {path} ({doc['bytes'] / 1e6:.2f} MB)", highlight=False, markup=False)
    console.print(
        f"inputs: {', '.join(doc['inputs'])} (batch and time dynamic) -> probs over {predictor.classes}", markup=False
    )
    if doc["max_abs_diff"] is not None:
        console.print(f"onnxruntime vs PyTorch: max |dp| = {doc['max_abs_diff']:.2e} over 2 batch/length settings")
