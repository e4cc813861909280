"""MGCMA's blocks: the distribution constructor and the two-stream co-attention stack."""

import pytest
import torch

from emofuse.layers.coattention import CoAttentionLayer, CoAttentionStack
from emofuse.layers.distribution import DistributionConstructor


def _seq(b, t, d, seed):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


def test_constructor_shapes_sigma_positive_and_padding_invariant():
    torch.manual_seed(0)
    dc = DistributionConstructor(16, 4).eval()
    x = _seq(2, 7, 16, 0)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    mu, sigma = dc(x, mask)
    assert mu.shape == sigma.shape == (2, 7, 16) and bool((sigma > 0).all())
    alone_mu, alone_sigma = dc(x[:1, :4])
    assert torch.allclose(alone_mu[0], mu[0, :4], atol=1e-5) and torch.allclose(alone_sigma[0], sigma[0, :4], atol=1e-5)
    # changing padded values changes nothing valid
    x2 = x.clone()
    x2[0, 4:] = 100.0
    assert torch.allclose(dc(x2, mask)[0][0, :4], mu[0, :4], atol=1e-5)


def test_constructor_mu_is_residual_on_the_input_and_softplus_option():
    torch.manual_seed(0)
    dc = DistributionConstructor(8, 2, dropout=0.0, sigma_activation="softplus").eval()
    for p in (*dc.mu_proj.parameters(), *dc.mu_mlp.parameters()):
        torch.nn.init.zeros_(p)  # with the mu branch zeroed, mu is exactly the input (residual)
    x = _seq(1, 3, 8, 1)
    mu, sigma = dc(x)
    assert torch.allclose(mu, x) and bool((sigma > 0).all())
    with pytest.raises(ValueError, match="sigma_activation"):
        DistributionConstructor(8, 2, sigma_activation="relu")
    with pytest.raises(ValueError, match="divisible"):
        DistributionConstructor(10, 4)


def test_coattention_padding_invariance_and_variants():
    torch.manual_seed(0)
    a, b = _seq(2, 6, 8, 2), _seq(2, 5, 8, 3)
    ma = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    mb = torch.tensor([[True] * 2 + [False] * 3, [True] * 5])
    for kv in ("self", "input"):
        stack = CoAttentionStack(8, 2, num_layers=2, cross_kv=kv).eval()
        oa, ob = stack(a, b, ma, mb)
        sa, sb = stack(a[:1, :3], b[:1, :2])
        assert torch.allclose(oa[0, :3], sa[0], atol=1e-5) and torch.allclose(ob[0, :2], sb[0], atol=1e-5)
    torch.manual_seed(0)
    self_kv = CoAttentionStack(8, 2, num_layers=2, cross_kv="self").eval()
    torch.manual_seed(0)
    input_kv = CoAttentionStack(8, 2, num_layers=2, cross_kv="input").eval()
    assert not torch.allclose(self_kv(a, b, ma, mb)[0], input_kv(a, b, ma, mb)[0])  # same weights, other keys
    shared = CoAttentionStack(8, 2, num_layers=2, shared=True)
    one_layer = sum(p.numel() for p in CoAttentionLayer(8, 2).parameters())
    assert sum(p.numel() for p in shared.parameters()) == 2 * one_layer
    assert sum(p.numel() for p in self_kv.parameters()) == 4 * one_layer
    with pytest.raises(ValueError, match="cross_kv"):
        CoAttentionStack(8, 2, cross_kv="other")
