"""Linear probe: mean + std pooling over valid steps, one linear layer, optional frozen encoder."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.models import create_model  # noqa: E402
from emofuse.models.probe import LinearProbe, mean_std_pool  # noqa: E402


def test_mean_std_pool_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.allclose(mean_std_pool(x, mask), torch.tensor([[2.0, 4.0, 1.0, 2.0]]))


def test_probe_is_linear_on_mean_and_std():
    model = create_model("probe", input_dim=8, num_classes=3).eval()
    assert isinstance(model, LinearProbe) and model.head.in_features == 16 and model.drop.p == 0.0
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    out = model({"features": {"text": x, "text_mask": mask}})
    rows = [x[0], x[1, :2]]
    want = torch.stack([torch.cat([r.mean(0), r.std(0, unbiased=False)]) for r in rows])
    assert torch.allclose(out.pooled["text"], want, atol=1e-5)
    assert torch.allclose(out.logits, model.head(want), atol=1e-5)
    assert out.logits.shape == (2, 3) and torch.allclose(out.probs.sum(-1), torch.ones(2))
    # padding content never matters
    x2 = x.clone()
    x2[1, 2:] = 1e3
    assert torch.allclose(model({"features": {"text": x2, "text_mask": mask}}).logits, out.logits)


def test_probe_with_a_frozen_encoder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("probe", encoder="tiny-bert", allow_random=True)
    assert model.config["input_dim"] == 32 and model.head.in_features == 64
    assert not any(p.requires_grad for p in model.encoder.parameters())
    batch = {"text": model.encoder.preprocess(["hello there", "ok"])}
    out = model(batch)
    out.logits.sum().backward()
    assert model.head.weight.grad is not None
    assert set(model.branch_parameters()) == {"encoder", "head"}


def test_probe_needs_its_modality():
    model = create_model("probe", modality="audio", input_dim=4)
    with pytest.raises(KeyError, match="audio"):
        model({"features": {"text": torch.randn(1, 2, 4)}})
    with pytest.raises(ValueError, match="modality"):
        LinearProbe(modality="video")


def _layer_stats(b=3, layers=4, d=5):
    return torch.randn(b, 1, layers * 2 * d)  # one vector per utterance: [mean_l | std_l] per layer


def test_probe_on_layer_statistics_concatenates_picks_or_weights_layers():
    x = _layer_stats()
    batch = {"features": {"audio": x, "audio_mask": torch.ones(3, 1, dtype=torch.bool)}}
    every = create_model("probe", modality="audio", input_dim=40, num_classes=2, pooling="none", num_layers=4)
    assert every.head.in_features == 40
    assert torch.allclose(every(batch).logits, every.head(x[:, 0]), atol=1e-6)
    one = create_model("probe", modality="audio", input_dim=40, num_classes=2, pooling="none", num_layers=4, layers=2)
    assert one.head.in_features == 10
    assert torch.allclose(one(batch).pooled["audio"], x[:, 0, 20:30])
    mixed = create_model(
        "probe", modality="audio", input_dim=40, num_classes=2, pooling="none", num_layers=4, layers="weighted"
    )
    with torch.no_grad():
        mixed.selector.weights.copy_(torch.tensor([0.0, 1.0, 2.0, 0.5]))
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 0.5]), 0)
    want = sum(w[i] * x[:, 0, 10 * i : 10 * (i + 1)] for i in range(4))
    assert torch.allclose(mixed(batch).pooled["audio"], want, atol=1e-6)
    mixed(batch).logits.sum().backward()
    assert mixed.selector.weights.grad is not None  # the layer weights are learned
    rebuilt = LinearProbe.from_config(mixed.config)
    assert rebuilt.config == mixed.config and rebuilt.head.in_features == 10


def test_probe_layer_options_are_checked():
    with pytest.raises(ValueError, match="pooling"):
        LinearProbe(pooling="max")
    with pytest.raises(ValueError, match="needs num_layers"):
        LinearProbe(pooling="none", layers=1)
    with pytest.raises(ValueError, match="does not divide"):
        LinearProbe(pooling="none", input_dim=10, num_layers=3)
    with pytest.raises(ValueError, match="out of range"):
        LinearProbe(pooling="none", input_dim=12, num_layers=3, layers=3)
