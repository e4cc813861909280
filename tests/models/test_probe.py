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
