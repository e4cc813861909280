"""Evaluation protocols: named, deterministic ways to split manifest records into folds.

A protocol turns labelled :class:`~emofuse.data.manifest.Utterance` records into a list of
:class:`Fold` objects (train / val / test utterance ids). Protocols are code, looked up by name
(:func:`get_protocol`, :func:`list_protocols`) and configured by keyword options:

* ``iemocap-loso``: one fold per session (fold name = test session); validation speakers carved
  from the training sessions, never from the test session. Speaker-independent.
* ``speaker-out``: leave-one-speaker-out, or ``groups=K`` speaker groups; validation = the next
  speaker / group(s). Speaker-independent.
* ``official``: the corpus' own ``split`` field (``train``; ``dev``/``val`` → val; ``test``).
* ``random-stratified``: seeded label-stratified split (default 60/20/20, CMD's IEMOCAP);
  always speaker-dependent.
* ``kfold``: stratified k-fold, validation carved stratified from the training part;
  speaker-dependent unless ``group_by="speaker"``.

Common rules (:meth:`Protocol.make_folds`):

* Records with ``label=None`` are excluded; the count is logged (logger ``emofuse.data.protocols``).
* Empty input, duplicate ids, and too few sessions / speakers / records raise :class:`ProtocolError`
  naming the problem.
* Id lists are sorted, and records are sorted by id before splitting, so the folds depend only on
  the set of records and the options (``seed``), not on record order.
* **Leakage guard**: a fold that is not speaker-dependent must not share a speaker between train,
  val and test (:func:`verify_folds`); if it does, :class:`ProtocolError` names the fold and the
  shared speakers. ``official`` checks this too: by default (``speaker_dependent=None``), when the
  corpus' own split shares speakers (MELD: Joey, Ross, ... recur in every split) the fold is marked
  ``speaker_dependent=True`` and a ``UserWarning`` says so; ``speaker_dependent=False`` makes the
  overlap an error instead.

Example:
    >>> from emofuse.data.manifest import Utterance
    >>> recs = [
    ...     Utterance(id=f"s{s}{g}_{i}", label=lab, speaker=f"Ses0{s}{g}", session=f"Session{s}")
    ...     for s in range(1, 4) for g in "FM" for i, lab in enumerate(["neu", "hap"])
    ... ]
    >>> folds = make_folds(recs, "iemocap-loso", seed=0)
    >>> [f.name for f in folds], folds[0].test
    (['Session1', 'Session2', 'Session3'], ['s1F_0', 's1F_1', 's1M_0', 's1M_1'])
    >>> len(folds[0].val), folds[0].speaker_dependent
    (2, False)
"""

from __future__ import annotations

import logging
import re
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from emofuse.data.manifest import Utterance

__all__ = [
    "Fold",
    "Protocol",
    "ProtocolError",
    "get_protocol",
    "list_protocols",
    "make_folds",
    "register_protocol",
    "verify_folds",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_MAX_NAMED = 10  # ids / speakers named in an error message


class ProtocolError(ValueError):
    """Records cannot be split as asked, or a fold breaks a protocol rule. The message names it."""


@dataclass(frozen=True)
class Fold:
    """One train / val / test split.

    Attributes:
        name: Fold name (``Session1`` = test session for ``iemocap-loso``, a speaker id for
            ``speaker-out``, ``fold1`` for ``kfold``, ...).
        train: Utterance ids to train on (sorted).
        val: Utterance ids for model selection (sorted; may be empty).
        test: Utterance ids to report on (sorted).
        speaker_dependent: Whether a speaker may occur in both training and test. When ``False``
            the protocol has verified that no speaker is shared between train, val and test.
    """

    name: str
    train: list[str]
    val: list[str]
    test: list[str]
    speaker_dependent: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"name", "train", "val", "test", "speaker_dependent"}``."""
        return {
            "name": self.name,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "speaker_dependent": bool(self.speaker_dependent),
        }


# --------------------------------------------------------------------------------------------------
# helpers


def _natural_key(s: str) -> list[Any]:
    """Sort key that puts ``Session2`` before ``Session10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _named(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_NAMED])
    return shown + (f" ... (+{len(items) - _MAX_NAMED})" if len(items) > _MAX_NAMED else "")


def _group(records: Iterable[Utterance], attr: str) -> dict[Any, list[Utterance]]:
    out: dict[Any, list[Utterance]] = {}
    for r in records:
        out.setdefault(getattr(r, attr), []).append(r)
    return out


def _require(records: Sequence[Utterance], attr: str, protocol: str) -> None:
    """Every record must have ``attr`` set."""
    missing = [r.id for r in records if getattr(r, attr) is None]
    if missing:
        raise ProtocolError(f"{protocol}: {len(missing)} record(s) have no {attr!r} (e.g. {_named(missing)})")


def _labelled(records: Iterable[Utterance], protocol: str) -> list[Utterance]:
    """Labelled records sorted by id; unlabelled ones are excluded and counted."""
    records = list(records)
    if not records:
        raise ProtocolError(f"{protocol}: no records to split")
    dup = sorted(i for i, n in Counter(r.id for r in records).items() if n > 1)
    if dup:
        raise ProtocolError(f"{protocol}: {len(dup)} duplicate id(s): {_named(dup)}")
    unlabelled = [r.id for r in records if r.label is None]
    if unlabelled:
        logger.warning(
            "%s: excluded %d unlabelled record(s) of %d (e.g. %s)",
            protocol,
            len(unlabelled),
            len(records),
            _named(unlabelled),
        )
    labelled = sorted((r for r in records if r.label is not None), key=lambda r: r.id)
    if not labelled:
        raise ProtocolError(f"{protocol}: no labelled records ({len(unlabelled)} unlabelled excluded)")
    return labelled


def _largest_remainder(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items into parts proportional to ``ratios`` (sums to ``n``)."""
    raw = n * np.asarray(ratios, dtype=np.float64)
    base = np.floor(raw + 1e-9).astype(np.int64)
    rest = n - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:rest]] += 1
    return base.tolist()


def _stratified_partition(
    records: Sequence[Utterance], ratios: Sequence[float], rng: np.random.Generator
) -> list[list[str]]:
    """Shuffle each class and cut it by ``ratios``; returns one sorted id list per ratio."""
    parts: list[list[str]] = [[] for _ in ratios]
    by_label = _group(records, "label")
    for label in sorted(by_label):
        ids = [r.id for r in by_label[label]]
        perm = rng.permutation(len(ids))
        start = 0
        for j, count in enumerate(_largest_remainder(len(ids), ratios)):
            parts[j].extend(ids[k] for k in perm[start : start + count])
            start += count
    return [sorted(p) for p in parts]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _check_int(value: Any, name: str, protocol: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ProtocolError(f"{protocol}: {name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# verification


def verify_folds(records: Iterable[Utterance], folds: Sequence[Fold], protocol: str = "folds") -> None:
    """Check folds against the records: known ids, disjoint splits, non-empty train / test, no leakage.

    For every fold with ``speaker_dependent=False``, no speaker may occur in two of train, val and
    test, and every record of the fold must name its speaker.

    Args:
        records: The records the folds were made from.
        folds: Folds to check (e.g. read back with :func:`folds_from_json`).
        protocol: Name used in error messages.

    Raises:
        ProtocolError: Naming the fold and the problem (unknown ids, ids in two splits, empty train or
            test, missing speakers, speakers shared between splits).
    """
    by_id = {r.id: r for r in records}
    names = [f.name for f in folds]
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise ProtocolError(f"{protocol}: duplicate fold name(s): {_named(dup)}")
    for fold in folds:
        where = f"{protocol}: fold {fold.name!r}"
        parts = {s: list(getattr(fold, s)) for s in SPLIT_NAMES}
        for split in ("train", "test"):
            if not parts[split]:
                raise ProtocolError(f"{where}: the {split} split is empty")
        for split, ids in parts.items():
            unknown = sorted({i for i in ids if i not in by_id})
            if unknown:
                raise ProtocolError(f"{where}: {len(unknown)} {split} id(s) are not in the records: {_named(unknown)}")
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            if twice:
                raise ProtocolError(f"{where}: {len(twice)} id(s) occur twice in {split}: {_named(twice)}")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(set(parts[a]) & set(parts[b]))
            if both:
                raise ProtocolError(f"{where}: {len(both)} id(s) are in both {a} and {b}: {_named(both)}")
        if fold.speaker_dependent:
            continue
        no_speaker = sorted(i for ids in parts.values() for i in ids if by_id[i].speaker is None)
        if no_speaker:
            raise ProtocolError(
                f"{where}: {len(no_speaker)} record(s) have no speaker, so speaker independence cannot be "
                f"verified (e.g. {_named(no_speaker)})"
            )
        speakers = {s: {by_id[i].speaker for i in ids} for s, ids in parts.items()}
        for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
            shared = sorted(speakers[a] & speakers[b], key=_natural_key)  # type: ignore[arg-type]
            if shared:
                raise ProtocolError(
                    f"{where}: speaker(s) {_named(shared)} appear in both {a} and {b}; this fold is declared "
                    "speaker-independent (use a speaker-dependent protocol such as 'random-stratified' if "
                    "shared speakers are intended)"
                )


# --------------------------------------------------------------------------------------------------
# base class and registry


@dataclass(frozen=True)
class Protocol(ABC):
    """A named way of splitting records into folds. Options are the dataclass fields.

    Subclasses set :attr:`name` and :attr:`description`, declare their options as keyword-only
    dataclass fields, check them in ``__post_init__`` and implement :meth:`_split`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def options(self) -> dict[str, Any]:
        """The protocol's option values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def make_folds(self, records: Iterable[Utterance]) -> list[Fold]:
        """Split ``records`` into folds and verify them (see the module docstring for the rules).

        Args:
            records: Manifest records; unlabelled ones are excluded (and counted in the log).

        Returns:
            The folds, in a fixed order.
        """
        labelled = _labelled(records, self.name)
        folds = self._split(labelled)
        verify_folds(labelled, folds, protocol=self.name)
        return folds

    @abstractmethod
    def _split(self, records: list[Utterance]) -> list[Fold]:
        """Make the folds from labelled records sorted by id."""


_REGISTRY: dict[str, type[Protocol]] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator that registers a protocol under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no protocol name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"protocol {cls.name!r} is already registered ({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def list_protocols() -> list[str]:
    """Names of the registered protocols, sorted."""
    return sorted(_REGISTRY)


def get_protocol(name: str, **options: Any) -> Protocol:
    """Build a protocol by name.

    Args:
        name: A name from :func:`list_protocols`.
        **options: The protocol's options (e.g. ``seed=1``, ``val_speakers=2``); ``None`` values are
            dropped, so the protocol's default applies.

    Returns:
        The configured protocol.

    Raises:
        ProtocolError: Unknown name or option (the valid ones are listed), or a bad option value.
    """
    if name not in _REGISTRY:
        raise ProtocolError(f"unknown protocol {name!r}; available: {', '.join(list_protocols())}")
    cls = _REGISTRY[name]
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ProtocolError(f"protocol {name!r} has no option(s) {unknown}; valid options: {valid or 'none'}")
    return cls(**{k: v for k, v in options.items() if v is not None})


def make_folds(records: Iterable[Utterance], protocol: str | Protocol, **options: Any) -> list[Fold]:
    """Split records into folds with a protocol given by name (plus options) or as an object.

    Args:
        records: Manifest records.
        protocol: Protocol name or a :class:`Protocol`.
        **options: Protocol options (only with a name).

    Returns:
        The verified folds.
    """
    if isinstance(protocol, Protocol):
        if options:
            raise ProtocolError(f"pass options to get_protocol(), not with a Protocol object: {sorted(options)}")
        proto = protocol
    else:
        proto = get_protocol(protocol, **options)
    return proto.make_folds(records)


# --------------------------------------------------------------------------------------------------
# protocols


@register_protocol
@dataclass(frozen=True, kw_only=True)
class IemocapLoso(Protocol):
    """Leave-one-session-out (IEMOCAP: 5 sessions, 2 speakers each).

    Fold ``k`` tests on session ``k``; validation speakers are taken from the other sessions and
    removed from training, so train, val and test are speaker-disjoint.

    Attributes:
        val_speakers: Number of validation speakers per fold, drawn at random (seeded, per fold) from
            the training sessions' speakers; ``0`` for no validation. Or explicit speaker ids: each
            fold uses those of them that are in its training sessions.
        seed: Seed for the validation speaker draw.
    """

    name: ClassVar[str] = "iemocap-loso"
    description: ClassVar[str] = "one fold per session; validation speakers from the training sessions"

    val_speakers: int | tuple[str, ...] = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.val_speakers, str) or not isinstance(self.val_speakers, (int, np.integer)):
            object.__setattr__(self, "val_speakers", _speaker_tuple(self.val_speakers, self.name))
        else:
            _check_int(self.val_speakers, "val_speakers", self.name, 0)
        _check_int(self.seed, "seed", self.name, 0)

    def _split(self, records: list[Utterance]) -> list[Fold]:
        _require(records, "session", self.name)
        explicit = isinstance(self.val_speakers, tuple)
        if explicit or self.val_speakers:
            _require(records, "speaker", self.name)
        if explicit:
            known = {r.speaker for r in records}
            unknown = [s for s in self.val_speakers if s not in known]  # type: ignore[union-attr]
            if unknown:
                raise ProtocolError(f"{self.name}: val_speakers {unknown} are not speakers of the records")
        by_session = _group(records, "session")
        sessions = sorted(by_session, key=_natural_key)
        if len(sessions) < 2:
            raise ProtocolError(f"{self.name}: needs at least 2 sessions, found {len(sessions)} ({_named(sessions)})")
        folds = []
        for i, test_session in enumerate(sessions):
            train_recs = [r for s in sessions if s != test_session for r in by_session[s]]
            val_spk = self._val_speakers(train_recs, test_session, i)
            folds.append(
                Fold(
                    name=test_session,
                    train=sorted(r.id for r in train_recs if r.speaker not in val_spk),
                    val=sorted(r.id for r in train_recs if r.speaker in val_spk),
                    test=sorted(r.id for r in by_session[test_session]),
                    speaker_dependent=False,
                )
            )
        return folds

    def _val_speakers(self, train_recs: list[Utterance], fold: str, index: int) -> set[str]:
        candidates = sorted({r.speaker for r in train_recs}, key=_natural_key)  # type: ignore[arg-type]
        if isinstance(self.val_speakers, tuple):
            chosen = {s for s in self.val_speakers if s in candidates}
            if not chosen:
                raise ProtocolError(
                    f"{self.name}: fold {fold!r}: none of val_speakers {list(self.val_speakers)} is in the "
                    "training sessions"
                )
        else:
            k = int(self.val_speakers)
            if k == 0:
                return set()
            if k >= len(candidates):
                raise ProtocolError(
                    f"{self.name}: fold {fold!r}: val_speakers={k} leaves no training speaker (the training "
                    f"sessions have {len(candidates)} speaker(s))"
                )
            picks = _rng(self.seed, index).choice(len(candidates), size=k, replace=False)
            chosen = {candidates[j] for j in picks}
        if len(chosen) == len(candidates):
            raise ProtocolError(f"{self.name}: fold {fold!r}: every training speaker would be a validation speaker")
        return chosen


def _speaker_tuple(value: Any, protocol: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    try:
        out = tuple(value)
    except TypeError:
        raise ProtocolError(f"{protocol}: val_speakers must be a count or speaker ids, got {value!r}") from None
    if not out or not all(isinstance(s, str) for s in out):
        raise ProtocolError(
            f"{protocol}: val_speakers must be a count or a non-empty list of speaker ids, got {value!r}"
        )
    return out


@register_protocol
@dataclass(frozen=True, kw_only=True)
class SpeakerOut(Protocol):
    """Leave-one-speaker-out, or leave-one-group-out over ``groups`` speaker groups.

    Groups are built by shuffling the speakers (seeded) and assigning each, largest first, to the
    group with the fewest utterances so far, which balances group sizes. Fold ``i`` tests on group
    ``i`` and validates on the next ``val_groups`` groups (cyclically), so every group is the test
    fold exactly once and train / val / test are speaker-disjoint.

    Attributes:
        groups: Number of speaker groups; ``None`` = one group per speaker (fold name = speaker id).
            Fold names are ``group1`` ... ``groupK`` otherwise.
        val_groups: Speakers / groups used for validation in each fold (``0``: no validation).
        seed: Seed for the grouping (unused for leave-one-speaker-out).
    """

    name: ClassVar[str] = "speaker-out"
    description: ClassVar[str] = "leave one speaker (or speaker group) out; validation on the next one"

    groups: int | None = None
    val_groups: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.groups is not None:
            _check_int(self.groups, "groups", self.name, 2)
        _check_int(self.val_groups, "val_groups", self.name, 0)
        _check_int(self.seed, "seed", self.name, 0)

    def _split(self, records: list[Utterance]) -> list[Fold]:
        _require(records, "speaker", self.name)
        by_speaker = _group(records, "speaker")
        speakers = sorted(by_speaker, key=_natural_key)
        if self.groups is None:
            members = [[s] for s in speakers]
            names = list(speakers)
            unit = "speakers"
        else:
            if self.groups > len(speakers):
                raise ProtocolError(
                    f"{self.name}: groups={self.groups} but the records have {len(speakers)} speaker(s)"
                )
            members = self._make_groups(speakers, {s: len(v) for s, v in by_speaker.items()})
            names = [f"group{i + 1}" for i in range(len(members))]
            unit = "groups"
        n = len(members)
        if n < self.val_groups + 2:
            raise ProtocolError(
                f"{self.name}: needs at least {self.val_groups + 2} {unit} (test, {self.val_groups} val, train), "
                f"found {n} ({_named(names)})"
            )
        folds = []
        for i in range(n):
            val_idx = {(i + j) % n for j in range(1, self.val_groups + 1)}
            ids = {"train": [], "val": [], "test": []}  # type: dict[str, list[str]]
            for g, group in enumerate(members):
                split = "test" if g == i else "val" if g in val_idx else "train"
                ids[split].extend(r.id for s in group for r in by_speaker[s])
            folds.append(
                Fold(names[i], sorted(ids["train"]), sorted(ids["val"]), sorted(ids["test"]), speaker_dependent=False)
            )
        return folds

    def _make_groups(self, speakers: list[str], counts: dict[str, int]) -> list[list[str]]:
        order = [speakers[j] for j in _rng(self.seed).permutation(len(speakers))]
        order.sort(key=lambda s: -counts[s])  # stable: ties keep the shuffled order
        k = int(self.groups)  # type: ignore[arg-type]
        groups: list[list[str]] = [[] for _ in range(k)]
        sizes = [0] * k
        for s in order:
            g = min(range(k), key=lambda j: (sizes[j], len(groups[j]), j))
            groups[g].append(s)
            sizes[g] += counts[s]
        return [sorted(g, key=_natural_key) for g in groups]


@register_protocol
@dataclass(frozen=True, kw_only=True)
class Official(Protocol):
    """The corpus' own split, from each record's ``split`` field (``dev`` and ``val`` → val).

    Attributes:
        speaker_dependent: ``None`` (default): check the split; if train / val and test share
            speakers (MELD, whose characters recur in every split) or speakers are unknown, mark the
            fold speaker-dependent and warn. ``False``: require speaker independence (shared or
            missing speakers are an error). ``True``: declare it speaker-dependent without checking.
    """

    name: ClassVar[str] = "official"
    description: ClassVar[str] = "the corpus' own train/dev/test split (split field)"

    speaker_dependent: bool | None = None

    def __post_init__(self) -> None:
        if self.speaker_dependent is not None and not isinstance(self.speaker_dependent, bool):
            raise ProtocolError(f"{self.name}: speaker_dependent must be True, False or None")

    def _split(self, records: list[Utterance]) -> list[Fold]:
        missing = [r.id for r in records if r.split is None]
        if missing:
            raise ProtocolError(
                f"{self.name}: {len(missing)} record(s) have no split field (e.g. {_named(missing)}); this corpus "
                "has no official split here, use e.g. 'speaker-out' or 'kfold'"
            )
        where = {"train": "train", "dev": "val", "val": "val", "test": "test"}
        ids: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for r in records:
            ids[where[r.split]].append(r.id)  # type: ignore[index]
        for split in ("train", "test"):
            if not ids[split]:
                raise ProtocolError(f"{self.name}: no labelled record has split={split!r}")
        dependent = self.speaker_dependent
        if dependent is None:
            dependent = False
            if any(r.speaker is None for r in records):
                dependent = True
                warnings.warn(
                    f"{self.name}: some records have no speaker, so speaker independence of the official split "
                    "cannot be checked; the fold is marked speaker-dependent",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                spk = {r.id: r.speaker for r in records}
                test_spk = {spk[i] for i in ids["test"]}
                shared = sorted(test_spk & {spk[i] for i in ids["train"] + ids["val"]}, key=_natural_key)  # type: ignore[arg-type]
                if shared:
                    dependent = True
                    warnings.warn(
                        f"{self.name}: {len(shared)} speaker(s) occur in both the test split and train/val "
                        f"({_named(shared)}); the fold is marked speaker-dependent",
                        UserWarning,
                        stacklevel=3,
                    )
        return [Fold("official", sorted(ids["train"]), sorted(ids["val"]), sorted(ids["test"]), dependent)]


# The speaker-dependent random splits live in their own module; importing it registers them.
from emofuse.data import _random_protocols  # noqa: E402, F401
