import math

import pytest
import torch
import torch.nn.functional as F

from emofuse.losses import NTXentLoss, nt_xent, nt_xent_flat, nt_xent_per_step


def reference_nt_xent(z_a, z_b, temperature):
    """Eq. 8-9 written out element by element over the 2N x 2N matrix (typo fixed)."""
    z = torch.cat([z_a, z_b]).double()
    n2 = z.shape[0]
    n = n2 // 2
    s = [[F.cosine_similarity(z[i], z[j], dim=0).item() for j in range(n2)] for i in range(n2)]

    def ell(i, j):
        denom = sum(math.exp(s[i][k] / temperature) for k in range(n2) if k != i)
        return -math.log(math.exp(s[i][j] / temperature) / denom)

    return sum(ell(k, n + k) + ell(n + k, k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0])
def test_nt_xent_matches_hand_loop(n, temperature):
    g = torch.Generator().manual_seed(n)
    z_a, z_b = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    got = nt_xent(z_a, z_b, temperature).item()
    assert got == pytest.approx(reference_nt_xent(z_a, z_b, temperature), rel=1e-5, abs=1e-6)


def test_nt_xent_chunked_equals_dense():
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(7, 5, generator=g, requires_grad=True)
    z_b = torch.randn(7, 5, generator=g, requires_grad=True)
    dense = nt_xent(z_a, z_b, 0.1)
    (ga_dense, gb_dense) = torch.autograd.grad(dense, (z_a, z_b))
    chunked = nt_xent(z_a, z_b, 0.1, chunk_size=3)
    (ga, gb) = torch.autograd.grad(chunked, (z_a, z_b))
    assert chunked.item() == pytest.approx(dense.item(), rel=1e-6)
    assert torch.allclose(ga, ga_dense, atol=1e-6) and torch.allclose(gb, gb_dense, atol=1e-6)


def test_nt_xent_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert nt_xent(z_a, z_b, 0.1).item() == pytest.approx(nt_xent(z_b, z_a, 0.1).item(), rel=1e-6)
    assert nt_xent(3 * z_a, z_b, 0.1).item() == pytest.approx(nt_xent(z_a, z_b, 0.1).item(), rel=1e-5)
    perm = torch.tensor([2, 0, 3, 1])  # permuting samples jointly does not change the loss
    assert nt_xent(z_a[perm], z_b[perm], 0.1).item() == pytest.approx(nt_xent(z_a, z_b, 0.1).item(), rel=1e-6)


def test_nt_xent_alignment_and_temperature():
    z = torch.eye(6)  # orthogonal samples
    assert nt_xent(z, z, 0.01).item() < 1e-6  # perfect alignment + low temperature -> ~0
    # ... and log(2N - 1) at infinite temperature: uniform over the 2N - 1 candidates
    assert nt_xent(z, z, 1e6).item() == pytest.approx(math.log(11), rel=1e-4)
    shuffled = z[torch.tensor([1, 2, 3, 4, 5, 0])]
    assert nt_xent(z, shuffled, 0.01).item() > 10  # positives are orthogonal: large loss


def test_nt_xent_degenerate_and_validation():
    assert nt_xent(torch.randn(1, 3), torch.randn(1, 3), 0.1).item() == 0.0
    empty = torch.zeros(0, 3, requires_grad=True)
    assert nt_xent(empty, empty, 0.1).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(2, 3), torch.randn(3, 3), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_dot_similarity():
    z_a, z_b = torch.randn(3, 4), torch.randn(3, 4)
    za, zb = F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)
    assert nt_xent(za, zb, 0.2, similarity="dot").item() == pytest.approx(nt_xent(z_a, z_b, 0.2).item(), rel=1e-5)


def _variable_batch(seed=0, lengths=(5, 3, 1, 4), d=4):
    g = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    z_t, z_s = torch.randn(b, t, d, generator=g), torch.randn(b, t, d, generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    return z_t, z_s, mask


def test_per_step_matches_loop_over_time():
    z_t, z_s, mask = _variable_batch()
    num, den = 0.0, 0
    for tau in range(mask.shape[1]):
        valid = mask[:, tau]
        n_tau = int(valid.sum())
        if n_tau < 2:  # skipped steps
            continue
        num += n_tau * reference_nt_xent(z_t[valid, tau], z_s[valid, tau], 0.1)
        den += n_tau
    assert nt_xent_per_step(z_t, z_s, mask, 0.1).item() == pytest.approx(num / den, rel=1e-5)


def test_per_step_padding_values_are_ignored():
    z_t, z_s, mask = _variable_batch(1)
    ref = nt_xent_per_step(z_t, z_s, mask, 0.05)
    z_t2, z_s2 = z_t.clone(), z_s.clone()
    z_t2[~mask] = 1e3 * torch.randn_like(z_t2[~mask])
    z_s2[~mask] = 0.0
    assert nt_xent_per_step(z_t2, z_s2, mask, 0.05).item() == pytest.approx(ref.item(), rel=1e-6)


def test_per_step_no_mask_and_degenerate():
    z_t, z_s, _ = _variable_batch(2, lengths=(3, 3, 3))
    full = torch.ones(3, 3, dtype=torch.bool)
    assert nt_xent_per_step(z_t, z_s, None, 0.1).item() == pytest.approx(nt_xent_per_step(z_t, z_s, full, 0.1).item())
    one = torch.randn(1, 4, 2, requires_grad=True)
    loss = nt_xent_per_step(one, one.detach(), None, 0.1)  # batch of one: no step with 2 samples
    assert loss.item() == 0.0
    loss.backward()
    assert one.grad is not None


def test_flat_equals_nt_xent_on_valid_pairs():
    z_t, z_s, mask = _variable_batch(3)
    expected = reference_nt_xent(z_t[mask], z_s[mask], 0.1)
    assert nt_xent_flat(z_t, z_s, mask, 0.1).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent_flat(z_t, z_s, mask, 0.1, chunk_size=5).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent_flat(z_t, z_s, None, 0.1).item() == pytest.approx(
        nt_xent(z_t.reshape(-1, 4), z_s.reshape(-1, 4), 0.1).item(), rel=1e-6
    )


@pytest.mark.parametrize("time_axis", ["per_step", "flat"])
def test_gradients_flow_and_are_finite(time_axis):
    z_t, z_s, mask = _variable_batch(4)
    z_t.requires_grad_(True)
    z_s.requires_grad_(True)
    loss = NTXentLoss(0.05, time_axis)(z_t, z_s, mask)
    loss.backward()
    for g in (z_t.grad, z_s.grad):
        assert torch.isfinite(g).all()
        assert g[mask].abs().sum() > 0
        assert g[~mask].abs().sum() == 0  # padding gets no gradient


def test_module_validation():
    with pytest.raises(ValueError, match="time_axis"):
        NTXentLoss(0.1, "mean")
    z = torch.randn(3, 4)
    assert NTXentLoss(0.1)(z, z).item() == pytest.approx(nt_xent(z, z, 0.1).item())
