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
    with pytest.raises(EncoderError, match="a .probe. checkpoint, not an encoder"):
        create_encoder("tiny-bert", checkpoint=tmp_path / "probe")
    _fine_tuned(tmp_path / "a", encoder="tiny-bert")
    _fine_tuned(tmp_path / "b", encoder="tiny-bert")
    with pytest.raises(EncoderError, match="3 checkpoints below it"):
        create_encoder("tiny-bert", checkpoint=tmp_path)
    _, run = _fine_tuned(tmp_path / "w", encoder="tiny-whisper")
    with pytest.raises(EncoderError, match="holds a fine-tuned audio encoder .* is text"):
        create_encoder("tiny-roberta-last2", checkpoint=run)


def _student(tmp_path, k):
    """A CMD audio student on tiny-whisper with its first ``k`` teacher layers, weights moved (as training does)."""
    torch.manual_seed(0)
    model = create_model("cmd_student_audio", audio_teacher="tiny-whisper", teacher_layers=k, with_head=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    meta = {"encoders": {"embedding.audio": model.teacher_provenance["audio"]}, "task": {"name": "distill"}}
    path = save_checkpoint(model, tmp_path / "distill" / "best.safetensors", meta)
    return model, path


def test_a_whisper_layer_student_checkpoint_is_a_truncated_whisper_encoder(tmp_path):
    model, path = _student(tmp_path, 1)
    enc = create_encoder("tiny-whisper", checkpoint=path, allow_random=True)
    assert len(enc.model.layers) == 1 and enc.num_states == 2
    batch = enc.preprocess([0.1 * torch.randn(16000), 0.1 * torch.randn(8000)])
    with torch.no_grad():
        got, want = enc(**batch), model({"audio": batch})
    # the student masks padded keys, the Whisper encoder attends over the batch's padding: compare one clip alone
    one = enc.preprocess([0.1 * torch.randn(16000)])
    with torch.no_grad():
        torch.testing.assert_close(enc(**one).hidden, model({"audio": one}).hidden["audio"], atol=1e-5, rtol=1e-4)
    assert got.hidden.shape == want.hidden["audio"].shape
    assert any("CMD student (first 1 teacher layers)" in n for n in enc.provenance.notes)
    stats = create_encoder("tiny-whisper", checkpoint=path, allow_random=True, output="layer_stats")
    assert stats.output_dim == 2 * 2 * enc.model.config.d_model  # (1 + 1) states x mean and std
    plain = create_encoder("tiny-whisper", allow_random=True, num_layers=1)
    assert encoder_key(plain).digest != encoder_key(enc).digest


def test_whisper_num_layers_keeps_the_first_layers_and_checks_the_range():
    full = create_encoder("tiny-whisper", allow_random=True, layer=1)
    cut = create_encoder("tiny-whisper", allow_random=True, num_layers=1, layer=1)
    batch = full.preprocess([0.1 * torch.randn(16000)])
    with torch.no_grad():  # the cut encoder's last state is hidden state 1 after the final layer norm
        torch.testing.assert_close(cut(**batch).hidden, full.model.layer_norm(full(**batch).hidden))
    assert len(cut.model.layers) == 1 and any("first 1 of" in n for n in cut.provenance.notes)
    assert encoder_key(cut).digest != encoder_key(create_encoder("tiny-whisper", allow_random=True, layer=1)).digest
    with pytest.raises(ValueError, match=r"num_layers must be in 1\.\."):
        create_encoder("tiny-whisper", allow_random=True, num_layers=0)


def test_a_student_without_teacher_layers_is_not_an_encoder(tmp_path):
    model = create_model("cmd_student_audio", audio_teacher="tiny-whisper", with_head=False)
    path = save_checkpoint(model, tmp_path / "best.safetensors", {})
    with pytest.raises(EncoderError, match="not an encoder"):
        create_encoder("tiny-whisper", checkpoint=path, allow_random=True)
