"""RegressionTask (MSE, 1 − PCC, 1 − CCC, MAE with NaN targets left out) and regression_metrics vs NumPy / sklearn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error

from emofuse.metrics import regression_metrics
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.tasks import RegressionTask, TaskError


class Values(EmotionModel):
    def forward(self, batch):
        return ModelOutput(values=batch["x"])


class Linear(EmotionModel):
    def __init__(self, d):
        super().__init__()
        self.fc = torch.nn.Linear(d, 1)

    def forward(self, batch):
        return ModelOutput(values=self.fc(batch["x"]))


def _np_pcc(p, t):
    return np.corrcoef(p, t)[0, 1]


def _np_ccc(p, t):
    cov = np.mean((p - p.mean()) * (t - t.mean()))
    return 2 * cov / (p.var() + t.var() + (p.mean() - t.mean()) ** 2)


@pytest.mark.parametrize("loss", ["mse", "mae", "pcc", "ccc"])
def test_losses_match_numpy_and_skip_missing_targets(loss):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 1, generator=g, dtype=torch.float64)
    t = torch.randn(10, generator=g, dtype=torch.float64)
    t[3] = float("nan")
    out = RegressionTask(Values(), loss=loss)({"x": x, "targets": t})
    keep = ~torch.isnan(t)
    p, y = x[keep, 0].numpy(), t[keep].numpy()
    expected = {
        "mse": np.mean((p - y) ** 2),
        "mae": np.mean(np.abs(p - y)),
        "pcc": 1 - _np_pcc(p, y),
        "ccc": 1 - _np_ccc(p, y),
    }[loss]
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
    assert out["preds"].shape == (10, 1) and out["targets"].shape == (10, 1)


def test_logits_are_used_when_there_are_no_values_and_errors_are_clear():
    class Logits(EmotionModel):
        def forward(self, batch):
            return ModelOutput(logits=batch["x"])

    out = RegressionTask(Logits(), loss="mse")({"x": torch.ones(2, 1), "targets": torch.zeros(2)})
    assert float(out["loss"]) == 1.0
    with pytest.raises(TaskError, match="no 'targets'.*data.target"):
        RegressionTask(Values())({"x": torch.ones(2, 1)})
    with pytest.raises(TaskError, match=r"targets \(2, 1\) do not match predictions \(2, 3\)"):
        RegressionTask(Values())({"x": torch.ones(2, 3), "targets": torch.zeros(2)})
    with pytest.raises(ValueError, match="loss must be"):
        RegressionTask(Values(), loss="huber")
    with pytest.raises(ValueError, match="rescale_to"):
        RegressionTask(Values(), rescale_to=(1, 0))
    with pytest.raises(ValueError, match="rescale_to"):
        RegressionTask(Values(), rescale_to="test")
    assert RegressionTask(Values(), rescale_to="train").rescale_to == "train"
    empty = RegressionTask(Values())(
        {"x": torch.ones(2, 1, requires_grad=True), "targets": torch.full((2,), float("nan"))}
    )
    assert float(empty["loss"].detach()) == 0.0 and empty["loss"].requires_grad


@pytest.mark.parametrize("loss", ["mse", "pcc", "ccc"])
def test_learns_a_target_that_depends_on_the_input(loss):
    torch.manual_seed(0)
    x = torch.randn(256, 5)
    y = x @ torch.tensor([0.5, -1.0, 0.0, 2.0, 0.3]) + 0.1 * torch.randn(256)
    task = RegressionTask(Linear(5), loss=loss)
    opt = torch.optim.Adam(task.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        out = task({"x": x, "targets": y})
        out["loss"].backward()
        opt.step()
    m = regression_metrics(y.numpy(), out["preds"][:, 0].numpy())
    assert m["pcc"] > 0.98
    if loss != "pcc":  # PCC ignores scale and offset; the other two also fit them
        assert m["ccc"] > 0.98 and m["mae"] < 0.2


def test_regression_metrics_against_numpy_and_sklearn():
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, 50)
    p = 0.5 * t + 0.3 * rng.standard_normal(50) + 0.1
    m = regression_metrics(t, p)
    assert m["pcc"] == pytest.approx(_np_pcc(p, t))
    assert m["ccc"] == pytest.approx(_np_ccc(p, t))
    assert m["mae"] == pytest.approx(mean_absolute_error(t, p))
    tb, pb = t >= 0, p >= 0
    assert m["war"] == pytest.approx(np.mean(tb == pb))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(tb, pb))
    assert m["n"] == 50
    # thesis Ch.3: rescale predictions to the training range before thresholding; PCC unchanged
    r = regression_metrics(t, p, threshold=0.0, rescale_to=(-1.0, 0.5))
    pr = -1.0 + (p - p.min()) * 1.5 / (p.max() - p.min())
    assert r["pcc"] == m["pcc"] and r["mae"] == m["mae"]
    assert r["war"] == pytest.approx(np.mean(tb == (pr >= 0)))
    assert regression_metrics([1, 2, 3], [2, 2.5, 4], threshold=2.5)["war"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        regression_metrics([], [])
