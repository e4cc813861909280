"""Data pipelines that need encoders: raw audio/text + cached teacher states → the shared batch dict.

Layer L3.5: imports ``data``, ``encoders`` and ``features``; never models, tasks or training.
"""

from __future__ import annotations

from emofuse.pipeline.dataset import IGNORE_LABEL, DatasetItemError, MultimodalDataset, pad_sequences
from emofuse.pipeline.dialogue import Dialogue, DialogueDataset, DialogueError, form_dialogues, group_dialogues

__all__ = [
    "IGNORE_LABEL",
    "DatasetItemError",
    "Dialogue",
    "DialogueDataset",
    "DialogueError",
    "MultimodalDataset",
    "form_dialogues",
    "group_dialogues",
    "pad_sequences",
]
