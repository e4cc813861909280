"""A fine-tuned encoder checkpoint as an encoder: the trained model's own states, a new cache key, CM-RoBERTa's text."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import EncoderError, create_encoder  # noqa: E402
from emofuse.features.cache import encoder_key  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models.checkpoint import save_checkpoint  # noqa: E402

TEXTS = ["I can't believe it!", "okay", "what a day it has been"]


def _fine_tuned(tmp_path, encoder="tiny-roberta", **options):
    """A finetuned_encoder checkpoint whose encoder weights moved away from the base ones (as training does)."""
    torch.manual_seed(0)
    model = create_model("finetuned_encoder", encoder=encoder, num_classes=3, **options).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():  # the network, and a learned layer weighting if any
            p.add_(0.05 * torch.randn_like(p))
    meta = {
        "classes": ["a", "b", "c"],
        "encoders": {f"model.{m}": p for m, p in model.encoder_provenance.items()},
        "task": {"name": "finetune_encoder", "stage": "finetune"},
        "score": 0.5,
        "monitor": "val/weighted_f1",
        "epoch": 3,
    }
    run = tmp_path / "run" / "official" / "seed0" / "finetune"
    save_checkpoint(model, run / "best.safetensors", meta)
    return model, tmp_path / "run"


def test_checkpoint_encoder_gives_the_trained_models_states(tmp_path):
    model, run = _fine_tuned(tmp_path, encoder="tiny-bert", layer="weighted")
    assert model.encoder.selector.weights.abs().sum() > 0  # not the uniform weighting a fresh encoder has
    enc = create_encoder("tiny-bert", checkpoint=run, layer="weighted")  # the run folder: its one checkpoint
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    batch = enc.preprocess(TEXTS)
    with torch.no_grad():
        got, want = enc(**batch), model.encoder(**batch)
    torch.testing.assert_close(got.hidden, want.hidden)  # the learned layer weighting came along too
    torch.testing.assert_close(got.pooled, want.pooled)
    prov = enc.provenance
    assert prov.resolved == "local" and "fine-tuned checkpoint" in prov.source and not prov.stand_in
    assert any("fine-tuned end to end by emofuse" in n and "val/weighted_f1 = 0.5" in n for n in prov.notes)


def test_fine_tuned_weights_get_their_own_cache_key(tmp_path):
    _, run = _fine_tuned(tmp_path, encoder="tiny-bert")
    plain = create_encoder("tiny-bert")
    tuned = create_encoder("tiny-bert", checkpoint=run)
    assert tuned.provenance.fingerprint != plain.provenance.fingerprint
    assert encoder_key(tuned).digest != encoder_key(plain).digest
    again = create_encoder("tiny-bert", checkpoint=run / "official" / "seed0" / "finetune")
    assert encoder_key(again).digest == encoder_key(tuned).digest  # same weights, same cache


def test_cm_roberta_text_features_from_the_fine_tuned_encoder(tmp_path):
    """roberta-large-last4's test double: the <s> state of the last 2 layers of the *fine-tuned* encoder."""
    model, run = _fine_tuned(tmp_path, encoder="tiny-roberta")
    enc = create_encoder("tiny-roberta-last2", checkpoint=run)
    out = enc.encode(TEXTS)
    batch = model.encoder.preprocess(TEXTS)
    with torch.no_grad():
        states = model.encoder.model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(out.pooled, torch.cat([s[:, 0] for s in states[-2:]], dim=-1))
    assert not any("NOT the paper's" in n for n in enc.provenance.notes)
    assert any("fine-tuned on the corpus first" in n for n in enc.provenance.notes)
    untuned = create_encoder("tiny-roberta-last2")  # un-fine-tuned RoBERTa features: flagged as not the paper's
    assert untuned.provenance.stand_in and "NOT the paper's" in untuned.provenance.notes[0]
    assert encoder_key(untuned).digest != encoder_key(enc).digest


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        create_encoder("tiny-bert", checkpoint=tmp_path / "nothing")
    probe = create_model("probe", modality="text", input_dim=4, num_classes=2)
    save_checkpoint(probe, tmp_path / "probe" / "best.safetensors", {"classes": ["x", "y"]})
    with pytest.raises(EncoderError, match="not a fine-tuned encoder"):
        create_encoder("tiny-bert", checkpoint=tmp_path / "probe")
    _fine_tuned(tmp_path / "a", encoder="tiny-bert")
    _fine_tuned(tmp_path / "b", encoder="tiny-bert")
    with pytest.raises(EncoderError, match="3 checkpoints below it"):
        create_encoder("tiny-bert", checkpoint=tmp_path)
    _, run = _fine_tuned(tmp_path / "w", encoder="tiny-whisper")
    with pytest.raises(EncoderError, match="holds a fine-tuned audio encoder .* is text"):
        create_encoder("tiny-roberta-last2", checkpoint=run)
