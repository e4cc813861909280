"""What every corpus preparation returns, and the error it raises on a broken corpus."""

from __future__ import annotations

from dataclasses import dataclass, field

from emofuse.data.manifest import Utterance, ValidationReport

__all__ = ["CorpusError", "PreparedCorpus"]


class CorpusError(ValueError):
    """The corpus on disk is not in the expected layout. The message names the file or folder."""


@dataclass
class PreparedCorpus:
    """Records of a prepared corpus plus the report of everything that was skipped or is suspect.

    Attributes:
        name: Corpus name (``iemocap``, ``meld``, ...).
        records: The manifest records, in corpus order.
        classes: Ordered class names of the label scheme used (class id = index).
        scheme: Label scheme name.
        report: Validation report (missing / bad audio, empty text, unknown labels, duplicates, notes).
        dropped: Raw label → number of utterances dropped because the scheme does not map it.
    """

    name: str
    records: list[Utterance]
    classes: tuple[str, ...]
    scheme: str
    report: ValidationReport = field(default_factory=ValidationReport)
    dropped: dict[str, int] = field(default_factory=dict)

    def label_counts(self, split: str | None = None) -> dict[str, int]:
        """Number of records per class (optionally for one split), in class order."""
        counts = dict.fromkeys(self.classes, 0)
        for r in self.records:
            if r.label is not None and (split is None or r.split == split):
                counts[r.label] = counts.get(r.label, 0) + 1
        return counts
