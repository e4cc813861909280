"""Inference: run trained models and off-the-shelf recognisers on audio (no training code, no Lightning).

Heavy modules load on first access, so ``import emofuse.inference`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Prediction", "PredictionError", "Predictor", "WindowPrediction", "export_onnx"]

_LAZY = {
    "Prediction": "emofuse.inference.predictor",
    "PredictionError": "emofuse.inference.predictor",
    "Predictor": "emofuse.inference.predictor",
    "WindowPrediction": "emofuse.inference.predictor",
    "export_onnx": "emofuse.inference.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emofuse.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
