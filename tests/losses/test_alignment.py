"""MGCMA alignment losses against hand-computed values and the general 2-Wasserstein formula."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import sqrtm

from emofuse.losses.alignment import (
    DistributionContrastiveLoss,
    InstanceContrastiveLoss,
    distribution_contrastive_loss,
    instance_contrastive_loss,
    symmetric_info_nce,
    w2_diag,
    w2_diag_matrix,
)

# the 2 x 2 example of the module tests: two speech and two text Gaussians in 2-d
MU_A = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
SIG_A = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
MU_B = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
SIG_B = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
# by hand: W = |dmu|^2 + |dsigma|^2
W_HAND = [[1.0 + 0.0, 2.0 + 2.0], [2.0 + 1.0, 1.0 + 1.0]]


def _w2_general(mu1, s1, mu2, s2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) with full matrices (scipy sqrtm)."""
    c1, c2 = np.diag(np.asarray(s1, dtype=np.float64) ** 2), np.diag(np.asarray(s2, dtype=np.float64) ** 2)
    r1 = sqrtm(c1).real
    cross = sqrtm(r1 @ c2 @ r1).real
    return float(((np.asarray(mu1) - np.asarray(mu2)) ** 2).sum() + np.trace(c1 + c2 - 2 * cross))


def test_w2_identical_gaussians_is_zero():
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(5, 7, generator=g), torch.rand(5, 7, generator=g) + 0.1
    assert torch.equal(w2_diag(mu, sigma, mu, sigma), torch.zeros(5))
    assert torch.allclose(w2_diag_matrix(mu, sigma, mu, sigma).diagonal(), torch.zeros(5))


def test_w2_hand_computed_2x2_matrix():
    assert w2_diag_matrix(MU_A, SIG_A, MU_B, SIG_B).tolist() == W_HAND
    assert w2_diag(MU_A, SIG_A, MU_B, SIG_B).tolist() == [1.0, 2.0]


def test_w2_symmetric():
    g = torch.Generator().manual_seed(1)
    mu_a, mu_b = torch.randn(4, 6, generator=g), torch.randn(3, 6, generator=g)
    s_a, s_b = torch.rand(4, 6, generator=g) + 0.1, torch.rand(3, 6, generator=g) + 0.1
    w_ab = w2_diag_matrix(mu_a, s_a, mu_b, s_b)
    assert w_ab.shape == (4, 3)
    assert torch.allclose(w_ab, w2_diag_matrix(mu_b, s_b, mu_a, s_a).T)


def test_w2_matches_general_formula():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
        s1, s2 = rng.uniform(0.1, 3.0, size=4), rng.uniform(0.1, 3.0, size=4)
        ours = w2_diag(*(torch.tensor(v, dtype=torch.float64) for v in (mu1, s1, mu2, s2)))
        assert float(ours) == pytest.approx(_w2_general(mu1, s1, mu2, s2), rel=1e-9)


def test_distribution_loss_hand_computed():
    # p = 1, q = 0, tau = 1: S = -W = [[-1, -4], [-3, -2]]
    rows = (math.log1p(math.exp(-3)) + math.log1p(math.exp(-1))) / 2  # speech -> text
    cols = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-2))) / 2  # text -> speech
    loss = distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B, p=1.0, q=0.0, temperature=1.0)
    assert float(loss) == pytest.approx(0.5 * (rows + cols), rel=1e-6)


def test_distribution_loss_defaults_and_invariances():
    # defaults p = 1/200, q = 4, tau = 0.07: logits = (-W/200 + 4)/0.07; q cancels, only p / tau matters
    w = torch.tensor(W_HAND)
    s = (-w / 200 + 4) / 0.07
    target = torch.arange(2)
    expected = 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))
    loss = distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    no_shift = distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B, q=0.0)
    assert float(no_shift) == pytest.approx(float(loss), rel=1e-5)
    scaled = distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B, p=2 / 200, temperature=0.14)
    assert float(scaled) == pytest.approx(float(loss), rel=1e-5)
    # swapping the modalities transposes S: the symmetric loss is unchanged
    swapped = distribution_contrastive_loss(MU_B, SIG_B, MU_A, SIG_A)
    assert float(swapped) == pytest.approx(float(loss), rel=1e-6)


def test_distribution_loss_small_for_matched_far_apart_pairs():
    mu = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    sigma = torch.ones(3, 2)
    assert float(distribution_contrastive_loss(mu, sigma, mu, sigma)) < 1e-6
    # shuffled pairs: every positive is far, a negative is at distance 0
    assert float(distribution_contrastive_loss(mu, sigma, mu[[1, 2, 0]], sigma)) > 100


def test_symmetric_info_nce_edge_cases():
    assert float(symmetric_info_nce(torch.tensor([[3.0]]))) == 0.0
    z = torch.zeros(0, 0, requires_grad=True)
    out = symmetric_info_nce(z)
    out.backward()
    assert float(out.detach()) == 0.0
    with pytest.raises(ValueError, match="square"):
        symmetric_info_nce(torch.zeros(2, 3))


def test_instance_loss_matches_manual_clip():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    s = an @ bn.T / 0.07
    lp_rows = s.log_softmax(1).diagonal()
    lp_cols = s.log_softmax(0).diagonal()
    expected = -(lp_rows.mean() + lp_cols.mean()) / 2
    assert float(instance_contrastive_loss(a, b)) == pytest.approx(float(expected), rel=1e-5)
    raw = a @ b.T / 0.5
    expected_raw = -(raw.log_softmax(1).diagonal().mean() + raw.log_softmax(0).diagonal().mean()) / 2
    got_raw = instance_contrastive_loss(a, b, temperature=0.5, normalize=False)
    assert float(got_raw) == pytest.approx(float(expected_raw), rel=1e-5)


def test_instance_loss_hand_value_two_pairs():
    # cosine: pair 1 identical, pair 2 identical, cross pairs orthogonal; tau = 1 -> each row log(1 + e^-1)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(instance_contrastive_loss(a, a, temperature=1.0)) == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        w2_diag(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        instance_contrastive_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="p must be"):
        distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B, p=-1.0)
    with pytest.raises(ValueError, match="pair shapes"):
        distribution_contrastive_loss(MU_A, SIG_A, MU_B[:1], SIG_B[:1])


def test_modules_match_functions_and_learn():
    fixed = DistributionContrastiveLoss()
    assert not list(fixed.parameters())
    assert float(fixed(MU_A, SIG_A, MU_B, SIG_B)) == pytest.approx(
        float(distribution_contrastive_loss(MU_A, SIG_A, MU_B, SIG_B)), rel=1e-6
    )
    learned = DistributionContrastiveLoss(learn_similarity=True, learn_temperature=True)
    with torch.no_grad():
        same = float(learned(MU_A, SIG_A, MU_B, SIG_B))
    assert same == pytest.approx(float(fixed(MU_A, SIG_A, MU_B, SIG_B)), rel=1e-5)
    learned(MU_A, SIG_A, MU_B, SIG_B).backward()
    assert all(p.grad is not None for p in learned.parameters()) and len(list(learned.parameters())) == 3
    ia = InstanceContrastiveLoss(learn_temperature=True)
    a = torch.randn(3, 4)
    assert float(ia(a, a).detach()) == pytest.approx(float(instance_contrastive_loss(a, a)), rel=1e-5)


def test_gradients_flow_to_mu_and_sigma():
    mu_a, s_a = MU_A.clone().requires_grad_(), SIG_A.clone().requires_grad_()
    distribution_contrastive_loss(mu_a, s_a, MU_B, SIG_B, p=1.0, temperature=1.0).backward()
    assert mu_a.grad.abs().sum() > 0 and s_a.grad.abs().sum() > 0
