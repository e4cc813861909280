"""Dialogue-level batches: utterance vectors grouped by dialogue, in turn order, padded with masks.

Context models of emotion recognition in conversation (CM-RoBERTa, bc-LSTM, DialogueRNN) read a whole dialogue at
once and predict every utterance of it. :func:`group_dialogues` groups manifest records by ``dialogue`` and orders
them by ``turn`` (any corpus whose manifest has both: MELD, IEMOCAP, MOSEI videos). One
:class:`DialogueDataset` item is one dialogue; :meth:`DialogueDataset.collate` pads ``B`` dialogues to the longest
(``N`` turns)::

    {"ids": list[str] (U,)              ids of the U valid utterances, dialogue by dialogue, turn by turn,
     "labels": (U,) long                their class ids (-100 where unlabelled; absent when nothing is labelled),
     "features": {m: (B, N, D_m), f"{m}_mask": (B, N) bool},
     "dialogue_ids": list[str] (B,),  "dialogue_mask": (B, N) bool,
     "dialogue_labels": (B, N) long (-100 at padding), "turns": (B, N) long (-1 at padding),
     "targets": (U,) float, "dialogue_targets": (B, N) float (NaN at padding and where missing; only with a
                                        regression target)}

The flattened ``ids`` / ``labels`` are in the row-major order of the valid positions of ``dialogue_mask``, which is
how a dialogue model flattens its ``(B, N, C)`` scores (``scores[mask]``): the training engine, the runner and
``evaluate`` then score per utterance exactly as for utterance-level models, and padding never reaches a loss
or a metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from emofuse.data.labels import LabelScheme
from emofuse.data.manifest import Utterance
from emofuse.pipeline.dataset import IGNORE_LABEL, DatasetItemError, target_value

__all__ = ["Dialogue", "DialogueDataset", "DialogueError", "form_dialogues", "group_dialogues", "utterance_vector"]

Missing = Literal["zero", "drop", "error"]


class DialogueError(ValueError):
    """Records cannot be grouped into dialogues (no dialogue or turn, repeated turn). Names the utterance."""


class _Store(Protocol):
    def get(self, utt_id: str) -> Tensor: ...  # noqa: D102

    def __contains__(self, utt_id: object) -> bool: ...


@dataclass(frozen=True)
class Dialogue:
    """One conversation: its id and its utterance records in turn order."""

    id: str
    records: tuple[Utterance, ...]

    def __len__(self) -> int:
        return len(self.records)


def group_dialogues(records: Iterable[Utterance]) -> list[Dialogue]:
    """Group records by ``dialogue``, each ordered by ``turn``; dialogues keep the order of their first record.

    Args:
        records: Manifest records with ``dialogue`` and ``turn`` set.

    Returns:
        The dialogues.

    Raises:
        DialogueError: A record has no ``dialogue`` or no ``turn``, or two records share a dialogue and turn.

    Example:
        >>> recs = [Utterance(id=i, text="x", dialogue=d, turn=t) for i, d, t in
        ...         [("b1", "b", 1), ("a0", "a", 0), ("b0", "b", 0)]]
        >>> [(d.id, [r.id for r in d.records]) for d in group_dialogues(recs)]
        [('b', ['b0', 'b1']), ('a', ['a0'])]
    """
    groups: dict[str, list[Utterance]] = {}
    for rec in records:
        if rec.dialogue is None:
            raise DialogueError(
                f"utterance {rec.id!r} has no dialogue: dialogue-level models need a manifest with dialogue and "
                "turn fields (MELD, IEMOCAP, or a CSV with those columns); for a corpus of single utterances set "
                "data.dialogue_size (pseudo-dialogues of consecutive utterances, form_dialogues)"
            )
        if rec.turn is None:
            raise DialogueError(f"utterance {rec.id!r} (dialogue {rec.dialogue!r}) has no turn")
        groups.setdefault(rec.dialogue, []).append(rec)
    out = []
    for dia, recs in groups.items():
        recs.sort(key=lambda r: int(r.turn))  # type: ignore[arg-type]
        for a, b in zip(recs, recs[1:], strict=False):
            if a.turn == b.turn:
                raise DialogueError(f"utterances {a.id!r} and {b.id!r} are both turn {a.turn} of dialogue {dia!r}")
        out.append(Dialogue(dia, tuple(recs)))
    return out


def form_dialogues(records: Iterable[Utterance], size: int, by: str | None = "speaker") -> list[Utterance]:
    """Give records without a dialogue one made of consecutive utterances (for corpora of single utterances).

    Utterances are grouped by the field ``by`` (``speaker`` keeps each pseudo-dialogue inside one speaker, so a
    speaker-independent protocol never splits it; ``None``: one group), taken in manifest order, and cut into runs
    of ``size``: dialogue ``"<group>-d<k>"``, turns ``0..size-1``. Records that already have a dialogue keep it.

    Args:
        records: Manifest records.
        size: Utterances per pseudo-dialogue (the last run of a group may be shorter).
        by: Record field (or ``extra`` key) to group by first, or ``None``.

    Returns:
        Copies of the records, in the input order.

    Example:
        >>> recs = [Utterance(id=f"u{i}", text="x", speaker="ab"[i % 2]) for i in range(5)]
        >>> [(r.id, r.dialogue, r.turn) for r in form_dialogues(recs, size=2)]  # doctest: +NORMALIZE_WHITESPACE
        [('u0', 'a-d0', 0), ('u1', 'b-d0', 0), ('u2', 'a-d0', 1), ('u3', 'b-d0', 1), ('u4', 'a-d1', 0)]
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    counts: dict[str, int] = {}
    out = []
    for rec in records:
        if rec.dialogue is not None:
            out.append(rec)
            continue
        group = "all" if by is None else getattr(rec, by, None) if by in Utterance.model_fields else rec.extra.get(by)
        key = str(group) if group is not None else "none"
        k = counts.get(key, 0)
        counts[key] = k + 1
        out.append(rec.model_copy(update={"dialogue": f"{key}-d{k // size}", "turn": k % size}))
    return out


def utterance_vector(store: Any, utt: str) -> Tensor:
    """The utterance vector ``(D,)``: the store's pooled vector, else the mean of its frames."""
    get_pooled = getattr(store, "get_pooled", None)
    if callable(get_pooled):
        return get_pooled(utt).float()
    frames = store.get(utt)
    return (frames if frames.ndim == 1 else frames.float().mean(0)).float()


class DialogueDataset(Dataset[dict[str, Any]]):
    """Dialogues of utterance-level feature vectors (one vector per utterance and modality).

    Args:
        records: Utterances with ``dialogue`` and ``turn`` (any order; grouped by :func:`group_dialogues`).
        classes: Class names (index = position) or a :class:`LabelScheme`; ``None``: unlabelled.
        feature_stores: Per modality a feature store (:class:`~emofuse.features.FeatureStore`: its ``pooled``
            vector is used; other stores: the mean over the frames ``get`` returns).
        missing: What to do with an utterance that has no features in a store: ``"zero"`` (keep it, in the
            dialogue and in the scores, with a zero vector; spec cm-roberta B11), ``"drop"`` (leave it out of its
            dialogue) or ``"error"``.
        max_turns: Split dialogues longer than this into consecutive chunks (``None``: never).
        target: Continuous regression target per utterance, a record field or ``"extra.<key>"`` (as for
            :class:`~emofuse.pipeline.dataset.MultimodalDataset`); ``None``: no ``targets``.

    Attributes:
        dialogues: The :class:`Dialogue` items.
        missing: ``{utterance id: [modalities without features]}``.

    Raises:
        ValueError: A record's label is not one of ``classes``, its target is not a number, or ``missing`` is
            unknown.
        DialogueError: Records cannot be grouped (see :func:`group_dialogues`).
        DatasetItemError: ``missing="error"`` and an utterance has no features (names it and the modality).
    """

    def __init__(
        self,
        records: Sequence[Utterance],
        classes: Sequence[str] | LabelScheme | None,
        feature_stores: Mapping[str, _Store],
        missing: Missing = "zero",
        max_turns: int | None = None,
        target: str | None = None,
    ) -> None:
        if missing not in ("zero", "drop", "error"):
            raise ValueError(f"missing must be 'zero', 'drop' or 'error', got {missing!r}")
        if not feature_stores:
            raise ValueError("DialogueDataset needs at least one feature store")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None, got {max_turns!r}")
        self.classes = tuple(classes.classes if isinstance(classes, LabelScheme) else classes or ())
        self.stores = dict(feature_stores)
        self.missing_policy = missing
        index = {c: i for i, c in enumerate(self.classes)}
        self.label_index: dict[str, int | None] = {}
        for rec in records:
            if not self.classes or rec.label is None:
                self.label_index[rec.id] = None
            elif rec.label not in index:
                raise ValueError(f"utterance {rec.id!r} has label {rec.label!r}, not one of the classes {self.classes}")
            else:
                self.label_index[rec.id] = index[rec.label]
        self.target = target
        self.targets: dict[str, float | None] = {r.id: target_value(r, target) for r in records} if target else {}
        self.missing: dict[str, list[str]] = {}
        for rec in records:
            absent = [m for m, s in self.stores.items() if rec.id not in s]
            if absent:
                if missing == "error":
                    raise DatasetItemError(rec.id, f"no cached features for {absent}")
                self.missing[rec.id] = absent
        dialogues = group_dialogues(records)
        if missing == "drop" and self.missing:
            dialogues = [
                Dialogue(d.id, kept)
                for d in dialogues
                if (kept := tuple(r for r in d.records if r.id not in self.missing))
            ]
        if max_turns is not None:
            dialogues = [
                Dialogue(d.id if len(d) <= max_turns else f"{d.id}#{k // max_turns}", d.records[k : k + max_turns])
                for d in dialogues
                for k in range(0, len(d), max_turns)
            ]
        self.dialogues = dialogues
        self.dims: dict[str, int] = {}
        if self.missing:
            what = "left out" if missing == "drop" else "given zero vectors"
            first = ", ".join(list(self.missing)[:5]) + (" ..." if len(self.missing) > 5 else "")
            warnings.warn(
                f"{len(self.missing)} of {len(records)} utterances have no features in every store and are {what} "
                f"({first})",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.dialogues)

    @property
    def ids(self) -> list[str]:
        """Utterance ids of every dialogue, dialogue by dialogue, in turn order."""
        return [r.id for d in self.dialogues for r in d.records]

    @property
    def num_utterances(self) -> int:
        """Number of utterances served."""
        return sum(len(d) for d in self.dialogues)

    def _dim(self, modality: str) -> int:
        if modality not in self.dims:
            store = self.stores[modality]
            dim = getattr(store, "output_dim", None)
            if dim is None:
                present = next((r.id for d in self.dialogues for r in d.records if r.id in store), None)
                if present is None:
                    raise DatasetItemError("?", f"no utterance has features for {modality!r}")
                dim = int(utterance_vector(store, present).shape[-1])
            self.dims[modality] = int(dim)
        return self.dims[modality]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One dialogue: ``{"dialogue", "ids", "turns", "labels": [int | None], "features": {m: (N, D)}}``."""
        dia = self.dialogues[i]
        feats: dict[str, Tensor] = {}
        for m, store in self.stores.items():
            rows = []
            for rec in dia.records:
                if rec.id in store:
                    rows.append(utterance_vector(store, rec.id))
                else:
                    rows.append(torch.zeros(self._dim(m)))
            feats[m] = torch.stack(rows)  # (N, D)
        return {
            "dialogue": dia.id,
            "ids": [r.id for r in dia.records],
            "turns": [int(r.turn) for r in dia.records],  # type: ignore[arg-type]
            "labels": [self.label_index.get(r.id) for r in dia.records],
            "targets": [self.targets.get(r.id) for r in dia.records],
            "features": feats,
        }

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Pad dialogues into the batch dict of the module docstring."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        n_max = max(len(it["ids"]) for it in items)
        B = len(items)
        mask = torch.zeros(B, n_max, dtype=torch.bool)  # (B, N)
        dia_labels = torch.full((B, n_max), IGNORE_LABEL, dtype=torch.long)  # (B, N)
        turns = torch.full((B, n_max), -1, dtype=torch.long)  # (B, N)
        features: dict[str, Tensor] = {}
        for m in items[0]["features"]:
            dim = items[0]["features"][m].shape[-1]
            x = torch.zeros(B, n_max, dim)  # (B, N, D)
            for b, it in enumerate(items):
                x[b, : len(it["ids"])] = it["features"][m]
            features[m] = x
        ids: list[str] = []
        any_label = False
        for b, it in enumerate(items):
            n = len(it["ids"])
            mask[b, :n] = True
            turns[b, :n] = torch.tensor(it["turns"], dtype=torch.long)
            for k, lab in enumerate(it["labels"]):
                if lab is not None:
                    dia_labels[b, k] = lab
                    any_label = True
            ids += it["ids"]
        for m in list(features):
            features[f"{m}_mask"] = mask
        batch: dict[str, Any] = {
            "ids": ids,
            "features": features,
            "dialogue_ids": [it["dialogue"] for it in items],
            "dialogue_mask": mask,
            "dialogue_labels": dia_labels,
            "turns": turns,
        }
        if any_label:
            batch["labels"] = dia_labels[mask]  # (U,), row-major like the model's flattened logits
        if self.target:
            dia_targets = torch.full((B, n_max), float("nan"))  # (B, N)
            for b, it in enumerate(items):
                for k, value in enumerate(it.get("targets") or []):
                    if value is not None:
                        dia_targets[b, k] = value
            batch["dialogue_targets"] = dia_targets
            batch["targets"] = dia_targets[mask]  # (U,)
        return batch
