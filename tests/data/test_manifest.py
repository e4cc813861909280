import gzip
import json

import pytest

from emofuse.data.manifest import (
    ManifestError,
    Utterance,
    iter_manifest,
    read_manifest,
    validate_records,
    write_manifest,
)


def _rec(i: str, **kw) -> Utterance:
    return Utterance(id=i, **{"text": "hello there", "label": "neutral", "speaker": "s1", **kw})


def test_roundtrip_jsonl_and_gz(tmp_path):
    recs = [_rec("a", extra={"gender": "F", "valence": 2.5}, turn=0, split="train"), _rec("b", text="Café “quoted”")]
    for name in ("m.jsonl", "m.jsonl.gz"):
        p = write_manifest(recs, tmp_path / name)
        assert read_manifest(p) == recs
    assert gzip.decompress((tmp_path / "m.jsonl.gz").read_bytes()).decode().count("\n") == 2
    line = json.loads((tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(line) >= {
        "id",
        "audio",
        "start",
        "end",
        "text",
        "label",
        "raw_label",
        "speaker",
        "session",
        "dialogue",
        "turn",
        "split",
        "extra",
    }


def test_write_never_overwrites_without_flag(tmp_path):
    p = write_manifest([_rec("a")], tmp_path / "m.jsonl")
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_manifest([_rec("z")], p)
    assert p.read_bytes() == before
    write_manifest([_rec("z")], p, overwrite=True)
    assert [r.id for r in read_manifest(p)] == ["z"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"m.jsonl:2: not valid JSON"),
        ('{"id": "x", "bogus": 1}', r"m.jsonl:2: invalid record \(bogus"),
        ('{"id": "x", "start": 2.0, "end": 1.0}', r"m.jsonl:2: invalid record .*end"),
        ('{"id": "x", "split": "training"}', r"m.jsonl:2: invalid record \(split"),
        ('{"id": ""}', r"m.jsonl:2: invalid record \(id"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / "m.jsonl"
    p.write_text(_rec("ok").to_json() + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=match):
        read_manifest(p)


def test_duplicates_rejected_on_read(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(_rec("a").to_json() + "\n" + _rec("a").to_json() + "\n", encoding="utf-8")
    assert len(list(iter_manifest(p))) == 2
    with pytest.raises(ManifestError, match="duplicate id"):
        read_manifest(p)


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")


def test_validation_report_counts_and_names(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    recs = [
        _rec("a", audio="a.wav"),
        _rec("b", audio=str(tmp_path / "missing.wav")),
        _rec("c", audio=None, text="  "),
        _rec("d", audio="a.wav", label="bored"),
        _rec("d", audio="a.wav"),
    ]
    rep = validate_records(recs, labels=["neutral", "happy"], root=tmp_path)
    assert rep.counts() == {
        "total": 5,
        "missing_audio": 2,
        "bad_audio": 0,
        "empty_text": 1,
        "unknown_labels": 1,
        "duplicates": 1,
        "missing_features": 0,
        "text_only": 0,
    }
    assert rep.missing_audio == ["b", "c"] and rep.empty_text == ["c"]
    assert rep.unknown_labels == ["d"] and rep.duplicates == ["d"]
    assert not rep.ok
    assert "missing audio: 2 (b, c)" in rep.summary()
    text_ok = validate_records(recs[:3], root=tmp_path, allow_text_only=True)  # audio: null is text only
    assert text_ok.missing_audio == ["b"] and text_ok.text_only == ["c"] and text_ok.counts()["text_only"] == 1
    assert "text only (audio: null): 1 record(s)" in text_ok.summary()


def test_duration_and_audio_path(tmp_path):
    r = _rec("a", audio="x/a.wav", start=1.0, end=3.5)
    assert r.duration == 2.5
    assert r.audio_path(tmp_path) == tmp_path / "x" / "a.wav"
    assert _rec("b").audio_path(tmp_path) is None


def test_non_utf8_and_damaged_gzip_name_file_and_line(tmp_path):
    from emofuse.data.manifest import ManifestError, read_manifest

    good = '{"id": "a", "text": "hi"}\n'
    p = tmp_path / "m.jsonl"
    p.write_bytes(good.encode() + '{"id": "b", "text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 25\)"):
        read_manifest(p)
    gz = tmp_path / "m.jsonl.gz"
    gz.write_bytes(gzip.compress((good * 50).encode())[:-30])  # an interrupted copy
    with pytest.raises(ManifestError, match=r"m\.jsonl\.gz: damaged gzip file"):
        read_manifest(gz)
    (tmp_path / "plain.jsonl.gz").write_text(good)
    with pytest.raises(ManifestError, match=r"plain\.jsonl\.gz: damaged gzip file"):
        read_manifest(tmp_path / "plain.jsonl.gz")
