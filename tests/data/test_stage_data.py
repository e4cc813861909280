"""Distillation records of a fold: main-manifest selection, extra (unlabelled) manifests, and the leak check."""

from __future__ import annotations

from pathlib import Path

import pytest

from emofuse.data.manifest import Utterance
from emofuse.data.protocols import Fold, ProtocolError
from emofuse.data.stage_data import absolute_audio, check_distill_records, distill_records

FOLD = Fold("c", train=["a_0", "a_1"], val=["b_0"], test=["c_0"])


def _main() -> list[Utterance]:
    recs = [Utterance(id=i, label="hap", speaker=i[0], audio=f"wav/{i}.wav") for i in ("a_0", "a_1", "b_0", "c_0")]
    recs.append(Utterance(id="a_9", speaker="a", audio="wav/a_9.wav"))  # unlabelled: the protocol left it out
    recs.append(Utterance(id="a_8", label="calm", speaker="a", audio="wav/a_8.wav"))  # a label outside the scheme
    recs.append(Utterance(id="c_9", speaker="c", audio="wav/c_9.wav"))  # unlabelled, of the test speaker
    return recs


def test_an_unlabelled_manifest_is_accepted_after_the_training_split():
    extra = [Utterance(id="x_0", speaker="x"), Utterance(id="x_1", speaker="x", label="sad")]
    out = distill_records(FOLD, _main(), [("extra.jsonl", extra)])
    assert [r.id for r in out] == ["a_0", "a_1", "x_0", "x_1"]
    assert [r.label for r in out] == ["hap", "hap", None, None]  # labels outside the training split are dropped


def test_train_speakers_adds_every_record_of_the_training_speakers_and_nothing_of_the_test_speaker():
    out = distill_records(FOLD, _main(), selection="train_speakers")
    assert [r.id for r in out] == ["a_0", "a_1", "a_8", "a_9"] and out[2].label is None
    assert distill_records(FOLD, _main(), [("e", [Utterance(id="x", speaker="x")])], "none")[0].id == "x"


def test_train_speakers_is_refused_on_a_speaker_dependent_fold():
    fold = Fold("f", train=["a_0"], val=["a_1"], test=["c_0"], speaker_dependent=True)
    with pytest.raises(ProtocolError, match="speaker-dependent.*main: train"):
        distill_records(fold, _main(), selection="train_speakers")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Utterance(id="y_0", speaker="c"), r"extra.jsonl: fold 'c': 1 distillation record\(s\) of test speaker\(s\) c"),
        (Utterance(id="y_0", speaker="b"), r"of validation speaker\(s\) b"),
        (Utterance(id="c_0", speaker="z"), r"validation or test utterances of the fold \(same id: c_0\)"),
        (Utterance(id="y_0", speaker="z", audio="/data/wav/c_0.wav"), r"same audio: y_0 = c_0"),
        (Utterance(id="y_0"), r"have no speaker .*cannot be verified"),
    ],
)
def test_distill_data_of_held_out_speakers_or_utterances_is_refused(record, message):
    with pytest.raises(ProtocolError, match=message):
        distill_records(FOLD, _main(), [("extra.jsonl", [record])], main_root=Path("/data"))
    with pytest.raises(ProtocolError, match=message):  # the check on its own says the same
        check_distill_records(FOLD, _main(), [record], "extra.jsonl", main_root=Path("/data"))


def test_a_speaker_dependent_fold_still_refuses_its_held_out_utterances():
    fold = Fold("f", train=["a_0"], val=["a_1"], test=["c_0"], speaker_dependent=True)
    distill_records(fold, _main(), [("e", [Utterance(id="y", speaker="c")])])  # speakers recur by design
    with pytest.raises(ProtocolError, match="same id: a_1"):
        distill_records(fold, _main(), [("e", [Utterance(id="a_1")])])


def test_ids_must_name_one_utterance_across_the_distillation_data():
    same = Utterance(id="a_0", label="hap", speaker="a", audio="wav/a_0.wav")  # the main record itself: kept once
    assert [r.id for r in distill_records(FOLD, _main(), [("e", [same])])] == ["a_0", "a_1"]
    other = Utterance(id="a_0", speaker="x", audio="/elsewhere/a_0.wav")
    with pytest.raises(ProtocolError, match="id 'a_0' also names another utterance"):
        distill_records(FOLD, _main(), [("e", [other])], main_root=None)


def test_relative_audio_paths_resolve_against_their_own_manifest(tmp_path):
    recs = absolute_audio([Utterance(id="x", audio="wav/x.wav"), Utterance(id="y", audio="/abs/y.wav")], tmp_path)
    assert [r.audio for r in recs] == [str(tmp_path / "wav" / "x.wav"), "/abs/y.wav"]
