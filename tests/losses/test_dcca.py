"""DCCA correlation against NumPy CCA (QR-based canonical correlations; eigen-based with ridges), gradients."""

import numpy as np
import pytest
import torch

from emofuse.losses.dcca import dcca_correlation, dcca_loss


def _numpy_canonical_correlations(x, y):
    """Canonical correlations as the singular values of Q1ᵀ Q2 (QR of the centred views): no covariance inverse."""
    q1, _ = np.linalg.qr(x - x.mean(0))
    q2, _ = np.linalg.qr(y - y.mean(0))
    return np.linalg.svd(q1.T @ q2, compute_uv=False)


def _numpy_regularised(x, y, r1, r2):
    n = len(x)
    xc, yc = x - x.mean(0), y - y.mean(0)
    s11 = xc.T @ xc / (n - 1) + r1 * np.eye(x.shape[1])
    s22 = yc.T @ yc / (n - 1) + r2 * np.eye(y.shape[1])
    s12 = xc.T @ yc / (n - 1)

    def inv_sqrt(s):
        w, v = np.linalg.eigh(s)
        return v @ np.diag(w**-0.5) @ v.T

    return np.linalg.svd(inv_sqrt(s11) @ s12 @ inv_sqrt(s22), compute_uv=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_cca_on_random_data(seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((400, 3))  # shared signal
    x = np.hstack([z, rng.standard_normal((400, 4))]) @ rng.standard_normal((7, 7))
    y = np.hstack([z + 0.5 * rng.standard_normal((400, 3)), rng.standard_normal((400, 2))]) @ rng.standard_normal(
        (5, 5)
    )
    ref = _numpy_canonical_correlations(x, y)  # descending, 5 values
    for k in (None, 1, 3, 10):
        got = dcca_correlation(torch.from_numpy(x), torch.from_numpy(y), k=k, r1=0.0, r2=0.0, eps=1e-12)
        assert float(got) == pytest.approx(ref[: k or len(ref)].sum(), rel=1e-8)
    reg = _numpy_regularised(x, y, 1e-3, 1e-2)
    got = dcca_correlation(torch.from_numpy(x), torch.from_numpy(y), k=2, r1=1e-3, r2=1e-2)
    assert float(got) == pytest.approx(reg[:2].sum(), rel=1e-8)
    assert 0 < ref[0] <= 1 and ref[-1] < ref[0]


def test_loss_sign_gradients_and_small_batches():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(32, 100, generator=g, dtype=torch.float64, requires_grad=True)  # rank-deficient: N < d
    loss = dcca_loss(a, b, k=4)
    assert float(loss.detach()) == -float(dcca_correlation(a, b, k=4).detach())
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and a.grad.abs().sum() > 0
    small_a = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    small_b = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: dcca_correlation(u, v, r1=0.1, r2=0.1), (small_a, small_b))
    f32 = dcca_correlation(torch.randn(8, 2), torch.randn(8, 2))
    assert f32.dtype == torch.float32


@pytest.mark.slow
def test_maximising_it_aligns_two_views():
    torch.manual_seed(0)
    z = torch.randn(256, 2)
    x, y = torch.cat([z, torch.randn(256, 6)], 1), torch.cat([torch.randn(256, 6), -z], 1)
    f, h = torch.nn.Linear(8, 2), torch.nn.Linear(8, 2)
    opt = torch.optim.Adam([*f.parameters(), *h.parameters()], lr=0.1)
    for _ in range(80):
        opt.zero_grad()
        loss = dcca_loss(f(x), h(y), r1=1e-4, r2=1e-4)
        loss.backward()
        opt.step()
    assert -float(loss.detach()) > 1.9  # both shared directions found (maximum 2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="views must be"):
        dcca_correlation(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        dcca_correlation(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="k must be"):
        dcca_correlation(torch.zeros(4, 2), torch.zeros(4, 2), k=0)


def test_gradients_stay_finite_with_constant_units_and_more_units_than_samples():
    # a dead unit (constant column) leaves an eigenvalue of exactly r in the covariance; N < d leaves many:
    # eigh's backward has 1 / (λi - λj) terms there and gave NaN gradients (SeqSEW student on a 16-sample batch)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 100, generator=g)
    a[:, 50:] = 0.0
    a.requires_grad_()
    b = torch.randn(16, 100, generator=g, requires_grad=True)
    corr = dcca_correlation(a, b, k=10)
    corr.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert float(a.grad.abs().sum()) > 0
    # the value is unchanged: the same as with the eigendecomposition inverse square roots
    from emofuse.losses.dcca import _inv_sqrt

    x, y = a.detach().double(), b.detach().double()
    x, y = x - x.mean(0), y - y.mean(0)
    s11 = x.T @ x / 15 + 1e-3 * torch.eye(100, dtype=x.dtype)
    s22 = y.T @ y / 15 + 1e-3 * torch.eye(100, dtype=y.dtype)
    t = _inv_sqrt(s11, 1e-9) @ (x.T @ y / 15) @ _inv_sqrt(s22, 1e-9)
    assert float(corr) == pytest.approx(float(torch.linalg.svdvals(t)[:10].sum()), rel=1e-5)
