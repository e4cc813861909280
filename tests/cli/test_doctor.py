import json

import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("EMOFUSE_MODELS_DIR", raising=False)
    monkeypatch.setenv("EMOFUSE_CACHE_DIR", str(tmp_path / "cache"))


def test_doctor_json_has_encoder_table_alongside_existing_keys():
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"emofuse", "python", "platform", "torch", "core", "extras", "encoders"} <= set(report)
    encoders = report["encoders"]
    for name in ("bert-base-uncased", "roberta-large", "facebook/wav2vec2-base", "tiny-bert", "tiny-wav2vec2"):
        assert {"resolved", "source", "modality"} <= set(encoders[name])
    valid = {"local", "hf-cache", "packaged", "random", "handcrafted"}
    assert all(info["resolved"] in valid for info in encoders.values()), encoders
    assert encoders["tiny-bert"]["resolved"] == "random"
    assert encoders["facebook/wav2vec2-base"]["modality"] == "audio"


def test_doctor_reports_a_failing_encoder_without_failing(monkeypatch):
    import emofuse.encoders as enc

    real = enc.resolve_encoder

    def flaky(name, **kwargs):
        if name == "tiny-bert":
            raise OSError("disk on fire")
        return real(name, **kwargs)

    monkeypatch.setattr(enc, "resolve_encoder", flaky)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["encoders"]["tiny-bert"]
    assert info["resolved"] == "error" and "disk on fire" in info["source"]


def test_doctor_table_lists_encoders():
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "encoders" in result.stdout and "tiny-wav2vec2" in result.stdout


def test_doctor_marks_stand_ins():
    from emofuse.encoders import resolve_encoder

    if resolve_encoder("bert-base-uncased", allow_random=True).packaged != "minilm-l6":
        pytest.skip("bert-base-uncased does not resolve to the packaged MiniLM stand-in here")
    result = CliRunner().invoke(app, ["doctor", "--json"])
    encoders = json.loads(result.stdout)["encoders"]
    assert encoders["bert-base-uncased"]["stand_in"] is True  # MiniLM-L6 runs in place of BERT-base
    assert encoders["all-MiniLM-L6-v2"]["stand_in"] is False  # the packaged weights are this very model
    assert encoders["whisper-tiny.en-mean"]["stand_in"] is True  # stands in for OpenL3 whatever runs
    assert encoders["mfcc"]["stand_in"] is False
    table = CliRunner().invoke(app, ["doctor"], terminal_width=200).output
    row = next(line for line in table.splitlines() if "bert-base-uncased" in line)
    assert "STAND-IN" in row and "STAND-IN" not in next(ln for ln in table.splitlines() if "all-MiniLM-L6-v2" in ln)
