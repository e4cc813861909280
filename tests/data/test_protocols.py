"""Tests for emofuse.data.protocols: fold structure, speaker leakage guard, stratification, determinism."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from rich.console import Console

from emofuse.data.folds import fold_table, folds_from_json, folds_to_json, render_fold_table
from emofuse.data.manifest import Utterance
from emofuse.data.protocols import (
    Fold,
    ProtocolError,
    get_protocol,
    list_protocols,
    make_folds,
    verify_folds,
)

CLASSES = ["neutral", "happy", "sad", "angry"]


def fake_iemocap(per_speaker: int = 40, unlabelled: int = 0) -> list[Utterance]:
    """5 sessions x 2 speakers (Ses01F, Ses01M, ...), labels cycling through 4 classes."""
    records = []
    for s in range(1, 6):
        for g in "FM":
            spk = f"Ses0{s}{g}"
            for i in range(per_speaker):
                records.append(
                    Utterance(
                        id=f"{spk}_{i:03d}",
                        label=CLASSES[(i + s) % 4] if i % 7 else "neutral",
                        speaker=spk,
                        session=f"Session{s}",
                    )
                )
            for i in range(unlabelled):
                records.append(Utterance(id=f"{spk}_xxx{i}", label=None, speaker=spk, session=f"Session{s}"))
    return records


def by_id(records):
    return {r.id: r for r in records}


def speakers(records, ids):
    idx = by_id(records)
    return {idx[i].speaker for i in ids}


def test_registry():
    assert list_protocols() == ["iemocap-loso", "kfold", "official", "random-stratified", "speaker-out"]
    with pytest.raises(ProtocolError, match="unknown protocol 'loso'.*iemocap-loso"):
        get_protocol("loso")
    with pytest.raises(ProtocolError, match=r"has no option\(s\) \['val_speaker'\].*val_speakers"):
        get_protocol("iemocap-loso", val_speaker=1)
    assert get_protocol("kfold", k=3, seed=None).options() == {"k": 3, "seed": 0, "val_fraction": 0.2, "group_by": None}
    proto = get_protocol("speaker-out")
    with pytest.raises(ProtocolError, match="pass options to get_protocol"):
        make_folds(fake_iemocap(4), proto, seed=1)


# --------------------------------------------------------------------------------------------------
# iemocap-loso


def test_loso_folds_structure():
    records = fake_iemocap()
    folds = make_folds(records, "iemocap-loso", seed=0)
    assert [f.name for f in folds] == [f"Session{s}" for s in range(1, 6)]
    all_ids = {r.id for r in records}
    test_ids = [i for f in folds for i in f.test]
    assert Counter(test_ids) == Counter(all_ids)  # each utterance tested exactly once
    idx = by_id(records)
    for f in folds:
        assert not f.speaker_dependent
        assert set(f.train) | set(f.val) | set(f.test) == all_ids
        assert not (set(f.train) & set(f.val) or set(f.train) & set(f.test) or set(f.val) & set(f.test))
        assert {idx[i].session for i in f.test} == {f.name}
        assert f.name not in {idx[i].session for i in f.train + f.val}  # val never from the test fold
        val_spk = speakers(records, f.val)
        assert len(val_spk) == 1
        assert not val_spk & speakers(records, f.test)
        assert not val_spk & speakers(records, f.train)
        assert len(speakers(records, f.train)) == 7
        assert f.train == sorted(f.train) and f.test == sorted(f.test)


def test_loso_seed_determinism_and_order_independence():
    records = fake_iemocap()
    a = make_folds(records, "iemocap-loso", seed=3)
    b = make_folds(list(reversed(records)), "iemocap-loso", seed=3)
    assert a == b
    others = [make_folds(records, "iemocap-loso", seed=s) for s in range(6)]
    assert len({tuple(tuple(f.val) for f in folds) for folds in others}) > 1  # the seed matters


def test_loso_options():
    records = fake_iemocap(8)
    two = make_folds(records, "iemocap-loso", val_speakers=2)
    assert all(len(speakers(records, f.val)) == 2 for f in two)
    none = make_folds(records, "iemocap-loso", val_speakers=0)
    assert all(f.val == [] for f in none)
    explicit = make_folds(records, "iemocap-loso", val_speakers=["Ses01F", "Ses02M"])
    assert speakers(records, explicit[0].val) == {"Ses02M"}  # Ses01F is in the test session
    assert speakers(records, explicit[2].val) == {"Ses01F", "Ses02M"}
    with pytest.raises(ProtocolError, match=r"val_speakers \['Ses09F'\] are not speakers"):
        make_folds(records, "iemocap-loso", val_speakers=["Ses09F"])
    with pytest.raises(ProtocolError, match="val_speakers=8 leaves no training speaker"):
        make_folds(records, "iemocap-loso", val_speakers=8)
    with pytest.raises(ProtocolError, match="val_speakers must be an integer >= 0"):
        get_protocol("iemocap-loso", val_speakers=-1)


def test_loso_errors():
    one_session = [r for r in fake_iemocap(4) if r.session == "Session1"]
    with pytest.raises(ProtocolError, match=r"needs at least 2 sessions, found 1 \(Session1\)"):
        make_folds(one_session, "iemocap-loso")
    no_session = [*fake_iemocap(2), Utterance(id="orphan", label="sad", speaker="X")]
    with pytest.raises(ProtocolError, match=r"1 record\(s\) have no 'session' \(e.g. orphan\)"):
        make_folds(no_session, "iemocap-loso")
    with pytest.raises(ProtocolError, match="no records"):
        make_folds([], "iemocap-loso")


def test_speaker_leakage_is_refused():
    # a speaker recorded in two sessions: LOSO would test on it while training on it
    records = [*fake_iemocap(4), Utterance(id="Ses01F_extra", label="sad", speaker="Ses01F", session="Session3")]
    match = r"fold 'Session1': speaker\(s\) Ses01F appear in both (train|val) and test"
    with pytest.raises(ProtocolError, match=match):
        make_folds(records, "iemocap-loso", val_speakers=0)


def test_unlabelled_records_excluded_and_counted(caplog):
    records = fake_iemocap(4, unlabelled=2)
    with caplog.at_level(logging.WARNING, logger="emofuse.data.protocols"):
        folds = make_folds(records, "iemocap-loso")
    assert "excluded 20 unlabelled record(s) of 60" in caplog.text
    assert all("xxx" not in i for f in folds for i in f.train + f.val + f.test)
    only_unlabelled = [r for r in records if r.label is None]
    with pytest.raises(ProtocolError, match=r"no labelled records \(20 unlabelled excluded\)"):
        make_folds(only_unlabelled, "iemocap-loso")


def test_duplicate_ids_refused():
    records = fake_iemocap(2)
    with pytest.raises(ProtocolError, match="1 duplicate id"):
        make_folds([*records, records[0]], "speaker-out")


# --------------------------------------------------------------------------------------------------
# speaker-out


def test_leave_one_speaker_out():
    records = fake_iemocap(6)
    folds = make_folds(records, "speaker-out")
    assert len(folds) == 10
    assert folds[0].name == "Ses01F"
    assert Counter(i for f in folds for i in f.test) == Counter(r.id for r in records)
    for f in folds:
        assert speakers(records, f.test) == {f.name}
        assert len(speakers(records, f.val)) == 1
        assert not speakers(records, f.val) & speakers(records, f.train)
        assert not f.speaker_dependent


def test_speaker_groups():
    records = fake_iemocap(6)
    folds = make_folds(records, "speaker-out", groups=5, seed=1)
    assert [f.name for f in folds] == [f"group{i}" for i in range(1, 6)]
    assert Counter(i for f in folds for i in f.test) == Counter(r.id for r in records)
    assert all(len(speakers(records, f.test)) == 2 for f in folds)  # balanced: 10 speakers / 5 groups
    assert make_folds(records, "speaker-out", groups=5, seed=1) == folds
    no_val = make_folds(records, "speaker-out", groups=5, val_groups=0)
    assert all(f.val == [] for f in no_val)
    with pytest.raises(ProtocolError, match=r"groups=11 but the records have 10 speaker\(s\)"):
        make_folds(records, "speaker-out", groups=11)
    with pytest.raises(ProtocolError, match=r"needs at least 3 groups \(test, 1 val, train\), found 2"):
        make_folds(records, "speaker-out", groups=2)
    two_speakers = [r for r in records if r.session == "Session1"]
    with pytest.raises(ProtocolError, match="needs at least 3 speakers"):
        make_folds(two_speakers, "speaker-out")
    assert len(make_folds(two_speakers, "speaker-out", val_groups=0)) == 2


# --------------------------------------------------------------------------------------------------
# official


def _with_split(records, split_of):
    return [r.model_copy(update={"split": split_of(r)}) for r in records]


def test_official_split_mapping_speaker_independent():
    records = _with_split(
        fake_iemocap(4), lambda r: {"Session5": "test", "Session4": "dev"}.get(r.session or "", "train")
    )
    (fold,) = make_folds(records, "official")
    idx = by_id(records)
    assert fold.name == "official"
    assert {idx[i].session for i in fold.test} == {"Session5"}
    assert {idx[i].session for i in fold.val} == {"Session4"}
    assert len(fold.train) == 24
    assert not fold.speaker_dependent


def test_official_recurring_speakers_marked_dependent():
    # MELD-like: the same characters in every split
    records = _with_split(fake_iemocap(10), lambda r: ["train", "train", "dev", "test"][int(r.id[-1]) % 4])
    with pytest.warns(UserWarning, match=r"10 speaker\(s\) occur in both the test split and train/val"):
        (fold,) = make_folds(records, "official")
    assert fold.speaker_dependent
    with pytest.raises(ProtocolError, match=r"fold 'official': speaker\(s\) Ses01F, Ses01M"):
        make_folds(records, "official", speaker_dependent=False)
    (declared,) = make_folds(records, "official", speaker_dependent=True)
    assert declared.speaker_dependent and declared.test == fold.test


def test_official_errors():
    with pytest.raises(ProtocolError, match=r"40 record\(s\) have no split field"):
        make_folds(fake_iemocap(4), "official")
    only_train = _with_split(fake_iemocap(2), lambda r: "train")
    with pytest.raises(ProtocolError, match="no labelled record has split='test'"):
        make_folds(only_train, "official")


# --------------------------------------------------------------------------------------------------
# random-stratified and kfold


def test_random_stratified_ratios_and_determinism():
    records = fake_iemocap(100)  # 1000 utterances
    (fold,) = make_folds(records, "random-stratified", seed=0)
    assert fold.name == "seed0" and fold.speaker_dependent
    n = len(records)
    assert len(fold.train) / n == pytest.approx(0.6, abs=0.01)
    assert len(fold.val) / n == pytest.approx(0.2, abs=0.01)
    assert len(fold.test) / n == pytest.approx(0.2, abs=0.01)
    idx = by_id(records)
    overall = Counter(r.label for r in records)
    for split in (fold.train, fold.val, fold.test):
        counts = Counter(idx[i].label for i in split)
        for c in CLASSES:
            assert counts[c] / len(split) == pytest.approx(overall[c] / n, abs=0.01)
    assert make_folds(records, "random-stratified", seed=0) == [fold]
    (other,) = make_folds(records, "random-stratified", seed=1)
    assert other.test != fold.test
    (custom,) = make_folds(records, "random-stratified", ratios=(0.8, 0.0, 0.2))
    assert custom.val == [] and len(custom.test) == pytest.approx(200, abs=len(CLASSES))  # per-class rounding
    with pytest.raises(ProtocolError, match="ratios must be"):
        get_protocol("random-stratified", ratios=(0.5, 0.2, 0.2))
    with pytest.raises(ProtocolError, match="has no option"):
        get_protocol("random-stratified", speaker_dependent=False)


def test_kfold_stratified():
    records = fake_iemocap(20)  # 200 utterances
    folds = make_folds(records, "kfold", k=5, seed=0)
    assert [f.name for f in folds] == [f"fold{i}" for i in range(1, 6)]
    assert Counter(i for f in folds for i in f.test) == Counter(r.id for r in records)
    idx = by_id(records)
    overall = Counter(r.label for r in records)
    for f in folds:
        assert f.speaker_dependent
        assert len(f.test) == 40
        assert len(f.val) == pytest.approx(32, abs=2)  # 0.2 of the 160 training utterances
        for split in (f.test, f.val):
            counts = Counter(idx[i].label for i in split)
            for c in CLASSES:
                assert counts[c] / len(split) == pytest.approx(overall[c] / len(records), abs=0.05)
    assert make_folds(records, "kfold", k=5, seed=0) == folds
    assert make_folds(records, "kfold", k=5, seed=1) != folds


def test_kfold_by_speaker_is_speaker_independent():
    records = fake_iemocap(20)
    folds = make_folds(records, "kfold", k=5, group_by="speaker", seed=2)
    assert Counter(i for f in folds for i in f.test) == Counter(r.id for r in records)
    for f in folds:
        assert not f.speaker_dependent
        test_spk, val_spk, train_spk = (speakers(records, s) for s in (f.test, f.val, f.train))
        assert len(test_spk) == 2 and val_spk
        assert not (test_spk & train_spk or test_spk & val_spk or val_spk & train_spk)
    with pytest.raises(ProtocolError, match="k=5 folds by speaker need at least 5 speakers, found 4"):
        make_folds([r for r in records if r.session in ("Session1", "Session2")], "kfold", group_by="speaker")
    with pytest.raises(ProtocolError, match="group_by must be one of"):
        get_protocol("kfold", group_by="gender")


def test_verify_folds_catches_handmade_leak():
    records = fake_iemocap(2)
    leak = Fold("bad", train=["Ses01F_000", "Ses02F_000"], val=[], test=["Ses01F_001"], speaker_dependent=False)
    with pytest.raises(ProtocolError, match=r"fold 'bad': speaker\(s\) Ses01F appear in both train and test"):
        verify_folds(records, [leak])
    verify_folds(records, [Fold("ok", leak.train, leak.val, leak.test, speaker_dependent=True)])
    with pytest.raises(ProtocolError, match=r"1 id\(s\) are in both train and test"):
        verify_folds(records, [Fold("dup", ["Ses01F_000"], [], ["Ses01F_000"], True)])
    with pytest.raises(ProtocolError, match="test id.*not in the records: nope"):
        verify_folds(records, [Fold("x", ["Ses01F_000"], [], ["nope"], True)])
    with pytest.raises(ProtocolError, match="the test split is empty"):
        verify_folds(records, [Fold("x", ["Ses01F_000"], [], [], True)])


# --------------------------------------------------------------------------------------------------
# tables and JSON


def test_fold_table_counts():
    records = fake_iemocap(8)
    folds = make_folds(records, "iemocap-loso")
    rows = fold_table(records, folds, classes=CLASSES)
    assert len(rows) == 15
    assert [(r["fold"], r["split"]) for r in rows[:3]] == [("Session1", s) for s in ("train", "val", "test")]
    idx = by_id(records)
    for row, (f, split) in zip(rows, [(f, s) for f in folds for s in ("train", "val", "test")], strict=True):
        ids = getattr(f, split)
        assert row["n"] == len(ids) == sum(row["counts"].values())
        assert row["counts"] == {c: sum(idx[i].label == c for i in ids) for c in CLASSES}
        assert list(row["counts"]) == CLASSES
    assert rows[2]["speakers"] == 2 and rows[1]["speakers"] == 1
    assert list(fold_table(records, folds)[0]["counts"]) == sorted(CLASSES)
    with pytest.raises(ProtocolError, match="not in classes"):
        fold_table(records, folds, classes=["neutral"])


def test_render_fold_table():
    records = fake_iemocap(4)
    folds = make_folds(records, "iemocap-loso")
    table = render_fold_table(records, folds, classes=CLASSES, title="IEMOCAP LOSO")
    assert table.row_count == 15
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "Session1" in text and "angry" in text and "IEMOCAP LOSO" in text


def test_folds_json_round_trip():
    records = fake_iemocap(4)
    folds = make_folds(records, "speaker-out", groups=5)
    obj = folds_to_json("speaker-out", folds)
    assert set(obj) == {"protocol", "folds"}
    assert obj["protocol"] == "speaker-out"
    assert set(obj["folds"][0]) == {"name", "train", "val", "test", "speaker_dependent"}
    name, back = folds_from_json(json.loads(json.dumps(obj)))
    assert name == "speaker-out" and back == folds
    verify_folds(records, back)
    with pytest.raises(ProtocolError, match="not a folds description"):
        folds_from_json({"protocol": "x", "folds": [{"name": "a"}]})
