"""Speaker-dependent random protocols: ``random-stratified`` (CMD's 60/20/20) and ``kfold``.

Registered with :func:`emofuse.data.protocols.register_protocol` when :mod:`emofuse.data.protocols` is imported
(the folds they make are checked by the same :func:`~emofuse.data.protocols.verify_folds`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from emofuse.data.manifest import Utterance
from emofuse.data.protocols import (
    Fold,
    Protocol,
    ProtocolError,
    _check_int,
    _require,
    _rng,
    _stratified_partition,
    register_protocol,
)

__all__ = ["KFold", "RandomStratified"]

logger = logging.getLogger(__name__)


@register_protocol
@dataclass(frozen=True, kw_only=True)
class RandomStratified(Protocol):
    """One seeded, label-stratified random split (CMD's IEMOCAP 60/20/20). Always speaker-dependent.

    Each class is shuffled and cut by ``ratios`` (largest-remainder rounding per class), so class
    proportions match in all three splits.

    Attributes:
        ratios: Train / val / test fractions, summing to 1 (val may be 0).
        seed: Shuffle seed; the fold is named ``seed<seed>``.
    """

    name: ClassVar[str] = "random-stratified"
    description: ClassVar[str] = "seeded label-stratified train/val/test split (speaker-dependent)"

    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            ratios = tuple(float(x) for x in self.ratios)
        except (TypeError, ValueError):
            raise ProtocolError(f"{self.name}: ratios must be three numbers, got {self.ratios!r}") from None
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] == 0 or ratios[2] == 0:
            raise ProtocolError(
                f"{self.name}: ratios must be (train, val, test) >= 0 summing to 1 with train, test > 0, "
                f"got {self.ratios!r}"
            )
        object.__setattr__(self, "ratios", ratios)
        _check_int(self.seed, "seed", self.name, 0)

    def _split(self, records: list[Utterance]) -> list[Fold]:
        train, val, test = _stratified_partition(records, self.ratios, _rng(self.seed))
        return [Fold(f"seed{self.seed}", train, val, test, speaker_dependent=True)]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class KFold(Protocol):
    """Stratified k-fold; validation carved from each fold's training part.

    Without ``group_by`` the folds come from ``StratifiedKFold`` and validation is a stratified
    ``val_fraction`` of the training part; the folds are speaker-dependent. With ``group_by`` the
    folds come from ``StratifiedGroupKFold`` over that field and validation is one split of a
    ``StratifiedGroupKFold`` (about ``round(1 / val_fraction)`` splits) of the training groups, so
    no group is in two splits. Only ``group_by="speaker"`` makes the folds speaker-independent
    (and checked); ``"session"`` / ``"dialogue"`` keep context apart but are speaker-dependent.

    Attributes:
        k: Number of folds (>= 2).
        seed: Seed for fold assignment and the validation carve.
        val_fraction: Share of each training part used for validation, in ``[0, 1)``.
        group_by: ``None``, ``"speaker"``, ``"session"`` or ``"dialogue"``.
    """

    name: ClassVar[str] = "kfold"
    description: ClassVar[str] = "stratified k-fold (speaker-dependent unless group_by='speaker')"
    GROUP_FIELDS: ClassVar[tuple[str, ...]] = ("speaker", "session", "dialogue")

    k: int = 5
    seed: int = 0
    val_fraction: float = 0.2
    group_by: str | None = None

    def __post_init__(self) -> None:
        _check_int(self.k, "k", self.name, 2)
        _check_int(self.seed, "seed", self.name, 0)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ProtocolError(f"{self.name}: val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.group_by is not None and self.group_by not in self.GROUP_FIELDS:
            raise ProtocolError(
                f"{self.name}: group_by must be one of {self.GROUP_FIELDS} or None, got {self.group_by!r}"
            )

    def _split(self, records: list[Utterance]) -> list[Fold]:
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        if len(records) < self.k:
            raise ProtocolError(f"{self.name}: k={self.k} folds need at least {self.k} records, found {len(records)}")
        y = np.array([r.label for r in records])
        x = np.zeros((len(records), 1))
        groups = None
        if self.group_by is not None:
            _require(records, self.group_by, self.name)
            groups = np.array([getattr(r, self.group_by) for r in records])
            n_groups = len(set(groups.tolist()))
            if n_groups < self.k:
                raise ProtocolError(
                    f"{self.name}: k={self.k} folds by {self.group_by} need at least {self.k} {self.group_by}s, "
                    f"found {n_groups}"
                )
            outer = StratifiedGroupKFold(n_splits=self.k, shuffle=True, random_state=self.seed)
        else:
            outer = StratifiedKFold(n_splits=self.k, shuffle=True, random_state=self.seed)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
                splits = list(outer.split(x, y, groups))
        except ValueError as e:
            raise ProtocolError(f"{self.name}: cannot make {self.k} stratified folds: {e}") from None
        folds = []
        for i, (trainval_idx, test_idx) in enumerate(splits):
            trainval = [records[j] for j in trainval_idx]
            train, val = self._carve_val(trainval, groups[trainval_idx] if groups is not None else None, i)
            folds.append(
                Fold(
                    name=f"fold{i + 1}",
                    train=train,
                    val=val,
                    test=sorted(records[j].id for j in test_idx),
                    speaker_dependent=self.group_by != "speaker",
                )
            )
        return folds

    def _carve_val(
        self, trainval: list[Utterance], groups: np.ndarray | None, index: int
    ) -> tuple[list[str], list[str]]:
        from sklearn.model_selection import StratifiedGroupKFold

        vf = float(self.val_fraction)
        if vf == 0.0:
            return sorted(r.id for r in trainval), []
        rng = _rng(self.seed, index)
        if groups is None:
            train, val, _ = _stratified_partition(trainval, (1.0 - vf, vf, 0.0), rng)
            return train, val
        n_splits = max(2, round(1.0 / vf))
        n_groups = len(set(groups.tolist()))
        if n_groups < n_splits:
            raise ProtocolError(
                f"{self.name}: fold{index + 1}: val_fraction={vf} needs {n_splits} {self.group_by}s in the training "
                f"part, found {n_groups}"
            )
        inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        y = np.array([r.label for r in trainval])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            train_idx, val_idx = next(inner.split(np.zeros((len(trainval), 1)), y, groups))
        return sorted(trainval[j].id for j in train_idx), sorted(trainval[j].id for j in val_idx)
