import pytest
import torch

from emofuse.layers import LayerSelector, masked_mean


def test_masked_mean_matches_hand_computation():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = masked_mean(x, mask)
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    assert torch.allclose(masked_mean(x, None), x.mean(1))
    assert torch.equal(masked_mean(x, torch.zeros(2, 3, dtype=torch.bool)), torch.zeros(2, 2))


def test_layer_selector_index_last_and_weighted():
    hs = [torch.full((2, 3, 4), float(i)) for i in range(5)]
    assert torch.equal(LayerSelector(5)(hs), hs[-1])
    assert torch.equal(LayerSelector(5, 2)(hs), hs[2])
    w = LayerSelector(5, "weighted")
    out = w(hs)
    assert torch.allclose(out, torch.full((2, 3, 4), 2.0))  # uniform softmax at init: mean of 0..4
    out.sum().backward()
    assert w.weights is not None and w.weights.grad is not None
    assert LayerSelector(5, -1).weights is not None


@pytest.mark.parametrize(("layer", "match"), [(5, "out of range"), (-2, "out of range"), ("top", "must be None")])
def test_layer_selector_bad_layer(layer, match):
    with pytest.raises(ValueError, match=match):
        LayerSelector(5, layer)


def test_layer_selector_wrong_number_of_states():
    with pytest.raises(ValueError, match="expected 5 hidden states, got 4"):
        LayerSelector(5)([torch.zeros(1, 1, 1)] * 4)
