"""Data pipelines that need encoders: raw audio/text + cached teacher states → the shared batch dict.

Layer L3.5: imports ``data``, ``encoders`` and ``features``; never models, tasks or training.
"""

from __future__ import annotations

from emofuse.pipeline.dataset import IGNORE_LABEL, DatasetItemError, MultimodalDataset, pad_sequences

__all__ = ["IGNORE_LABEL", "DatasetItemError", "MultimodalDataset", "pad_sequences"]
