"""MulT baseline: repository defaults, crossmodal structure, last valid step, padding invariance."""

import pytest
import torch

from emofuse.layers.transformer import PreLNBlock
from emofuse.models import create_model
from emofuse.models.mult import MulT, last_valid


def feats(lengths_a=(7, 4), lengths_t=(5, 3), da=80, dt=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    ta, tt = max(lengths_a), max(lengths_t)
    fa = {
        "audio": torch.randn(len(lengths_a), ta, da, generator=g),
        "text": torch.randn(len(lengths_t), tt, dt, generator=g),
    }
    fa["audio_mask"] = torch.arange(ta)[None] < torch.tensor(lengths_a)[:, None]
    fa["text_mask"] = torch.arange(tt)[None] < torch.tensor(lengths_t)[:, None]
    return {"features": fa}


def test_repository_defaults():
    model = create_model("mult")
    assert isinstance(model, MulT) and tuple(model.modalities) == ("audio", "text")
    cfg = model.config
    assert (cfg["dim"], cfg["num_layers"], cfg["num_heads"], cfg["kernel_size"], cfg["causal"]) == (30, 5, 5, 1, True)
    assert (cfg["audio_dim"], cfg["text_dim"], cfg["num_classes"]) == (80, 300, 4)
    for m, other in (("audio", "text"), ("text", "audio")):
        b = model.branches[m]
        assert b.proj.kernel_size == (1,) and b.proj.bias is None and b.proj.out_channels == 30
        assert len(b.cross.layers) == len(b.mem.layers) == 5
        assert all(isinstance(layer, PreLNBlock) for layer in b.cross.layers)
        assert b.cross.embed_scale == pytest.approx(30**0.5)
        # attention dropout follows the KEY modality (MulT: attn_dropout for text keys, attn_dropout_a for audio)
        assert b.cross.layers[0].attn.dropout == {"text": 0.1, "audio": 0.0}[other]
        assert b.mem.layers[0].attn.dropout == {"text": 0.1, "audio": 0.0}[m]
    assert model.out.in_features == 60 and model.out.out_features == 4


def test_forward_shapes_and_wav2_bert_dims():
    model = create_model("mult", audio_dim=768, text_dim=768).eval()
    out = model(feats(da=768, dt=768))
    assert out.logits.shape == (2, 4) and torch.allclose(out.probs.sum(-1), torch.ones(2))
    assert out.hidden["audio"].shape == (2, 7, 30) and out.hidden["text"].shape == (2, 5, 30)
    assert out.pooled["audio"].shape == (2, 30)
    assert model.branches["audio"].proj.in_channels == 768


def test_last_valid_step_is_pooled():
    x = torch.arange(2 * 4 * 1.0).view(2, 4, 1)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert last_valid(x, mask).flatten().tolist() == [2.0, 7.0]
    model = create_model("mult").eval()
    out = model(feats())
    h = out.hidden["text"]
    assert torch.equal(out.pooled["text"][1], h[1, 2])  # text lengths (5, 3): row 1 ends at step 2


@pytest.mark.parametrize("causal", [True, False])
def test_padding_never_changes_the_prediction(causal):
    model = create_model("mult", causal=causal).eval()
    batch = feats()
    out = model(batch)
    f = batch["features"]
    alone = {"features": {"audio": f["audio"][1:, :4], "text": f["text"][1:, :3]}}
    single = model(alone)
    assert torch.allclose(out.logits[1], single.logits[0], atol=1e-5)
    assert torch.allclose(out.hidden["audio"][1, :4], single.hidden["audio"][0], atol=1e-5)


def test_unimodal_variants_have_no_crossmodal_transformer():
    for name, m in (("mult_audio", "audio"), ("mult_text", "text")):
        model = create_model(name).eval()
        assert tuple(model.modalities) == (m,) and model.branches[m].cross is None
        assert not any("cross" in n for n, _ in model.named_parameters())
        out = model({"features": {m: feats()["features"][m]}})
        assert out.logits.shape == (2, 4) and model.out.in_features == 30


def test_identity_projection_when_sizes_agree_and_rebuild():
    model = create_model("mult_text", text_dim=30)
    assert isinstance(model.branches["text"].proj, torch.nn.Identity)
    rebuilt = MulT.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config
    counts = model.branch_parameters()
    assert set(counts) == {"text", "head"} and sum(counts.values()) == model.num_parameters()


def test_missing_features_and_bad_arguments():
    with pytest.raises(KeyError, match="features"):
        create_model("mult")({"features": {"audio": torch.randn(1, 3, 80)}})
    with pytest.raises(ValueError, match="modalities"):
        MulT(modalities=("video",))
