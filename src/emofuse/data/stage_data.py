"""The records a distillation stage trains on, and the leak check that keeps held-out speakers out of them.

CMD's stage 1 needs no labels (spec ``cmd.md`` §1.2, §3.4): the student learns to reproduce its frozen teachers'
states, so it can distil on any speech, not only on the fold's labelled training split. A ``distill`` stage with
``data`` (:class:`~emofuse.config.schema.StageDataConfig`) trains on

* records of the **main manifest**, chosen by ``main``:

  - ``train``: the fold's (labelled) training split, as a stage without ``data`` does;
  - ``train_speakers``: every record of the main manifest whose speaker is a training speaker of the fold:
    its training split plus the records the protocol left out (unlabelled ones, labels outside the label
    scheme). Only for speaker-independent folds (a speaker-dependent fold's speakers are also test speakers);
  - ``none``: none of them;

* plus every record of each **extra manifest** (``manifests``: any speech, labelled or not).

Labels of records outside the fold's training split are dropped (``label=None``): distillation never reads them,
and fine-tuning (a stage without ``data``) keeps training on the labelled training split only.

**Leak check** (:func:`check_distill_records`): the fold's validation and test utterances (and, in a
speaker-independent fold, their speakers) must never reach the distillation data: a record that is a validation
or test utterance (same id, or the same audio segment under another id), or whose speaker is a validation or test
speaker of the fold, or that names no speaker while the fold claims speaker independence, is **refused** with a
:class:`~emofuse.data.protocols.ProtocolError` naming the source manifest, the fold, the speakers and the first
ids. Refused, not dropped: a manifest that holds test speakers is a mistake in the setup (the same speakers
under the same ids as the corpus' test set), and silently filtering it would hide how little data is left. To use
a corpus that contains the test speakers, select the training speakers with ``main: train_speakers`` instead.

Example:
    >>> from emofuse.data.protocols import Fold
    >>> main = [Utterance(id=f"{s}_{i}", label="hap", speaker=s) for s in "abc" for i in range(2)]
    >>> fold = Fold("c", train=["a_0", "a_1"], val=["b_0", "b_1"], test=["c_0", "c_1"])
    >>> extra = [Utterance(id="x_0", speaker="x")]  # unlabelled speech of another speaker
    >>> [r.id for r in distill_records(fold, main, [("extra.jsonl", extra)])]
    ['a_0', 'a_1', 'x_0']
    >>> try:
    ...     distill_records(fold, main, [("extra.jsonl", [Utterance(id="y_0", speaker="c")])])
    ... except ProtocolError as e:
    ...     print(str(e)[:72])
    extra.jsonl: fold 'c': 1 distillation record(s) of test speaker(s) c (e.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from emofuse.data.manifest import Utterance
from emofuse.data.protocols import Fold, ProtocolError, _named, _natural_key

__all__ = ["MainSelection", "absolute_audio", "check_distill_records", "distill_records"]

#: Which records of the main manifest a distillation stage uses (see the module docstring).
MainSelection = Literal["train", "train_speakers", "none"]
_Segment = tuple[str, float | None, float | None]


def absolute_audio(records: Iterable[Utterance], root: str | Path) -> list[Utterance]:
    """``records`` with relative audio paths resolved against ``root`` (their manifest's folder).

    Records of several manifests then share one feature cache and one dataset, whatever their folders.
    """
    out = []
    for r in records:
        path = r.audio_path(root)
        out.append(r if path is None or r.audio == str(path) else r.model_copy(update={"audio": str(path)}))
    return out


def _segment(rec: Utterance, root: Path | None) -> _Segment | None:
    """The audio segment a record names (resolved file, start, end), to find one clip under two ids."""
    path = rec.audio_path(root)
    if path is None:
        return None
    try:
        name = str(path.resolve())
    except OSError:
        name = str(path.absolute())
    return name, rec.start, rec.end


def _same_utterance(a: Utterance, b: Utterance, root_a: Path | None, root_b: Path | None) -> bool:
    return _segment(a, root_a) == _segment(b, root_b) and a.text == b.text


def check_distill_records(
    fold: Fold,
    main: Sequence[Utterance],
    records: Sequence[Utterance],
    source: str,
    *,
    main_root: Path | None = None,
    root: Path | None = None,
) -> None:
    """Refuse distillation records that belong to the fold's validation or test data (module docstring).

    Args:
        fold: The fold.
        main: The records the fold was made from (its ids resolve here).
        records: Candidate distillation records.
        source: What ``records`` come from (a manifest path), named in the error.
        main_root: Folder the main manifest's relative audio paths resolve against.
        root: Folder the candidates' relative audio paths resolve against.

    Raises:
        ProtocolError: A candidate is a validation / test utterance (by id or audio segment), has a validation or
            test speaker of a speaker-independent fold, or names no speaker in such a fold.
    """
    by_id = {r.id: r for r in main}
    where = f"{source}: fold {fold.name!r}"
    roles = {i: "validation" for i in fold.val} | {i: "test" for i in fold.test}
    held = [by_id[i] for i in roles if i in by_id]
    segments = {s: r.id for r in held if (s := _segment(r, main_root)) is not None}
    same_id = [r.id for r in records if r.id in roles]
    same_audio = [f"{r.id} = {segments[s]}" for r in records if (s := _segment(r, root)) in segments]
    if same_id or same_audio:
        shown = _named(same_id) if same_id else _named(same_audio)
        raise ProtocolError(
            f"{where}: {len(same_id) or len(same_audio)} distillation record(s) are validation or test utterances "
            f"of the fold ({'same id' if same_id else 'same audio'}: {shown}); distillation data must never include "
            "them"
        )
    if fold.speaker_dependent:
        return  # the fold's speakers recur in its test split by design: ids and audio are all one can check
    no_speaker = [r.id for r in records if r.speaker is None]
    if no_speaker:
        raise ProtocolError(
            f"{where}: {len(no_speaker)} distillation record(s) have no speaker (e.g. {_named(no_speaker)}), so "
            "the fold's speaker independence cannot be verified; give every record a speaker id"
        )
    for role in ("test", "validation"):
        speakers = {by_id[i].speaker for i, r in roles.items() if r == role and i in by_id}
        bad = [r for r in records if r.speaker in speakers]
        if bad:
            names = sorted({str(r.speaker) for r in bad}, key=_natural_key)
            raise ProtocolError(
                f"{where}: {len(bad)} distillation record(s) of {role} speaker(s) {_named(names)} "
                f"(e.g. {_named([r.id for r in bad])}); distillation data must never include the fold's validation "
                "or test speakers (select training speakers with main: train_speakers, or remove them)"
            )


def _from_main(fold: Fold, main: Sequence[Utterance], selection: MainSelection) -> list[Utterance]:
    by_id = {r.id: r for r in main}
    if selection == "none":
        return []
    train = [by_id[i] for i in fold.train]
    if selection == "train":
        return train
    if fold.speaker_dependent:
        raise ProtocolError(
            f"fold {fold.name!r} is speaker-dependent (its speakers also occur in its test split): main: "
            "train_speakers cannot choose records by speaker there; use main: train"
        )
    speakers = {r.speaker for r in train}
    used = set(fold.train) | set(fold.val) | set(fold.test)
    more = sorted((r for r in main if r.id not in used and r.speaker is not None and r.speaker in speakers),
                  key=lambda r: r.id)  # fmt: skip
    return train + [r.model_copy(update={"label": None}) for r in more]


def distill_records(
    fold: Fold,
    main: Sequence[Utterance],
    extra: Sequence[tuple[str, Sequence[Utterance]]] = (),
    selection: MainSelection = "train",
    *,
    main_root: Path | None = None,
) -> list[Utterance]:
    """The records a distillation stage trains on in ``fold``, leak-checked (module docstring).

    Args:
        fold: The fold.
        main: Every record of the main manifest (also those the protocol left out: unlabelled, other labels).
        extra: ``(source, records)`` per extra manifest, audio paths absolute (:func:`absolute_audio`).
        selection: Records of the main manifest to use (``train``, ``train_speakers``, ``none``).
        main_root: Folder the main manifest's relative audio paths resolve against.

    Returns:
        The fold's chosen main records (training split first, in fold order, then the rest by id) and then each
        extra manifest's records in file order; an extra record that *is* a chosen main record (same id, audio
        and transcript) is kept once. Labels outside the fold's training split are ``None``.

    Raises:
        ProtocolError: A leak (:func:`check_distill_records`); an extra record reuses an id of the main manifest or
            of an earlier extra manifest for another utterance (the teacher cache is keyed by id); no records.
    """
    out = _from_main(fold, main, selection)
    known = {r.id: (r, main_root) for r in main}
    chosen = {r.id for r in out}
    for source, records in extra:
        check_distill_records(fold, main, records, source, main_root=main_root)
        for r in records:
            seen = known.get(r.id)
            if seen is not None and not _same_utterance(r, seen[0], None, seen[1]):
                raise ProtocolError(
                    f"{source}: id {r.id!r} also names another utterance (in the main manifest or an earlier "
                    "extra manifest); ids must be unique across the distillation data (the teacher cache is keyed "
                    "by id)"
                )
            known[r.id] = (r, None)
            if r.id not in chosen:
                chosen.add(r.id)
                out.append(r.model_copy(update={"label": None}) if r.label is not None else r)
    if not out:
        raise ProtocolError(f"fold {fold.name!r}: the distillation stage has no records (main: none, no manifests)")
    return out
