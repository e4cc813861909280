"""Feature cache: fp16 round trip, sharding, streaming, resume after a real kill, stale-key protection,
changed inputs, failed items."""

import json
import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from emofuse.data.audio import load_audio
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.features import FeatureCacheError, FeatureStore, encoder_key, extract_features
from emofuse.testing.dummies import DummyAudioEncoder, DummyTextEncoder, make_wav_corpus


def _extract(records, encoder, out, root, **kw):
    kw.setdefault("progress", False)
    return extract_features(records, encoder, out, root=root, **kw)


def test_roundtrip_fp16_and_sharding(tmp_path):
    recs = make_wav_corpus(tmp_path, 7)
    enc = DummyAudioEncoder()
    store = _extract(recs, enc, tmp_path / "feats", tmp_path, shard_size=3, batch_size=2)
    assert store.path.parent == tmp_path / "feats" and store.path.name.startswith("dummy-audio-")
    assert len(store.shards) == math.ceil(7 / 3) == len(list(store.path.glob("shard-*.safetensors")))
    assert store.ids == [r.id for r in recs] and store.meta["counts"]["computed"] == 7 == enc.calls
    assert (store.output_dim, store.frame_rate, store.modality) == (8, 50.0, "audio")
    for r in recs:
        wav = load_audio(tmp_path / r.audio)
        ref = enc.encode([wav])
        got = store.get(r.id)
        assert got.dtype == torch.float32 and got.shape == (len(wav) // 320, 8) == (store.num_frames(r.id), 8)
        torch.testing.assert_close(got, ref.hidden[0], atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(store.get_pooled(r.id), ref.pooled[0], atol=1e-3, rtol=1e-3)
    with safe_open(str(store.path / store.shards[0]), framework="pt") as f:
        assert f.get_tensor("0").dtype == torch.float16 and json.loads(f.metadata()["ids"]) == ["u000", "u001", "u002"]
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["dtype"] == "float16" and meta["key"] == store.key.digest
    assert meta["encoder"]["provenance"]["name"] == "dummy-audio" and meta["encoder"]["fingerprint"]
    assert not list(store.path.glob(".*.tmp"))

    small = _extract(recs, DummyAudioEncoder(), tmp_path / "small", tmp_path, shard_size=100, max_shard_bytes=1000)
    assert len(small.shards) > 1 and small.ids == store.ids  # byte cap also closes shards


def test_text_features_and_manifest_path(tmp_path):
    recs = [Utterance(id=f"t{i}", text="hello there" * (i + 1)) for i in range(5)]
    manifest = write_manifest(recs, tmp_path / "m.jsonl")
    enc = DummyTextEncoder(dim=6)
    store = extract_features(manifest, enc, tmp_path / "out", shard_size=2, progress=False)
    assert len(store.shards) == 3 and store.frame_rate is None
    assert store.get("t2").shape == (33, 6)
    torch.testing.assert_close(store.get("t0"), enc.encode(["hello there"]).hidden[0], atol=1e-3, rtol=1e-3)


def test_streaming_flushes_shards_while_reading(tmp_path):
    """A generator manifest is consumed lazily: each shard is on disk before the next items are read."""
    pulled = []

    def records():
        for i in range(40):
            pulled.append(i)
            yield Utterance(id=f"s{i}", text=f"item number {i}")

    seen = []
    store = extract_features(
        records(), DummyTextEncoder(), tmp_path, batch_size=3, shard_size=5, progress=False,
        on_shard_written=lambda path, ids: seen.append((path.exists(), len(ids), len(pulled))),
    )  # fmt: skip
    assert len(seen) == 8 and all(exists and n == 5 for exists, n, _ in seen)
    for j, (_, _, n_pulled) in enumerate(seen):
        assert n_pulled <= 5 * (j + 1) + 3  # never more than one shard + one batch ahead
    assert len(store) == 40


_KILLED_RUN = """
import sys, time
from emofuse.features import extract_features
from emofuse.testing.dummies import DummyAudioEncoder

def on_shard(path, ids):
    print("SHARD", path.name, flush=True)
    if path.name == "shard-00001.safetensors":
        time.sleep(120)  # the test kills us here

extract_features(sys.argv[1], DummyAudioEncoder(), sys.argv[2], batch_size=2, shard_size=2, progress=False,
                 on_shard_written=on_shard)
"""


def test_resume_after_kill(tmp_path):
    recs = make_wav_corpus(tmp_path, 9, seconds=0.2)
    manifest = write_manifest(recs, tmp_path / "m.jsonl")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    out = tmp_path / "feats"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(manifest), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["SHARD shard-00000.safetensors", "SHARD shard-00001.safetensors"], proc.stderr.read()
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (cache,) = out.iterdir()
    assert sorted(p.name for p in cache.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    with pytest.raises(FeatureCacheError, match="did not finish"):
        FeatureStore(cache)
    (cache / ".shard-00002.safetensors.abc.tmp").write_bytes(b"half a shard")  # as if killed mid-write

    enc = DummyAudioEncoder()
    store = extract_features(manifest, enc, out, batch_size=2, shard_size=2, progress=False)
    assert enc.calls == 9 - 4  # shards 1-2 (4 utterances) are not recomputed
    assert store.meta["counts"] == {"total": 9, "computed": 5, "reused": 4, "failed": 0}
    assert not list(cache.glob(".*.tmp")) and len(store.shards) == 5

    clean = extract_features(
        manifest, DummyAudioEncoder(), tmp_path / "clean", batch_size=2, shard_size=2, progress=False
    )
    assert clean.key.digest == store.key.digest and clean.ids == store.ids
    for i in clean.ids:
        assert torch.equal(clean.get(i), store.get(i))

    again = DummyAudioEncoder()
    assert extract_features(manifest, again, out, progress=False).meta["counts"]["reused"] == 9 and again.calls == 0


def test_unreadable_shard_is_set_aside_and_recomputed(tmp_path):
    recs = make_wav_corpus(tmp_path, 4, seconds=0.2)
    store = _extract(recs, DummyAudioEncoder(), tmp_path / "f", tmp_path, shard_size=2)
    (store.path / "shard-00001.safetensors").write_bytes(b"not a safetensors file")
    enc = DummyAudioEncoder()
    again = _extract(recs, enc, tmp_path / "f", tmp_path, shard_size=2)
    assert enc.calls == 2 and (store.path / "shard-00001.safetensors.corrupt").exists()
    assert again.ids == store.ids and again.get("u003").shape[1] == 8


def test_keys_change_with_encoder_and_preprocessing():
    base = encoder_key(DummyAudioEncoder())
    assert encoder_key(DummyAudioEncoder()).digest == base.digest  # deterministic across instances
    variants = {
        "layer": encoder_key(DummyAudioEncoder(layer=1)),
        "seed": encoder_key(DummyAudioEncoder(seed=1)),
        "dim": encoder_key(DummyAudioEncoder(dim=4)),
        "dtype": encoder_key(DummyAudioEncoder(), dtype="float32"),
        "max_duration": encoder_key(DummyAudioEncoder(), max_duration=2.0),
        "text": encoder_key(DummyTextEncoder()),
    }
    digests = {k: v.digest for k, v in variants.items()}
    assert len(set(digests.values()) | {base.digest}) == len(variants) + 1
    assert "layer" in variants["layer"].differences(base) and "fingerprint" in variants["seed"].differences(base)
    assert variants["dtype"].differences(base) == ["preprocessing.dtype"]
    with pytest.raises(ValueError, match="built with layer=1"):
        encoder_key(DummyAudioEncoder(layer=1), layer=2)


def test_stale_cache_is_never_read(tmp_path):
    recs = make_wav_corpus(tmp_path, 3, seconds=0.2)
    root = tmp_path / "feats"
    s0 = _extract(recs, DummyAudioEncoder(), root, tmp_path)
    s1 = _extract(recs, DummyAudioEncoder(layer=1), root, tmp_path, layer=1)
    assert s0.path != s1.path and {p.name for p in root.iterdir()} == {s0.path.name, s1.path.name}
    assert not torch.equal(s0.get("u000"), s1.get("u000"))

    with pytest.raises(FeatureCacheError, match="2 encoder keys"):
        FeatureStore(root)
    with pytest.raises(FeatureCacheError) as e:
        FeatureStore(s0.path, expected=s1.key)
    msg = str(e.value)
    assert str(s0.path) in msg and "layer=None" in msg and "layer=1" in msg and "differs in: fingerprint, layer" in msg
    with pytest.raises(FeatureCacheError, match="holds features of encoder 'dummy-audio'"):
        _extract(recs, DummyAudioEncoder(seed=5), s0.path, tmp_path)  # a keyed folder of another key
    with pytest.raises(FeatureCacheError, match="no features of encoder"):
        FeatureStore.for_encoder(root, DummyAudioEncoder(seed=5))
    assert FeatureStore.for_encoder(root, DummyAudioEncoder(layer=1)).path == s1.path
    assert FeatureStore(s0.path, expected=encoder_key(DummyAudioEncoder())).ids == s0.ids


def test_changed_audio_is_recomputed(tmp_path):
    recs = make_wav_corpus(tmp_path, 4, seconds=0.2)
    root = tmp_path / "feats"
    before = _extract(recs, DummyAudioEncoder(), root, tmp_path).get("u001")
    time.sleep(0.01)
    new = np.random.default_rng(1).uniform(-0.5, 0.5, 16000).astype(np.float32)
    sf.write(tmp_path / "wav" / "u001.wav", new, 16000)
    enc = DummyAudioEncoder()
    store = _extract(recs, enc, root, tmp_path)
    assert enc.calls == 1 and store.meta["counts"]["reused"] == 3
    after = store.get("u001")
    assert after.shape == (50, 8) != before.shape
    torch.testing.assert_close(after, enc.encode([new]).hidden[0], atol=1e-3, rtol=1e-3)


class _Huge(DummyTextEncoder):
    def forward(self, input_ids, attention_mask):
        out = super().forward(input_ids, attention_mask)
        big = input_ids[:, 0] == ord("!")  # (B,)
        out.hidden = out.hidden * torch.where(big, 1e6, 1.0)[:, None, None]
        return out


class _Picky(DummyTextEncoder):
    def preprocess(self, inputs):
        if any("boom" in s for s in inputs):
            raise ValueError("cannot tokenize boom")
        return super().preprocess(inputs)


class _Broken(DummyTextEncoder):
    def forward(self, input_ids, attention_mask):
        raise RuntimeError("broken encoder")


def test_failed_items_are_reported_and_skipped(tmp_path):
    recs = make_wav_corpus(tmp_path, 3, seconds=0.2)
    (tmp_path / "wav" / "bad.wav").write_bytes(b"RIFF....garbage, not audio")
    sf.write(tmp_path / "wav" / "short.wav", np.zeros(100, np.float32), 16000)
    recs += [
        Utterance(id="bad", audio="wav/bad.wav"),
        Utterance(id="gone", audio="wav/missing.wav"),
        Utterance(id="short", audio="wav/short.wav"),
        Utterance(id="textonly", text="no audio here"),
    ]
    store = _extract(recs, DummyAudioEncoder(), tmp_path / "f", tmp_path, batch_size=4)
    assert store.ids == ["u000", "u001", "u002"]
    failed = store.failed
    assert set(failed) == {"bad", "gone", "short", "textonly"} and store.meta["counts"]["failed"] == 4
    assert "cannot decode" in failed["bad"] and "not found" in failed["gone"]
    assert "no frames" in failed["short"] and "no audio path" in failed["textonly"]
    with pytest.raises(KeyError, match="extraction failed: .*not found"):
        store.get("gone")

    texts = [Utterance(id="a", text="fine"), Utterance(id="empty", text="  "), Utterance(id="big", text="!!")]
    tstore = extract_features(texts, _Huge(), tmp_path / "t", progress=False)
    assert tstore.ids == ["a"] and tstore.failed["empty"] == "empty transcript"
    assert "float16 range" in tstore.failed["big"]

    picky = [Utterance(id=f"p{i}", text="boom" if i == 1 else f"ok {i}") for i in range(4)]
    pstore = extract_features(picky, _Picky(), tmp_path / "p", batch_size=4, progress=False)
    assert pstore.ids == ["p0", "p2", "p3"] and pstore.failed == {
        "p1": "encoder error: ValueError: cannot tokenize boom"
    }

    with pytest.raises(RuntimeError, match="broken encoder"):  # a broken encoder is not "bad items"
        extract_features(texts, _Broken(), tmp_path / "b", progress=False)


def test_duplicate_ids_are_an_error(tmp_path):
    recs = [Utterance(id="a", text="x"), Utterance(id="a", text="y")]
    with pytest.raises(ValueError, match="duplicate utterance id 'a'"):
        extract_features(recs, DummyTextEncoder(), tmp_path, progress=False)


def test_nan_shard_is_refused_on_read_and_recomputed_on_extract(tmp_path):
    from safetensors.torch import load_file, save_file

    recs = make_wav_corpus(tmp_path, 4, seconds=0.2)
    store = _extract(recs, DummyAudioEncoder(), tmp_path / "f", tmp_path, shard_size=2)
    shard = store.path / "shard-00001.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(shard))
    first = sorted(k for k in tensors if not k.endswith(".pooled"))[0]
    tensors[first][0, 0] = float("nan")
    save_file(tensors, str(shard), metadata=header)
    damaged = FeatureStore(store.path)
    with pytest.raises(FeatureCacheError, match=r"shard-00001\.safetensors: the features of 'u002' hold NaN"):
        damaged.get("u002")
    assert damaged.get("u000").shape[1] == 8  # other shards stay readable
    enc = DummyAudioEncoder()
    again = _extract(recs, enc, tmp_path / "f", tmp_path, shard_size=2)
    assert enc.calls == 2 and (store.path / "shard-00001.safetensors.corrupt").exists()
    assert bool(torch.isfinite(again.get("u002")).all())
