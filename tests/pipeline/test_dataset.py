import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from emofuse.data.labels import LabelScheme
from emofuse.data.manifest import Utterance
from emofuse.data.sampling import DynamicBatchSampler
from emofuse.features import extract_features
from emofuse.pipeline import DatasetItemError, MultimodalDataset, pad_sequences
from emofuse.testing.dummies import HOP, DummyAudioEncoder, DummyTextEncoder, make_wav_corpus

CLASSES = ("neutral", "happy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    records = make_wav_corpus(root, 6, seconds=0.4)
    audio_t, text_t = DummyAudioEncoder(dim=6), DummyTextEncoder(dim=5)
    cache = root / "cache"
    stores = {
        "audio": extract_features(records, audio_t, cache, progress=False, root=root),
        "text": extract_features(records, text_t, cache, progress=False, root=root),
    }
    return root, records, audio_t, text_t, stores


def test_items_and_collate(corpus):
    root, records, audio_t, text_t, stores = corpus
    ds = MultimodalDataset(records, CLASSES, audio_t, text_t, teacher_stores=stores, root=root)
    assert len(ds) == 6 and ds.ids == [r.id for r in records]
    item = ds[1]
    assert item["id"] == "u001" and item["label"] == 1 and item["text"] == records[1].text
    assert item["waveform"].dtype == np.float32 and item["num_samples"] == len(item["waveform"]) == 8000
    assert item["teacher"]["audio"].shape == (8000 // HOP, 6)
    batch = ds.collate([ds[i] for i in (0, 1, 2)])
    assert batch["ids"] == ["u000", "u001", "u002"]
    assert batch["labels"].tolist() == [0, 1, 0]
    assert batch["num_samples"].tolist() == [6400, 8000, 9600]
    assert batch["audio"]["input_values"].shape == (3, 9600)
    assert batch["text"]["input_ids"].shape[0] == 3
    t = batch["teacher"]
    assert t["audio"].shape == (3, 30, 6) and t["audio_mask"].sum(1).tolist() == [20, 25, 30]
    assert t["text_mask"].sum(1).tolist() == [len(records[i].text) for i in range(3)]
    # the cached teacher states are the teacher's output on the collated inputs (frame-for-frame)
    out = audio_t(**batch["audio"])
    assert torch.equal(out.mask, t["audio_mask"])
    assert torch.allclose(out.hidden, t["audio"], atol=2e-3)  # fp16 cache


def test_lengths_and_sampler(corpus):
    root, records, audio_t, text_t, stores = corpus
    ds = MultimodalDataset(records, CLASSES, audio_t, text_t, root=root)
    assert ds.lengths() == [6400, 8000, 9600] * 2
    sampler = DynamicBatchSampler(ds.lengths(), max_samples=20_000, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate)
    seen = []
    for batch in loader:
        assert int(batch["num_samples"].sum()) <= 20_000
        seen += batch["ids"]
    assert sorted(seen) == ds.ids
    # segments: lengths from start/end without opening the file; max_duration crops
    seg = [Utterance(id="s", audio="wav/u000.wav", start=0.1, end=0.3, text="x")]
    assert MultimodalDataset(seg, root=root).lengths() == [3200]
    cropped = MultimodalDataset(records, audio_encoder=audio_t, root=root, max_duration=0.45)
    assert cropped.lengths()[:3] == [6400, 7200, 7200] and len(cropped[2]["waveform"]) == 7200


def test_feature_stores_asr_text_and_unlabelled(corpus):
    root, records, _, text_t, stores = corpus
    recs = [r.model_copy(update={"label": None, "extra": {"asr_text": "asr " + r.id}}) for r in records[:2]]
    ds = MultimodalDataset(
        recs, LabelScheme("x", CLASSES), text_encoder=text_t, feature_stores=stores, text_field="asr_text", root=root
    )
    item = ds[0]
    assert item["waveform"] is None and item["text"] == "asr u000"
    batch = ds.collate([ds[0], ds[1]])
    assert "labels" not in batch and "audio" not in batch and "teacher" not in batch
    assert batch["features"]["audio"].shape[:2] == batch["features"]["audio_mask"].shape
    mixed = MultimodalDataset([records[0], recs[1]], CLASSES, root=root)
    assert mixed.collate([mixed[0], mixed[1]])["labels"].tolist() == [0, -100]
    with pytest.raises(ValueError, match="not one of the classes"):
        MultimodalDataset(records, ("sad",))


def test_bad_audio_errors_and_validate(corpus, tmp_path):
    root, records, audio_t, text_t, stores = corpus
    (tmp_path / "wav").mkdir()
    sf.write(tmp_path / "wav" / "ok.wav", np.zeros(4000, dtype=np.float32), 16000)
    (tmp_path / "wav" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    recs = [
        Utterance(id="ok", audio="wav/ok.wav", text="fine", label="happy"),
        Utterance(id="broken", audio="wav/broken.wav", text="bad", label="happy"),
        Utterance(id="gone", audio="wav/missing.wav", text="gone", label="neutral"),
        Utterance(id="notext", audio="wav/ok.wav", text="x", label="neutral"),
    ]
    ds = MultimodalDataset(
        recs, CLASSES, audio_t, text_t, teacher_stores={"text": stores["text"]}, text_field="asr_text", root=tmp_path
    )
    with pytest.raises(DatasetItemError, match=r"'broken': cannot load audio: .*broken\.wav") as info:
        ds[1]
    assert info.value.id == "broken" and info.value.path.name == "broken.wav"
    with pytest.raises(DatasetItemError, match="'broken': cannot read the audio header"):
        ds.lengths()
    bad = ds.validate()
    assert set(bad) == {"ok", "broken", "gone", "notext"}  # no cached states / asr_text for any
    assert "cannot load audio" in bad["broken"] and "not found" in bad["gone"]
    assert "asr_text" in bad["notext"] and "no cached teacher states for ['text']" in bad["ok"]
    ds2 = MultimodalDataset(recs, CLASSES, audio_t, text_t, root=tmp_path)
    assert set(ds2.validate()) == {"broken", "gone"}
    assert set(ds2.validate(decode=False)) >= {"gone"}
    clean = ds2.without(ds2.validate())
    assert clean.ids == ["ok", "notext"] and clean.lengths() == [4000, 4000]
    assert clean.collate([clean[0], clean[1]])["labels"].tolist() == [1, 0]


def test_trim_silence(tmp_path):
    wav = np.concatenate([np.zeros(8000), 0.5 * np.sin(np.arange(8000) / 5), np.zeros(8000)]).astype(np.float32)
    sf.write(tmp_path / "a.wav", wav, 16000)
    rec = [Utterance(id="a", audio=str(tmp_path / "a.wav"), text="t")]
    assert len(MultimodalDataset(rec, audio_encoder=DummyAudioEncoder())[0]["waveform"]) == 24000
    trimmed = MultimodalDataset(rec, audio_encoder=DummyAudioEncoder(), trim_silence=True)
    assert 7000 <= len(trimmed[0]["waveform"]) <= 9000
    assert trimmed.lengths() == [24000]  # header length: an upper bound


def test_pad_sequences():
    x, m = pad_sequences([torch.ones(1, 2), torch.full((3, 2), 2.0)], pad_value=-1.0)
    assert x[0, 1:].eq(-1).all() and m.tolist() == [[True, False, False], [True, True, True]]
    with pytest.raises(ValueError):
        pad_sequences([])
