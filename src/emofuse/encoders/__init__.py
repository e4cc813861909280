"""Encoders: pretrained teachers and handcrafted features behind one interface.

Importing this package registers every encoder module's names.
"""

from __future__ import annotations

import importlib

from emofuse.encoders._registry import (
    EncoderSpec,
    MissingWeightsError,
    RandomInitWarning,
    Resolution,
    create_encoder,
    get_encoder_spec,
    list_encoders,
    list_packaged,
    locate_packaged,
    register_encoder,
    register_packaged,
    resolve_encoder,
)
from emofuse.encoders.base import Encoder, EncoderError, EncoderOutput, Provenance

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderOutput",
    "EncoderSpec",
    "MissingWeightsError",
    "Provenance",
    "RandomInitWarning",
    "Resolution",
    "create_encoder",
    "get_encoder_spec",
    "list_encoders",
    "list_packaged",
    "locate_packaged",
    "register_encoder",
    "register_packaged",
    "resolve_encoder",
]

# Encoder modules register their names on import; a module not yet written is skipped.
_MODULES = (
    "emofuse.encoders.packaged",
    "emofuse.encoders.hf_text",
    "emofuse.encoders.hf_speech",
    "emofuse.encoders.whisper",
    "emofuse.encoders.handcrafted",
    "emofuse.encoders.waveform",
    "emofuse.encoders.utterance",
)
for _m in _MODULES:
    try:
        importlib.import_module(_m)
    except ModuleNotFoundError as _e:
        if _e.name != _m:
            raise
