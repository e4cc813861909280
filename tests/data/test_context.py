import pytest

from emofuse.data.context import add_dialogue_context
from emofuse.data.manifest import Utterance


def _dialogue():
    lines = [("d1", 2, "C", "third"), ("d1", 0, "A", "first"), ("d2", 0, "B", "other"), ("d1", 1, "B", "second")]
    recs = [Utterance(id=f"{d}-{t}", text=x, dialogue=d, turn=t, speaker=s, label="joy") for d, t, s, x in lines]
    return recs + [Utterance(id="loose", text="no dialogue")]


def test_each_utterance_comes_first_then_earlier_turns_most_recent_first():
    out = {r.id: r.text for r in add_dialogue_context(_dialogue(), 2)}
    assert out == {
        "d1-0": "first",
        "d1-1": "second | first",
        "d1-2": "third | second | first",
        "d2-0": "other",
        "loose": "no dialogue",
    }
    one = {r.id: r.text for r in add_dialogue_context(_dialogue(), 1, speakers=True)}
    assert one["d1-2"] == "third | B: second" and one["d1-1"] == "second | A: first"


def test_order_and_inputs_are_kept_and_zero_turns_is_identity():
    recs = _dialogue()
    out = add_dialogue_context(recs, 3)
    assert [r.id for r in out] == [r.id for r in recs] and recs[0].text == "third"  # inputs untouched
    assert [r.label for r in out] == [r.label for r in recs]
    assert add_dialogue_context(recs, 0) == recs


def test_bad_context_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        add_dialogue_context(_dialogue(), -1)
    twins = [Utterance(id=i, text="x", dialogue="d", turn=0) for i in ("a", "b")]
    with pytest.raises(ValueError, match="'a' and 'b' share turn 0"):
        add_dialogue_context(twins, 1)
