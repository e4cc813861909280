"""A torch ``Dataset`` over cached features, and the collate function that pads them.

Student training reads teacher features from one or more :class:`FeatureStore` (one per
modality or encoder) instead of running the teachers, so a distillation epoch does not pay for a
teacher pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from emofuse.data.manifest import Utterance
from emofuse.features.cache import FeatureStore
from emofuse.losses.classification import IGNORE_INDEX

__all__ = ["IGNORE_LABEL", "CachedFeatureDataset", "collate_features"]

#: Label value of unlabelled items in a collated batch (``nn.CrossEntropyLoss``'s default ``ignore_index``).
IGNORE_LABEL = IGNORE_INDEX  # one definition: losses.classification

#: One store, several, or several by name.
Stores = FeatureStore | Sequence[FeatureStore] | Mapping[str, FeatureStore]


def _named_stores(stores: Stores) -> dict[str, FeatureStore]:
    if isinstance(stores, FeatureStore):
        return {stores.modality: stores}
    if isinstance(stores, Mapping):
        return dict(stores)
    stores = list(stores)
    if not stores:
        raise ValueError("need at least one FeatureStore")
    modalities = [s.modality for s in stores]
    if len(set(modalities)) == len(stores):
        return dict(zip(modalities, stores, strict=True))
    names = [s.name for s in stores]
    if len(set(names)) == len(stores):
        return dict(zip(names, stores, strict=True))
    return {f"{s.name}-{s.key.digest[:12]}": s for s in stores}


class CachedFeatureDataset(Dataset[dict[str, Any]]):
    """Utterances with their cached features (and labels).

    Args:
        store_or_stores: One store (named by its modality), a sequence of stores (named by modality
            when those are distinct, else by encoder name), or a mapping ``name -> store``.
        records: Utterance records (or bare ids, then unlabelled), in the order to serve them.
        label_to_index: ``{label: index}``, or the class list (index = position). ``None`` gives
            unlabelled items (``label`` is ``None``).

    Records without features in every store (skipped by extraction, or not extracted) are left out;
    :attr:`missing` lists them and a warning gives their count.

    Raises:
        ValueError: A record's label is not in ``label_to_index``.
    """

    def __init__(
        self,
        store_or_stores: Stores,
        records: Iterable[Utterance | str],
        label_to_index: Mapping[str, int] | Sequence[str] | None = None,
    ) -> None:
        self.stores = _named_stores(store_or_stores)
        if label_to_index is not None and not isinstance(label_to_index, Mapping):
            label_to_index = {c: i for i, c in enumerate(label_to_index)}
        self.label_to_index = dict(label_to_index) if label_to_index is not None else None
        self.items: list[tuple[str, int | None]] = []
        self.missing: list[str] = []
        for rec in records:
            utt, label = (rec, None) if isinstance(rec, str) else (rec.id, rec.label)
            if not all(utt in s for s in self.stores.values()):
                self.missing.append(utt)
                continue
            index = None
            if self.label_to_index is not None and label is not None:
                if label not in self.label_to_index:
                    known = ", ".join(self.label_to_index)
                    raise ValueError(f"utterance {utt!r} has label {label!r}, not one of the classes ({known})")
                index = self.label_to_index[label]
            self.items.append((utt, index))
        if self.missing:
            first = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
            warnings.warn(
                f"{len(self.missing)} of {len(self.missing) + len(self.items)} records have no cached features in "
                f"{', '.join(str(s.path) for s in self.stores.values())} and are left out ({first})",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One item: ``{"id", "features": {name: (T, D) float32}, "label": int | None}``."""
        utt, label = self.items[i]
        return {"id": utt, "features": {n: s.get(utt) for n, s in self.stores.items()}, "label": label}


def collate_features(batch: Sequence[dict[str, Any]], pad_value: float = 0.0) -> dict[str, Any]:
    """Pad a list of :class:`CachedFeatureDataset` items into a batch.

    Args:
        batch: Items from :meth:`CachedFeatureDataset.__getitem__`.
        pad_value: Value written at padded steps.

    Returns:
        ``{"ids": list[str], "features": {name: (B, T_max, D)}, "masks": {name: (B, T_max) bool, True at
        valid steps}, "labels": (B,) long, IGNORE_LABEL where unlabelled, or None when no item has a label}``.
        ``T_max`` is the longest item of the batch, per name.

    Example:
        >>> import torch
        >>> items = [{"id": "a", "features": {"audio": torch.ones(3, 2)}, "label": 1},
        ...          {"id": "b", "features": {"audio": torch.ones(1, 2)}, "label": None}]
        >>> out = collate_features(items)
        >>> tuple(out["features"]["audio"].shape), out["masks"]["audio"].tolist(), out["labels"].tolist()
        ((2, 3, 2), [[True, True, True], [True, False, False]], [1, -100])
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    features: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    for name in batch[0]["features"]:
        seqs = [b["features"][name] for b in batch]  # each (T_i, D)
        t_max = max(s.shape[0] for s in seqs)
        out = seqs[0].new_full((len(seqs), t_max, seqs[0].shape[1]), pad_value)  # (B, T_max, D)
        mask = torch.zeros(len(seqs), t_max, dtype=torch.bool)  # (B, T_max)
        for i, s in enumerate(seqs):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        features[name], masks[name] = out, mask
    labels = [b["label"] for b in batch]
    label_t = None
    if any(lab is not None for lab in labels):
        label_t = torch.tensor([IGNORE_LABEL if lab is None else lab for lab in labels], dtype=torch.long)
    return {"ids": [b["id"] for b in batch], "features": features, "masks": masks, "labels": label_t}
