import json

import numpy as np
import pytest
import torch

from emofuse.encoders import EncoderError, Provenance, RandomInitWarning, create_encoder, resolve_encoder
from emofuse.encoders.hf_speech import HFSpeechEncoder, SpeechInputEmbedding, speech_config
from emofuse.layers.pooling import masked_mean

SPEECH = ["facebook/wav2vec2-base", "facebook/hubert-base-ls960", "microsoft/wavlm-base"]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    mask_time_prob=0.0,
)


def waves(*seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) + 0.05 for s in seconds]


def tiny_family(family, norm):
    import transformers

    cls = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM"}[family]
    extra = {"feat_extract_norm": "layer", "conv_bias": True} if norm == "layer" else {}
    config = getattr(transformers, f"{cls}Config")(**TINY, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, f"{cls}Model")(config)
    return HFSpeechEncoder(
        model, name=f"tiny-{family}", provenance=Provenance(f"tiny-{family}", "random", "test")
    ).eval()


def test_tiny_shapes_frame_rate_and_mask(make_encoder):
    enc = make_encoder("tiny-wav2vec2")
    assert isinstance(enc, HFSpeechEncoder) and enc.modality == "audio"
    assert enc.output_dim == enc.model.config.hidden_size == 32
    assert enc.frame_rate == 16000 / 320 == 50.0
    assert (enc.receptive_field, enc.stride) == (400, 320)
    out = enc.encode(waves(1.0, 0.5))
    assert out.hidden.shape == (2, 49, 32) and out.pooled.shape == (2, 32)
    assert out.mask.dtype == torch.bool
    expected = enc.model._get_feat_extract_output_lengths(torch.tensor([16000, 8000]))
    assert out.mask.sum(1).tolist() == expected.tolist() == [49, 24]
    assert torch.all(out.hidden[~out.mask] == 0)
    assert torch.allclose(out.pooled, masked_mean(out.hidden, out.mask))


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_padding_never_changes_valid_frames(family, norm):
    enc = tiny_family(family, norm)
    short, long = waves(0.45, 1.2, seed=1)
    alone = enc.encode([short])
    batch = enc.encode([long, short])
    n = int(alone.mask.sum())
    assert int(batch.mask[1].sum()) == n
    torch.testing.assert_close(batch.hidden[1, :n], alone.hidden[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.pooled[1], alone.pooled[0], atol=1e-5, rtol=1e-4)


def test_per_utterance_normalisation_leaves_padding_zero(make_encoder):
    enc = make_encoder("tiny-wav2vec2")
    raw = [np.full(8000, 3.0) + np.sin(np.arange(8000)), np.linspace(-2, 5, 4000)]
    batch = enc.preprocess(raw)
    x, m = batch["input_values"], batch["attention_mask"].bool()
    assert x.shape == (2, 8000) and x.dtype == torch.float32
    for i, n in enumerate([8000, 4000]):
        assert abs(float(x[i, :n].mean())) < 1e-4 and abs(float(x[i, :n].std(unbiased=False)) - 1) < 1e-3
        assert int(m[i].sum()) == n
    assert torch.all(x[1, 4000:] == 0)
    plain = make_encoder("tiny-wav2vec2", normalize=False).preprocess(raw)["input_values"]
    torch.testing.assert_close(plain[1, :4000], torch.as_tensor(raw[1], dtype=torch.float32))


def test_bad_waveforms_name_their_index(make_encoder):
    enc = make_encoder("tiny-wav2vec2")
    with pytest.raises(EncoderError, match="waveform 1 has shape"):
        enc.preprocess([np.zeros(8000), np.zeros((2, 8000))])
    with pytest.raises(EncoderError, match="waveform 0 has 100 samples.*at least 400"):
        enc.preprocess([np.zeros(100)])
    with pytest.raises(EncoderError, match="waveform 0 contains NaN"):
        enc.preprocess([np.full(1000, np.nan)])
    assert enc.preprocess([np.zeros((1, 800))])["input_values"].shape == (1, 800)


def test_layer_index_and_weighted_sum_gets_gradients(make_encoder):
    enc0 = make_encoder("tiny-wav2vec2", layer=1)
    batch = enc0.preprocess(waves(0.5))
    states = enc0.model(**batch, output_hidden_states=True).hidden_states
    assert len(states) == 3
    torch.testing.assert_close(enc0(**batch).hidden, states[1])
    enc = make_encoder("tiny-wav2vec2", layer="weighted", frozen=False)
    enc.encode(waves(0.5)).pooled.pow(2).sum().backward()
    assert enc.selector.weights.requires_grad and enc.selector.weights.grad.abs().sum() > 0


def test_freeze_and_freeze_feature_encoder(make_encoder):
    enc = make_encoder("tiny-wav2vec2")
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training
    live = make_encoder("tiny-wav2vec2", frozen=False, freeze_feature_encoder=True)
    cnn = list(live.model.feature_extractor.parameters())
    assert cnn and not any(p.requires_grad for p in cnn)
    others = [p for n, p in live.named_parameters() if "feature_extractor" not in n]
    assert all(p.requires_grad for p in others)
    live.freeze().freeze(False)  # unfreezing the rest keeps the CNN frozen
    assert not any(p.requires_grad for p in cnn) and all(p.requires_grad for p in others)


def test_input_embedding_module(make_encoder):
    enc = make_encoder("tiny-wav2vec2")
    emb = enc.input_embedding()
    assert isinstance(emb, SpeechInputEmbedding)
    assert emb.feature_extractor is enc.model.feature_extractor
    audio = waves(1.0, 0.5)
    x = enc.preprocess(audio)
    out = emb(x["input_values"], x["attention_mask"].sum(1))
    assert out.shape == (2, 49, 32)
    alone = emb(enc.preprocess(audio[1:])["input_values"])
    torch.testing.assert_close(out[1, :24], alone[0], atol=1e-5, rtol=1e-4)


def test_wav2vec2_base_random_init_and_input_embedding_params(build_random_base):
    enc, caught = build_random_base("facebook/wav2vec2-base")
    assert any(issubclass(w.category, RandomInitWarning) for w in caught)
    assert enc.provenance.resolved == "random" and "whisper-tiny.en" in enc.provenance.notes[0]
    assert enc.output_dim == 768 and enc.frame_rate == 50.0 and enc.max_input == 60.0
    emb = enc.input_embedding()
    cnn = sum(p.numel() for p in emb.feature_extractor.parameters())
    projection = sum(p.numel() for p in emb.feature_projection.parameters())
    assert cnn == 4_200_448 and projection == 395_008  # specs/cmd.md §2.3
    assert sum(p.numel() for p in emb.parameters()) == 4_595_456
    assert sum(p.numel() for p in enc.model.parameters()) == 94_371_712
    out = enc.encode(waves(0.2))
    assert out.hidden.shape == (1, 9, 768)


@pytest.mark.parametrize(
    ("name", "total"), [("facebook/hubert-base-ls960", 94_371_712), ("microsoft/wavlm-base", 94_381_936)]
)
def test_base_configs_param_counts(name, total):
    import transformers

    config = speech_config(name)
    with torch.device("meta"):
        model = getattr(transformers, type(config).__name__.replace("Config", "Model"))(config)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.feature_extractor.parameters()) == 4_200_448


def test_long_audio_is_chunked_on_the_frame_grid(make_encoder):
    enc = make_encoder("tiny-wav2vec2", max_input=0.5)
    audio = waves(1.7, 0.3, seed=2)
    out = enc.encode(audio)
    frames = enc.frames(torch.tensor([len(a) for a in audio]))
    assert out.mask.sum(1).tolist() == frames.tolist()  # same frame count as one pass
    assert out.hidden.shape == (2, int(frames.max()), 32)
    # the first window (0.5 s = hop + 80 samples) is encoded on its own
    hop = (8000 - 400 + 320) // 320 * 320
    first = enc.encode([audio[0][: hop + 80]])
    torch.testing.assert_close(out.hidden[0, : first.hidden.shape[1]], first.hidden[0], atol=1e-5, rtol=1e-4)


def test_long_audio_without_chunking_raises(make_encoder):
    enc = make_encoder("tiny-wav2vec2", max_input=0.5, chunk_long_audio=False)
    with pytest.raises(EncoderError, match=r"waveform 1 lasts 0\.6 s, longer than max_input=0\.5"):
        enc.preprocess(waves(0.2, 0.6))
    with pytest.raises(EncoderError, match="waveform 0 lasts"):
        enc(input_values=torch.randn(1, 9600))
    with pytest.raises(ValueError, match="max_input"):
        make_encoder("tiny-wav2vec2", max_input=0.01)


@pytest.mark.parametrize("name", SPEECH)
def test_no_packaged_substitute_for_speech_names(name):
    with pytest.raises(EncoderError, match="no pretrained weights"):
        resolve_encoder(name)
    assert resolve_encoder(name, allow_random=True).resolved == "random"


def test_local_models_dir_resolution(make_encoder, tmp_path, monkeypatch):
    tiny = make_encoder("tiny-wav2vec2")
    folder = tmp_path / "models" / "facebook--wav2vec2-base"
    tiny.model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    monkeypatch.setenv("EMOFUSE_MODELS_DIR", str(tmp_path / "models"))
    enc = create_encoder("facebook/wav2vec2-base")
    assert enc.provenance.resolved == "local" and enc.provenance.stand_in  # tiny, not base
    assert enc.normalize is False  # from the checkpoint's preprocessor_config.json
    x = waves(0.5)
    torch.testing.assert_close(enc.encode(x).hidden, make_encoder("tiny-wav2vec2", normalize=False).encode(x).hidden)


def test_mismatched_weights_dir_is_named(make_encoder, tmp_path):
    make_encoder("tiny-bert").model.save_pretrained(tmp_path / "a-bert")
    with pytest.raises(EncoderError, match=r"a-bert does not match.*expected a Wav2Vec2Model.*found model_type 'bert'"):
        create_encoder("facebook/wav2vec2-base", weights_dir=tmp_path / "a-bert")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "model.safetensors").write_bytes(b"")
    with pytest.raises(EncoderError, match=r"nothing for encoder .* has no config\.json.*found: model\.safetensors"):
        create_encoder("microsoft/wavlm-base", weights_dir=tmp_path / "nothing")
