"""`emofuse extract` end to end through the real CLI (dummy encoders, and real ones when registered)."""

import json

import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.encoders import _registry, list_encoders
from emofuse.features import FeatureStore
from emofuse.testing.dummies import DUMMY_SPECS, make_wav_corpus

runner = CliRunner()


@pytest.fixture()
def dummies(monkeypatch):
    for spec in DUMMY_SPECS:
        monkeypatch.setitem(_registry._ENCODERS, spec.name, spec)


@pytest.fixture()
def manifest(tmp_path):
    recs = make_wav_corpus(tmp_path, 5, seconds=0.2)
    recs.append(Utterance(id="broken", audio="wav/nope.wav", text=""))
    return write_manifest(recs, tmp_path / "m.jsonl")


def test_extract_json_resume_and_mismatch(dummies, manifest, tmp_path):
    out = tmp_path / "feats"
    args = ["extract", str(manifest), "--encoder", "dummy-audio", "--out", str(out), "--shard-size", "2", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    assert payload["encoder"] == "dummy-audio" and payload["items"] == 5 and payload["shards"] == 3
    assert payload["counts"] == {"total": 6, "computed": 5, "reused": 0, "failed": 1}
    assert "not found" in payload["failed"]["broken"] and payload["output_dim"] == 8 and payload["dtype"] == "float16"
    store = FeatureStore(payload["dir"])
    assert store.key.digest == payload["key"] and len(store) == 5

    r = runner.invoke(app, args)
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"]["reused"] == 5

    r = runner.invoke(app, ["extract", str(manifest), "-e", "dummy-audio", "--layer", "1", "-o", payload["dir"]])
    assert r.exit_code == 2 and "holds features of encoder" in r.output and "layer=1" in r.output

    r = runner.invoke(app, ["extract", str(manifest), "-e", "dummy-text", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "computed 5" in r.stdout and "skipped 1" in r.stdout and "broken: empty transcript" in r.output
    assert len(list(out.iterdir())) == 2


def test_extract_bad_input(dummies, tmp_path):
    r = runner.invoke(app, ["extract", str(tmp_path / "none.jsonl"), "-e", "dummy-audio", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "manifest not found" in r.output
    m = write_manifest([Utterance(id="a", text="x")], tmp_path / "m.jsonl")
    r = runner.invoke(app, ["extract", str(m), "-e", "no-such-encoder", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown encoder" in r.output
    r = runner.invoke(app, ["extract", str(m), "-e", "dummy-audio", "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 1  # nothing could be extracted


@pytest.mark.filterwarnings("ignore::emofuse.encoders.RandomInitWarning")
@pytest.mark.parametrize("name", ["mfcc", "tiny-bert"])
def test_extract_registered_encoder(name, manifest, tmp_path):
    if name not in list_encoders():
        pytest.skip(f"encoder {name!r} is not registered yet")
    out = tmp_path / "feats"
    r = runner.invoke(app, ["extract", str(manifest), "-e", name, "-o", str(out), "--allow-random", "--json"])
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    store = FeatureStore(payload["dir"])
    assert store.name == name and len(store) == payload["items"] >= 5
    assert store.get(store.ids[0]).shape[1] == payload["output_dim"]


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_max_duration_must_be_positive_seconds(dummies, manifest, tmp_path, value):
    out = tmp_path / "feats"
    r = runner.invoke(app, ["extract", str(manifest), "-e", "dummy-audio", "-o", str(out), f"--max-duration={value}"])
    assert r.exit_code == 2, r.output  # -1 used to cut the last second of every clip, silently
    assert "--max-duration must be a positive number of seconds" in r.output and len(r.output.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "nonsense"])
def test_unavailable_device_is_one_line(dummies, manifest, tmp_path, device, monkeypatch):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = runner.invoke(
        app, ["extract", str(manifest), "-e", "dummy-audio", "-o", str(tmp_path / "f"), "--device", device]
    )
    assert r.exit_code == 2 and len(r.output.splitlines()) == 1, r.output
    assert f"--device {device}" in r.output or f"--device '{device}'" in r.output
    assert not (tmp_path / "f").exists()
