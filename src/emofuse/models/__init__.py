"""Emotion models: one model per file, each registered by name (``list_models()``, ``create_model()``)."""

from __future__ import annotations

import importlib

from emofuse.models._registry import create_model, get_model_entry, list_models, register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["EmotionModel", "ModelOutput", "create_model", "get_model_entry", "list_models", "register_model"]

# Model modules register themselves on import; a module not yet written is skipped.
for _m in (
    "emofuse.models.cmd_student",
    "emofuse.models.mult",
    "emofuse.models.probe",
    "emofuse.models.cm_roberta",
    "emofuse.models.tri_fusion",
    "emofuse.models.mgcma",
    "emofuse.models.conflictnet",
    "emofuse.models.sew",
    "emofuse.models.finetuned_encoder",
):
    try:
        importlib.import_module(_m)
    except ModuleNotFoundError as _e:
        if _e.name != _m:
            raise
