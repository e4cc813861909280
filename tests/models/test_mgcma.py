"""MGCMA model: shapes, loss inputs, module orders, padding invariance, parameter arithmetic, options."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.config.schema import ModelConfig  # noqa: E402
from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.layers.distribution import DistributionConstructor  # noqa: E402
from emofuse.layers.pooling import masked_mean  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models.mgcma import MGCMA, parse_order  # noqa: E402

TINY = dict(audio_encoder="tiny-wav2vec2", text_encoder="tiny-bert", num_heads=2, tam_layers=2)
D = 32  # width of the tiny encoders


def build(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model("mgcma", **{**TINY, **kw})


@pytest.fixture(scope="module")
def encoders():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_encoder("tiny-wav2vec2"), create_encoder("tiny-bert")


def make_batch(encoders, waves, texts):
    audio, text = encoders
    return {"audio": audio.preprocess(waves), "text": text.preprocess(texts), "labels": torch.arange(len(texts)) % 4}


@pytest.fixture(scope="module")
def batch(encoders):
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=g) for n in (6000, 9000, 4000)]
    return make_batch(encoders, waves, ["so happy today", "no", "what is going on here"])


def test_shapes_and_loss_inputs(batch):
    torch.manual_seed(0)
    model = build().eval()
    out = model(batch)
    assert out.logits.shape == (3, 4) and torch.allclose(out.probs.sum(-1), torch.ones(3))
    for m in ("audio", "text"):
        assert out.pooled[m].shape == (3, D)
        assert out.hidden[m].shape[:2] == out.masks[m].shape
        assert torch.all(out.hidden[m][~out.masks[m]] == 0)
        assert out.extras["dist_mu"][m].shape == (3, D) and out.extras["iam"][m].shape == (3, D)
        assert (out.extras["dist_sigma"][m] > 0).all()
        mu, sigma = out.extras["dist_tokens"][m]
        assert mu.shape == sigma.shape == (*out.masks[m].shape, D)
        # utterance Gaussians are the masked means of the token Gaussians (spec A3 default)
        assert torch.allclose(out.extras["dist_mu"][m], masked_mean(mu, out.masks[m]), atol=1e-6)
    # the default order ends with IAM: its vectors are the classifier's pooled features
    assert torch.allclose(out.extras["iam"]["audio"], out.pooled["audio"])
    assert out.masks["audio"].sum(1).tolist() == [18, 27, 12]  # wav2vec2 frames: (n - 400) // 320 + 1


def test_padding_never_changes_valid_outputs(encoders):
    torch.manual_seed(0)
    model = build(speech_cls=True).eval()
    g = torch.Generator().manual_seed(1)
    short, long = 0.1 * torch.randn(5000, generator=g), 0.1 * torch.randn(12000, generator=g)
    alone = model(make_batch(encoders, [short], ["hi"]))
    padded = model(make_batch(encoders, [short, long], ["hi", "a much longer sentence than that"]))
    assert padded.masks["audio"].shape[1] > alone.masks["audio"].shape[1]
    assert padded.masks["text"].shape[1] > alone.masks["text"].shape[1]
    assert torch.allclose(alone.logits[0], padded.logits[0], atol=1e-5)
    for m in ("audio", "text"):
        t = alone.hidden[m].shape[1]
        assert torch.allclose(alone.hidden[m][0], padded.hidden[m][0, :t], atol=1e-5)
        for key in ("dist_mu", "dist_sigma", "iam"):
            assert torch.allclose(alone.extras[key][m][0], padded.extras[key][m][0], atol=1e-5)


ORDERS = [()] + [p for r in (1, 2, 3) for p in itertools.permutations(("dam", "tam", "iam"), r)]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "+".join(o) or "none")
def test_every_order_runs_forward_backward(order, batch):
    torch.manual_seed(0)
    model = build(order=list(order)).train()
    out = model(batch)
    assert ("dist_mu" in out.extras) == ("dam" in order) and ("iam" in out.extras) == ("iam" in order)
    assert (model.dc is None) == ("dam" not in order) and (model.tam is None) == ("tam" not in order)
    loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    if "dam" in order:
        loss = loss + out.extras["dist_sigma"]["audio"].mean() + out.extras["dist_sigma"]["text"].mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


def test_iam_first_sees_the_encoder_outputs(batch, encoders):
    torch.manual_seed(0)
    model = build(order=["iam", "dam", "tam"]).eval()  # S6
    out = model(batch)
    enc = model.encoders["audio"](**batch["audio"])
    assert torch.allclose(out.extras["iam"]["audio"], masked_mean(enc.hidden, enc.mask), atol=1e-5)
    # S7 (IAM, TAM, DAM): the classifier reads the pooled mu of DAM, which runs last
    model = build(order=["iam", "tam", "dam"]).eval()
    out = model(batch)
    mu, _ = out.extras["dist_tokens"]["text"]
    assert torch.allclose(out.pooled["text"], masked_mean(mu, out.masks["text"]), atol=1e-6)


def test_dam_output_sample_is_stochastic_only_in_training(batch):
    torch.manual_seed(0)
    model = build(dam_output="sample").train()
    model.encoders.eval()  # encoder dropout off: only the reparameterised sample is random
    model.dc.eval(), model.tam.eval(), model.classifier.eval()
    a, b = model(batch).logits, model(batch).logits
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.allclose(model(batch).logits, model(batch).logits)


def test_distribution_constructor_parameter_count():
    d = 32
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)
    branch = (d // 2 * d + d) + 2 * d + mlp
    expected = (d * d + d) + 2 * d + (d * 3 * d + 3 * d) + 2 * branch
    assert sum(p.numel() for p in DistributionConstructor(d, 2).parameters()) == expected
    with_wo = DistributionConstructor(d, 2, out_proj=True)
    assert sum(p.numel() for p in with_wo.parameters()) == expected + d * d + d
    # paper sizes: 768-d, 12 heads -> first 6 heads' outputs feed mu, the last 6 sigma
    assert DistributionConstructor(768, 12).mu_proj.in_features == 384


def test_branch_parameters_and_sharing():
    model = build()
    counts = model.branch_parameters()
    assert sum(counts.values()) == model.num_parameters()
    assert counts["head"] == (2 * D * D + D) + (D * 4 + 4)  # identity projections, classifier 2D -> D -> 4
    shared = build(share_weights=True)
    assert list(shared.dc) == ["shared"] and shared.tam.layers_b is None
    assert shared.branch_parameters()["dam"] * 2 == counts["dam"]
    assert shared.branch_parameters()["tam"] * 2 == counts["tam"]


def test_freezing_switches():
    model = build(freeze_feature_encoder=True)
    cnn = model.encoders["audio"].model.feature_extractor
    assert all(not p.requires_grad for p in cnn.parameters())
    rest = [p for n, p in model.encoders["audio"].named_parameters() if "feature_extractor" not in n]
    assert all(p.requires_grad for p in rest)
    assert all(p.requires_grad for p in model.encoders["text"].parameters())
    frozen = build(freeze_encoders=True)
    assert all(not p.requires_grad for p in frozen.encoders.parameters())
    assert all(p.requires_grad for p in frozen.classifier.parameters())
    full = build()
    assert all(p.requires_grad for p in full.parameters())  # fine-tuned end to end by default
    assert full.encoders["audio"].model.config.layerdrop == 0.0


def test_width_projection_and_head_check(batch):
    model = build(dim=16).eval()
    assert isinstance(model.proj["audio"], torch.nn.Linear) and model.proj["audio"].out_features == 16
    assert model(batch).pooled["text"].shape == (3, 16)
    with pytest.raises(ValueError, match="not divisible by num_heads=12"):
        build(num_heads=12)


def test_order_parsing_and_errors():
    assert parse_order("DAM+TAM+IAM") == ("dam", "tam", "iam")
    assert parse_order("tam -> iam") == ("tam", "iam")
    assert parse_order("none") == () and parse_order([]) == ()
    with pytest.raises(ValueError, match="distinct modules"):
        parse_order(["dam", "dam"])
    with pytest.raises(ValueError, match="distinct modules"):
        parse_order("dam+xam")
    with pytest.raises(ValueError, match="pool must be"):
        build(pool="max")


def test_option_schema_checks_configs():
    import emofuse.models  # noqa: F401  (registers the schema)

    cfg = ModelConfig.model_validate({"name": "mgcma", "order": "TAM+IAM", "num_heads": 2})
    assert cfg.options["order"] == ["tam", "iam"]
    with pytest.raises(ValueError, match="dam_outptu"):
        ModelConfig.model_validate({"name": "mgcma", "dam_outptu": "mu"})
    with pytest.raises(ValueError, match="sigma_activation"):
        ModelConfig.model_validate({"name": "mgcma", "sigma_activation": "relu"})


def test_rebuild_from_config_restores_outputs(batch):
    torch.manual_seed(0)
    model = build(order=["tam", "dam"], speech_cls=True).eval()
    rebuilt = MGCMA.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert rebuilt.config == {**model.config, "allow_random": True}
    assert torch.allclose(rebuilt(batch).logits, model(batch).logits, atol=1e-5)
    with pytest.raises(KeyError, match="batch\\['text'\\]"):
        model({"audio": batch["audio"]})


def test_paper_size_parameter_counts_on_meta():
    """768-d, 12 heads, 6 blocks (no weights read): counts derived by hand from the layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = create_model("mgcma")
    d = 768
    mlp = 2 * 4 * d * d + 4 * d + d
    dc = (d * d + d) + 2 * d + (3 * d * d + 3 * d) + 2 * ((d // 2 * d + d) + 2 * d + mlp)
    layer = 2 * 4 * (d * d + d) + 3 * 2 * d + mlp  # self + cross attention, 3 LayerNorms, FFN 768-3072-768
    counts = model.branch_parameters()
    assert counts["dam"] == 2 * dc == 24_806_400
    assert counts["tam"] == 2 * 6 * layer == 113_421_312
    assert counts["head"] == (2 * d * d + d) + (d * 4 + 4) == 1_183_492
    assert counts["audio_encoder"] == 94_371_712 and counts["text_encoder"] == 108_891_648  # no BERT pooler
    assert model.dim == d and model.num_parameters() == sum(counts.values())


def test_ctc_finetuned_checkpoint_variant_loads_into_the_encoder(tmp_path):
    """Spec A1 variant: facebook/wav2vec2-base-960h is registered; a CTC checkpoint loads without its head."""
    import transformers

    from emofuse.encoders import get_encoder_spec
    from emofuse.encoders.hf_speech import speech_config

    assert get_encoder_spec("facebook/wav2vec2-base-960h").modality == "audio"
    config = speech_config("tiny-wav2vec2")
    config.vocab_size = 12
    torch.manual_seed(0)
    ctc = transformers.Wav2Vec2ForCTC(config)
    ctc.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = create_encoder("facebook/wav2vec2-base-960h", weights_dir=tmp_path)
    assert not [w for w in caught if "randomly initialised" in str(w.message)]  # every encoder weight loaded
    loaded, saved = enc.model.feature_projection.projection.weight, ctc.wav2vec2.feature_projection.projection.weight
    assert torch.equal(loaded, saved)
    assert enc.provenance.resolved == "local" and enc.provenance.stand_in  # tiny dims: flagged, not the paper's
