"""Missing modalities: drop one from a batch (zeroed or absent), and ModDrop training copies.

Rajan (2022, Ch. 4.4) tests models trained on all modalities with one or two of them missing (Table 4.4,
"a missing modality is fed as an all-zeros input of the same shape"), and trains with **ModDrop**: every
training sample is presented in 4 versions, (T, V, A), (T, V, 0), (T, 0, A) and (0, V, A) (§4.4.1). Both are
model-agnostic here because they act on the shared batch dict (:mod:`emofuse.pipeline.dataset`):

* ``mode="zero"``: the modality's values become zeros, its masks stay as they were (the model sees zeros as
  data, the thesis' protocol);
* ``mode="absent"``: values zeros **and** every mask False, ``batch["present"][m] = False`` (the model is told
  the modality is missing; models that understand it, e.g. ``tri_fusion_*``, leave it out of the fusion).

What is touched for modality ``m``: ``batch["features"][m]`` / ``[m + "_mask"]`` (frozen-feature models),
``batch[m]`` (the encoder ``preprocess`` dict raw-input students such as CMD read: float inputs zeroed, integer
token ids set to 0, and for ``absent`` the ``attention_mask`` cleared) and ``batch["present"][m]``.
``batch["teacher"]`` (distillation targets) is never touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DropMode", "ModDropDataset", "drop_modalities", "drop_modality", "moddrop_variants"]

DropMode = Literal["zero", "absent"]
_MODES = ("zero", "absent")


def _rows_like(rows: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
    if rows is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    rows = rows.to(device=device, dtype=torch.bool)
    if rows.shape != (batch_size,):
        raise ValueError(f"rows must be a (B,) = ({batch_size},) bool tensor, got shape {tuple(rows.shape)}")
    return rows


def _blank(x: Tensor, rows: Tensor) -> Tensor:
    """``x`` with the selected rows (first axis) set to zero / False."""
    keep = (~rows).view(-1, *([1] * (x.ndim - 1)))
    return x * keep.to(x.dtype) if x.dtype != torch.bool else x & keep


def drop_modality(
    batch: dict[str, Any], modality: str, mode: DropMode = "absent", rows: Tensor | None = None
) -> dict[str, Any]:
    """A copy of ``batch`` with ``modality`` zeroed or absent (the input batch is not modified).

    Args:
        batch: The shared batch dict (``features``, ``present``, raw ``batch[m]`` encoder inputs).
        modality: Modality name (``"audio"``, ``"text"``, ``"video"``, ...).
        mode: ``"zero"`` (zeros, masks kept) or ``"absent"`` (zeros, masks False, ``present`` False).
        rows: ``(B,)`` bool, the samples to drop it from (``None``: all).

    Returns:
        The new batch; tensors of other modalities are shared, not copied.

    Raises:
        ValueError: Unknown ``mode`` or bad ``rows``.
        KeyError: The batch has no input of ``modality`` (the message lists what it has).

    Example:
        >>> b = {"features": {"audio": torch.ones(2, 3, 1), "audio_mask": torch.ones(2, 3, dtype=torch.bool)}}
        >>> out = drop_modality(b, "audio", "absent", rows=torch.tensor([True, False]))
        >>> out["features"]["audio_mask"].tolist(), out["present"]["audio"].tolist()
        ([[False, False, False], [True, True, True]], [False, True])
    """
    if mode not in _MODES:
        raise ValueError(f"drop mode must be one of {_MODES}, got {mode!r}")
    feats = batch.get("features") or {}
    raw = batch.get(modality)
    if modality not in feats and not isinstance(raw, dict):
        have = sorted({*(k for k in feats if not k.endswith("_mask")), *(k for k in ("audio", "text") if k in batch)})
        raise KeyError(f"cannot drop modality {modality!r}: the batch has inputs for {have}")
    out = dict(batch)
    ref = feats[modality] if modality in feats else next(v for v in raw.values() if isinstance(v, Tensor))  # type: ignore[union-attr]
    B, device = ref.shape[0], ref.device
    sel = _rows_like(rows, B, device)
    if modality in feats:
        f = dict(feats)
        f[modality] = _blank(feats[modality], sel)
        mkey = f"{modality}_mask"
        if mode == "absent":
            mask = feats.get(mkey)
            if mask is None:
                mask = torch.ones(feats[modality].shape[:2], dtype=torch.bool, device=device)
            f[mkey] = _blank(mask.bool(), sel)
        out["features"] = f
    if isinstance(raw, dict):
        r = {}
        for k, v in raw.items():
            if not isinstance(v, Tensor) or v.ndim == 0 or v.shape[0] != B:
                r[k] = v
            elif k == "attention_mask":
                r[k] = _blank(v, sel) if mode == "absent" else v
            else:  # float inputs → 0.0; token ids → 0 (the pad id of BERT-style vocabularies)
                r[k] = _blank(v, sel)
        out[modality] = r
    present = dict(batch.get("present") or {})
    prev = present.get(modality)
    prev = torch.ones(B, dtype=torch.bool, device=device) if prev is None else prev.to(device).bool()
    present[modality] = prev & ~sel if mode == "absent" else prev
    out["present"] = present
    return out


def drop_modalities(
    batch: dict[str, Any], modalities: Sequence[str], mode: DropMode = "absent", rows: Tensor | None = None
) -> dict[str, Any]:
    """:func:`drop_modality` for each of ``modalities`` in turn."""
    for m in modalities:
        batch = drop_modality(batch, m, mode, rows)
    return batch


def moddrop_variants(
    modalities: Sequence[str], subsets: str = "single", include_original: bool = True
) -> list[tuple[str, ...]]:
    """The dropped-modality sets of ModDrop, in a fixed order.

    Args:
        modalities: The model's modalities, e.g. ``("text", "video", "audio")``.
        subsets: ``"single"``: drop one modality at a time (the thesis: (T,V,0), (T,0,A), (0,V,A));
            ``"all"``: every non-empty proper subset (also keeps one modality only, spec §3.5.6).
        include_original: Start with ``()`` (the full-modality sample).

    Example:
        >>> moddrop_variants(["text", "video", "audio"])
        [(), ('text',), ('video',), ('audio',)]
    """
    mods = tuple(modalities)
    if len(mods) < 2:
        raise ValueError(f"ModDrop needs at least two modalities, got {list(mods)}")
    drops: list[tuple[str, ...]]
    if subsets == "single":
        drops = [(m,) for m in mods]
    elif subsets == "all":
        drops = [c for r in range(1, len(mods)) for c in itertools.combinations(mods, r)]
    else:
        raise ValueError(f"moddrop subsets must be 'single' or 'all', got {subsets!r}")
    first: list[tuple[str, ...]] = [()] if include_original else []
    return first + drops


class ModDropDataset(Dataset[dict[str, Any]]):
    """Every item of ``dataset`` once per ModDrop variant (``len = len(dataset) * len(variants)``).

    Item ``i`` is base item ``i % N`` with the modalities of variant ``i // N`` dropped; :meth:`collate`
    collates the base items with the dataset's own ``collate`` and then drops per sample, so a batch can mix
    variants. Batch ``ids`` are ``"<id>"`` for the original and ``"<id>|-<m>[+<m>]"`` for the copies.

    Args:
        dataset: A dataset with ``collate(items)`` (and optionally ``lengths()``, repeated per variant).
        modalities: Modalities to drop (the model's).
        mode: ``"zero"`` (the thesis: zero tensors) or ``"absent"``.
        subsets: ``"single"`` or ``"all"`` (:func:`moddrop_variants`).
        include_original: Keep the full-modality copy (the thesis does: 4 versions of each sample).
    """

    def __init__(
        self,
        dataset: Dataset,
        modalities: Sequence[str],
        mode: DropMode = "zero",
        subsets: str = "single",
        include_original: bool = True,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"moddrop mode must be one of {_MODES}, got {mode!r}")
        if not callable(getattr(dataset, "collate", None)):
            raise TypeError(f"{type(dataset).__name__} has no collate(items) method")
        self.dataset = dataset
        self.mode: DropMode = mode
        self.variants = moddrop_variants(modalities, subsets, include_original)
        self.n = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n * len(self.variants)

    def __getattr__(self, name: str) -> Any:  # teacher_stores, feature_stores, classes, ... of the base
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Base item ``i % N`` plus ``"moddrop": variant index``."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        item = dict(self.dataset[i % self.n])
        item["moddrop"] = i // self.n
        return item

    def lengths(self) -> list[int]:
        """The base dataset's lengths, once per variant (for the dynamic batch sampler)."""
        base = getattr(self.dataset, "lengths", None)
        if not callable(base):
            raise AttributeError(f"{type(self.dataset).__name__} has no lengths()")
        return list(base()) * len(self.variants)

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Collate the base items, then drop each item's variant modalities (per sample)."""
        variant = torch.tensor([it.get("moddrop", 0) for it in items])
        batch = self.dataset.collate([{k: v for k, v in it.items() if k != "moddrop"} for it in items])  # type: ignore[attr-defined]
        for v, drops in enumerate(self.variants):
            rows = variant == v
            if drops and bool(rows.any()):
                batch = drop_modalities(batch, drops, self.mode, rows)
        ids = list(batch.get("ids", []))
        if ids:
            batch["ids"] = [
                ids[j] + ("|-" + "+".join(self.variants[int(variant[j])]) if self.variants[int(variant[j])] else "")
                for j in range(len(ids))
            ]
        return batch
