"""Dialogue context for text inputs: each utterance followed by the turns that preceded it.

In conversation corpora (MELD, IEMOCAP dialogues) an utterance's emotion depends on what was said before it;
text models that see the previous turns do better (EmoBERTa, COSMIC and CM-RoBERTa all read context). With
``data.text_context: K`` the text input of a record becomes its own transcript, then up to ``K`` earlier turns
of the same dialogue, most recent first, each separated by ``" | "`` (optionally prefixed by the speaker's name)::

    "I can't believe it! | Joey: We won the lottery. | Ross: Guess what?"

The utterance itself comes first so that truncation to an encoder's maximum length drops the oldest context,
never the utterance. Only transcripts are read (never labels), and only earlier turns: the text a deployed model
would have heard by then. Records without a ``dialogue`` or ``turn`` keep their text unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from emofuse.data.manifest import Utterance

__all__ = ["CONTEXT_SEPARATOR", "add_dialogue_context"]

CONTEXT_SEPARATOR = " | "


def add_dialogue_context(records: Sequence[Utterance], turns: int, speakers: bool = False) -> list[Utterance]:
    """The records with ``text`` extended by up to ``turns`` earlier turns of their dialogue.

    Args:
        records: Manifest records (every record of a dialogue should be present: they provide the context).
        turns: How many earlier turns to append (``0``: the records unchanged).
        speakers: Prefix each earlier turn with ``"<speaker>: "`` when the record has a speaker.

    Returns:
        New records in the same order (the inputs are not modified).

    Raises:
        ValueError: ``turns`` is negative, or two records of one dialogue share a turn number (names them).

    Example:
        >>> recs = [Utterance(id=f"d1_u{i}", text=t, dialogue="d1", turn=i, speaker=s)
        ...         for i, (t, s) in enumerate([("Guess what?", "Ross"), ("What?", "Joey"), ("We won!", "Ross")])]
        >>> [r.text for r in add_dialogue_context(recs, 1, speakers=True)]
        ['Guess what?', 'What? | Ross: Guess what?', 'We won! | Joey: What?']
    """
    if turns < 0:
        raise ValueError(f"text context must be a number of turns >= 0, got {turns}")
    if turns == 0:
        return list(records)
    by_dialogue: dict[str, list[Utterance]] = defaultdict(list)
    for rec in records:
        if rec.dialogue is not None and rec.turn is not None:
            by_dialogue[rec.dialogue].append(rec)
    texts: dict[str, str] = {}
    for dialogue, recs in by_dialogue.items():
        recs.sort(key=lambda r: r.turn)  # type: ignore[arg-type, return-value]
        for a, b in zip(recs, recs[1:], strict=False):
            if a.turn == b.turn:
                raise ValueError(f"dialogue {dialogue!r}: records {a.id!r} and {b.id!r} share turn {a.turn}")
        for i, rec in enumerate(recs):
            window = recs[max(0, i - turns) : i]
            earlier = [f"{p.speaker}: {p.text}" if speakers and p.speaker else p.text for p in window]
            texts[rec.id] = CONTEXT_SEPARATOR.join([rec.text, *reversed(earlier)])
    return [r.model_copy(update={"text": texts[r.id]}) if r.id in texts else r for r in records]
