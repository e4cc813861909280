import math

import pytest
import torch
import torch.nn.functional as F

from emofuse.losses import (
    ProbAverageCELoss,
    concordance_loss,
    cross_entropy,
    pcc_loss,
    prob_average_ce,
    prob_average_ce_from_logits,
)


def test_prob_average_ce_hand_computed():
    p_audio = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    p_text = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.05, 0.05, 0.1, 0.8]])
    avg = (p_audio + p_text) / 2  # [[0.6, 0.2, 0.1, 0.1], [0.15, 0.15, 0.175, 0.525]]
    labels = torch.tensor([0, 3])
    expected = -(math.log(0.6) + math.log(0.525)) / 2  # mean over samples (paper's 1/(n c) up to 1/c)
    assert prob_average_ce(avg, labels).item() == pytest.approx(expected, rel=1e-6)


def test_prob_average_ce_clamps_zero_and_ignores():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    loss = prob_average_ce(probs, torch.tensor([1, 0]), eps=1e-6)
    assert loss.item() == pytest.approx((-math.log(1e-6) - math.log(0.5)) / 2, rel=1e-5)
    assert prob_average_ce(probs, torch.tensor([-100, 0])).item() == pytest.approx(math.log(2), rel=1e-6)
    assert prob_average_ce(probs, torch.tensor([-100, -100])).item() == 0.0


def test_prob_average_ce_weights_like_nll():
    probs = torch.softmax(torch.randn(5, 3), -1)
    labels = torch.tensor([0, 1, 2, 2, 1])
    w = torch.tensor([1.0, 2.0, 0.5])
    assert prob_average_ce(probs, labels, w).item() == pytest.approx(
        F.nll_loss(probs.log(), labels, weight=w).item(), rel=1e-6
    )
    assert ProbAverageCELoss(w)(probs, labels).item() == pytest.approx(prob_average_ce(probs, labels, w).item())


def test_from_logits_matches_and_stays_finite():
    la, lt = torch.randn(4, 4), torch.randn(4, 4)
    labels = torch.tensor([0, 1, 2, 3])
    kappa = 0.5
    avg = (torch.softmax(la / kappa, -1) + torch.softmax(lt / kappa, -1)) / 2
    assert prob_average_ce_from_logits([la, lt], labels, kappa).item() == pytest.approx(
        prob_average_ce(avg, labels).item(), rel=1e-5
    )
    # kappa = 0.01 saturates the softmax; the log-space form keeps a finite value and gradient
    big = torch.tensor([[10.0, -10.0]], requires_grad=True)
    loss = prob_average_ce_from_logits([big, big], torch.tensor([1]), 0.01)
    loss.backward()
    assert loss.item() == pytest.approx(2000.0, rel=1e-4) and big.grad.abs().sum() > 0


def test_cross_entropy_wrapper():
    logits, labels = torch.randn(3, 4), torch.tensor([1, 0, 3])
    assert cross_entropy(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert cross_entropy(logits, torch.full((3,), -100)).item() == 0.0


def test_pcc_and_ccc():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pcc_loss(x, 2 * x + 1).item() == pytest.approx(0.0, abs=1e-6)
    assert pcc_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    assert concordance_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # CCC penalises a shift that PCC ignores: 2*1.25 / (1.25 + 1.25 + 1) = 5/7
    assert concordance_loss(x, x + 1).item() == pytest.approx(1 - 2.5 / 3.5, rel=1e-5)
    two = torch.stack([x, x], 1)
    assert pcc_loss(two, two).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        pcc_loss(x, two)
