"""Scoring a model on a dataset: NaN outputs are a failure that names the items, never a label."""

import pytest
import torch
from _train_fakes import CLASSES, FakeDataset, FakeModel

from emofuse.config.schema import DataConfig
from emofuse.data.manifest import Utterance
from emofuse.training.evaluate import predict, predict_values


def test_nan_outputs_fail_naming_the_items():
    records = [Utterance(id=f"u{i}", text="t", label=CLASSES[i % 3]) for i in range(5)]
    model = FakeModel(num_classes=3).eval()
    model.model_name = "_fake_linear"
    data = DataConfig(batch_size=4, max_batch_samples=None)
    ok = predict(model, FakeDataset(records, CLASSES), data)
    assert ok["probs"].shape == (5, 3) and bool(torch.isfinite(ok["probs"]).all())
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"'_fake_linear' gave NaN or infinite outputs for 4 item\(s\) \(u0, u1, u2"):
        predict(model, FakeDataset(records, CLASSES), data)
    with pytest.raises(ValueError, match="NaN or infinite outputs"):
        predict_values(model, FakeDataset(records, CLASSES), data)
