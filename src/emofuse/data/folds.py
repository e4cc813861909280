"""Fold tables and fold (de)serialisation: class counts per split per fold, JSON in and out.

Example:
    >>> from emofuse.data.manifest import Utterance
    >>> from emofuse.data.protocols import make_folds
    >>> recs = [Utterance(id=f"{s}_{i}", label=lab, speaker=s) for s in "abc" for i, lab in enumerate("xy")]
    >>> folds = make_folds(recs, "speaker-out", val_groups=0)
    >>> folds_to_json("speaker-out", folds)["folds"][0]["test"]
    ['a_0', 'a_1']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from emofuse.data.manifest import Utterance
from emofuse.data.protocols import SPLIT_NAMES, Fold, ProtocolError, _named

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["fold_table", "folds_from_json", "folds_to_json", "render_fold_table"]


# --------------------------------------------------------------------------------------------------
# tables and JSON


def fold_table(
    records: Iterable[Utterance], folds: Sequence[Fold], classes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Class counts per split per fold.

    Args:
        records: The records the folds were made from.
        folds: The folds.
        classes: Class order for the counts; ``None`` = sorted labels found in the folds.

    Returns:
        One row per (fold, split), in fold order then train / val / test:
        ``{"fold", "split", "n", "speakers", "speaker_dependent", "counts": {class: n}}``.

    Raises:
        ProtocolError: A fold id is not in the records, or a label is not in ``classes``.
    """
    by_id = {r.id: r for r in records}
    rows_ids = []
    for fold in folds:
        for split in SPLIT_NAMES:
            ids = list(getattr(fold, split))
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise ProtocolError(f"fold {fold.name!r}: {split} ids not in the records: {_named(unknown)}")
            rows_ids.append((fold, split, ids))
    if classes is None:
        found: set[str] = {lab for _, _, ids in rows_ids for i in ids if (lab := by_id[i].label) is not None}
        classes = sorted(found)
    rows = []
    for fold, split, ids in rows_ids:
        counts = dict.fromkeys(classes, 0)
        for i in ids:
            label = by_id[i].label
            if label not in counts:
                raise ProtocolError(
                    f"fold {fold.name!r}: record {i!r} has label {label!r}, not in classes {list(classes)}"
                )
            counts[label] += 1
        rows.append(
            {
                "fold": fold.name,
                "split": split,
                "n": len(ids),
                "speakers": len({by_id[i].speaker for i in ids if by_id[i].speaker is not None}),
                "speaker_dependent": fold.speaker_dependent,
                "counts": counts,
            }
        )
    return rows


def render_fold_table(
    records: Iterable[Utterance],
    folds: Sequence[Fold],
    classes: Sequence[str] | None = None,
    title: str | None = None,
) -> Table:
    """:func:`fold_table` as a ``rich`` table for the command line.

    Args:
        records: The records the folds were made from.
        folds: The folds.
        classes: Class order; ``None`` = sorted labels found.
        title: Table title.

    Returns:
        A ``rich.table.Table`` with one row per fold and split.
    """
    from rich.table import Table

    rows = fold_table(records, folds, classes)
    class_names = list(rows[0]["counts"]) if rows else list(classes or [])
    table = Table(title=title)
    table.add_column("Fold", no_wrap=True)
    table.add_column("Split", no_wrap=True)
    table.add_column("N", justify="right", no_wrap=True)
    table.add_column("Speakers", justify="right", no_wrap=True)
    for c in class_names:
        table.add_column(str(c), justify="right", no_wrap=True)
    for j, row in enumerate(rows):
        first = row["split"] == "train"
        if first and j:
            table.add_section()
        fold = row["fold"] + (" (spk-dep)" if row["speaker_dependent"] else "") if first else ""
        table.add_row(
            fold, row["split"], str(row["n"]), str(row["speakers"]), *(str(row["counts"][c]) for c in class_names)
        )
    return table


def folds_to_json(protocol_name: str, folds: Sequence[Fold]) -> dict[str, Any]:
    """JSON-ready description of a protocol's folds.

    Args:
        protocol_name: The protocol's name.
        folds: The folds.

    Returns:
        ``{"protocol": name, "folds": [{"name", "train", "val", "test", "speaker_dependent"}, ...]}``.
    """
    return {"protocol": protocol_name, "folds": [f.to_dict() for f in folds]}


def folds_from_json(obj: Mapping[str, Any]) -> tuple[str, list[Fold]]:
    """Inverse of :func:`folds_to_json`.

    Args:
        obj: A dict as written by :func:`folds_to_json`.

    Returns:
        ``(protocol_name, folds)``. Check them against the records with :func:`verify_folds`.

    Raises:
        ProtocolError: A key is missing or has the wrong type.
    """
    try:
        name = obj["protocol"]
        folds = [
            Fold(
                name=str(f["name"]),
                train=[str(i) for i in f["train"]],
                val=[str(i) for i in f["val"]],
                test=[str(i) for i in f["test"]],
                speaker_dependent=bool(f["speaker_dependent"]),
            )
            for f in obj["folds"]
        ]
    except (KeyError, TypeError) as e:
        raise ProtocolError(f"not a folds description: missing or malformed {e}") from None
    return str(name), folds
