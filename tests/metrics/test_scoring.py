"""One scoring path: validation summaries are the scalars of the test / evaluate metrics of the same predictions."""

import numpy as np
import pytest
import torch

from emofuse.metrics.scoring import scalar_summary, score_classes, score_values
from emofuse.training.evaluate import score, score_regression
from emofuse.training.lit_module import TaskModule


class _Task(torch.nn.Module):
    threshold, rescale_to = 0.0, None


def _module(classes):
    from emofuse.config.schema import OptimConfig

    return TaskModule(_Task(), OptimConfig(), classes, 1, "val/loss", "min")


def test_validation_and_test_scores_agree_for_classes():
    rng = np.random.default_rng(0)
    labels = torch.tensor([0, 1, 2, 1, -100, 0, 2, 2])
    probs = torch.tensor(rng.dirichlet(np.ones(3), size=8), dtype=torch.float32)
    classes = ["a", "b", "c"]
    full = score({"labels": labels, "probs": probs}, classes)
    val = _module(classes).score({"labels": labels, "probs": probs})
    assert val == scalar_summary(full) and val["mult_f1"] == full["mult_f1"]["macro"] and val["ua"] == full["ua"]
    assert sum(full["support"].values() if isinstance(full["support"], dict) else full["support"]) == 7  # no -100 row


def test_validation_and_test_scores_agree_for_values_and_need_two_rows():
    t = torch.tensor([[0.1, float("nan")], [0.5, 1.0], [-0.3, float("nan")], [0.9, float("nan")]])
    p = torch.tensor([[0.0, 0.2], [0.4, 0.9], [-0.1, 0.1], [0.7, 0.3]])
    full = score_regression({"targets": t, "preds": p})
    module = _module([])
    module.regression = True
    val = module.score({"labels": t, "probs": p})
    assert full["per_target"][1] == {}  # one target row: no PCC, in validation and test alike
    assert val == pytest.approx({k: full[k] for k in ("pcc", "ccc", "mae", "uar", "war", "weighted_f1")})
    assert score_values(t.numpy(), p.numpy())[0]["n"] == 4


def test_empty_inputs_score_nothing():
    assert score_classes([], np.zeros((0, 2)), ["a", "b"]) == {} and scalar_summary({}) == {}
    assert scalar_summary([{}, {}]) == {}
