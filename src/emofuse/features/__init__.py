"""Feature cache: teacher features computed once (fp16, sharded, resumable) and read by training.

:func:`extract_features` writes a cache, :class:`FeatureStore` reads one, and
:class:`CachedFeatureDataset` + :func:`collate_features` feed cached features to a model.
"""

from __future__ import annotations

from emofuse.features.cache import EncoderKey, FeatureCacheError, FeatureStore, encoder_key, resolve_cache_dir
from emofuse.features.dataset import CachedFeatureDataset, collate_features
from emofuse.features.extract import ShardCallback, extract_features

__all__ = [
    "CachedFeatureDataset",
    "EncoderKey",
    "FeatureCacheError",
    "FeatureStore",
    "ShardCallback",
    "collate_features",
    "encoder_key",
    "extract_features",
    "resolve_cache_dir",
]
