"""Uniform step alignment (emofuse.layers.alignment) against index arithmetic done by hand."""

import pytest
import torch

from emofuse.layers import prefix_lengths, resample_steps


def test_prefix_lengths_and_left_alignment():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    assert prefix_lengths(mask).tolist() == [2, 3, 0]
    with pytest.raises(ValueError, match="row 1 is not left-aligned"):
        prefix_lengths(torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must be \(B, T\)"):
        prefix_lengths(torch.ones(3, dtype=torch.bool))


def test_resample_steps_by_hand():
    x = torch.tensor([[10.0, 20.0, 30.0, -1.0], [5.0, 6.0, -1.0, -1.0]])[..., None]  # (2, 4, 1)
    src = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    dst = torch.tensor([[1] * 5 + [0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out = resample_steps(x, src, dst)[..., 0]
    # row 0: L_s 3, L_d 5 -> floor((j + .5) * 3 / 5) = 0, 0, 1, 2, 2; row 1: L_s 2, L_d 3 -> 0, 1, 1
    assert out[0, :5].tolist() == [10.0, 10.0, 20.0, 30.0, 30.0]
    assert out[1, :3].tolist() == [5.0, 6.0, 6.0]
    assert -1.0 not in out[dst].tolist()  # padding of the source is never read at valid steps


def test_resample_steps_downsamples_and_keeps_features():
    x = torch.randn(1, 8, 3)
    out = resample_steps(x, None, torch.ones(1, 4, dtype=torch.bool))  # 100 Hz -> 50 Hz: steps 1, 3, 5, 7
    assert torch.equal(out, x[:, [1, 3, 5, 7]])
    same = resample_steps(x, None, torch.ones(1, 8, dtype=torch.bool))
    assert torch.equal(same, x)


def test_resample_steps_rejects_bad_input():
    with pytest.raises(ValueError, match="batch sizes differ"):
        resample_steps(torch.randn(2, 3, 1), None, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dst_mask row 0 is not left-aligned"):
        resample_steps(torch.randn(1, 3, 1), None, torch.tensor([[0, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x must be \(B, T, D\)"):
        resample_steps(torch.randn(3, 4), None, torch.ones(3, 4, dtype=torch.bool))
