"""Label schemes: how a corpus' raw labels map to the classes a model is trained on.

A scheme is an ordered class list (class id = position) plus a mapping from raw labels to classes;
raw labels outside the mapping are dropped (and counted by the corpus preparation report).

Example:
    >>> s = get_scheme("iemocap4")
    >>> s.classes
    ('neutral', 'happy', 'sad', 'angry')
    >>> s.map("exc")
    'happy'
    >>> s.map("fru") is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LabelScheme", "get_scheme", "list_schemes", "register_scheme"]


@dataclass(frozen=True)
class LabelScheme:
    """An ordered set of classes and the raw-label mapping that produces them.

    Attributes:
        name: Scheme name used on the command line (``--labels``).
        classes: Class names; the class id is the index.
        mapping: Raw label (case-insensitive) → class name. Raw labels not present are dropped.
        description: One line for ``--help`` and reports.
    """

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        bad = sorted({v for v in self.mapping.values() if v not in self.classes})
        if bad:
            raise ValueError(f"label scheme {self.name!r}: mapping targets {bad} are not in classes {self.classes}")
        object.__setattr__(self, "mapping", {k.lower(): v for k, v in self.mapping.items()})

    def map(self, raw: str | None) -> str | None:
        """Class name for a raw label, or ``None`` when the scheme drops it."""
        if raw is None:
            return None
        return self.mapping.get(raw.strip().lower())

    def index(self, label: str) -> int:
        """Class id of a mapped label."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not in scheme {self.name!r} {self.classes}") from None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


_SCHEMES: dict[str, LabelScheme] = {}


def register_scheme(scheme: LabelScheme) -> LabelScheme:
    """Add a scheme to the registry (an existing name is an error)."""
    if scheme.name in _SCHEMES and _SCHEMES[scheme.name] != scheme:
        raise ValueError(f"label scheme {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> LabelScheme:
    """Look a scheme up by name."""
    _load_corpus_schemes()
    try:
        return _SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown label scheme {name!r}; known: {', '.join(sorted(_SCHEMES))}") from None


def list_schemes() -> list[str]:
    """Names of all registered schemes."""
    _load_corpus_schemes()
    return sorted(_SCHEMES)


def _load_corpus_schemes() -> None:
    # Corpus modules register their own schemes on import.
    import emofuse.data.corpora  # noqa: F401


# Schemes shared by several corpora live here; corpus-specific ones live in their corpus module.
IEMOCAP4 = register_scheme(
    LabelScheme(
        "iemocap4",
        ("neutral", "happy", "sad", "angry"),
        {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
        "IEMOCAP 4-class, excited merged into happy (5,531 utterances on the full corpus)",
    )
)
