"""End to end: `regress` stage on file features (one modality absent for some utterances), runner + evaluate."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, read_manifest, write_manifest
from emofuse.metrics import regression_metrics
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.training import evaluate_run, run_experiment

NAME = "_file_regressor"


class FileRegressor(EmotionModel):
    """Masked mean of video features, plus a learned offset for absent video: one linear output."""

    modalities = ("video",)

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.config = {"dim": dim}
        self.fc = nn.Linear(dim, 1)
        self.absent = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        f = batch["features"]
        mask = f["video_mask"].float()[..., None]  # (B, T, 1)
        pooled = (f["video"] * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, D)
        present = batch["present"]["video"][:, None]
        return ModelOutput(values=torch.where(present, self.fc(pooled), self.absent.expand(len(pooled), 1)))


def _factory(**kw):
    return FileRegressor(**kw)


_factory.__name__ = NAME


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    from emofuse.models import _registry

    monkeypatch.setitem(_registry._MODELS, NAME, _factory)
    rng = np.random.default_rng(0)
    w = np.array([1.0, -0.5, 0.0, 0.5])
    (tmp_path / "feats").mkdir()
    recs = []
    for i in range(48):
        x = rng.standard_normal((int(rng.integers(2, 6)), 4)).astype(np.float32)
        feats = {}
        if i % 6 != 5:  # every sixth utterance has no video
            np.save(tmp_path / "feats" / f"u{i}.npy", x)
            feats["video"] = f"feats/u{i}.npy"
        valence = float(x.mean(0) @ w) if feats else 0.0
        split = "train" if i < 32 else ("dev" if i < 40 else "test")
        recs.append(
            Utterance(
                id=f"u{i:02d}", text="t", speaker=f"s{i % 4}", split=split, features=feats, extra={"valence": valence}
            )
        )
    return write_manifest(recs, tmp_path / "manifest.jsonl")


def _base(manifest, task_options):
    """Overrides shared by the runs below: the file-feature manifest, one regress stage, the fake model."""
    return [
        f"data.manifest={manifest}",
        "data.protocol=official",
        "data.target=extra.valence",
        "data.max_batch_samples=null",
        "data.batch_size=8",
        "encoders.files=[video]",
        f"model.name={NAME}",
        f"stages=[{{name: train, task: regress, task_options: {task_options}}}]",
    ]


@pytest.mark.slow
def test_regress_stage_on_file_features(tmp_path, manifest):
    sets = [
        *_base(manifest, "{loss: mse, rescale_to: train}"),
        "optim.lr=0.05",
        "trainer.max_epochs=30",
        "trainer.monitor=val/pcc",
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        "trainer.logger=none",
        "seeds=[0]",
    ]
    cfg = load_config(None, sets)
    doc = run_experiment(cfg, tmp_path / "run", progress=False)
    m = doc["runs"][0]["metrics"]
    assert {"pcc", "ccc", "mae", "uar", "war", "binarized"} <= set(m)
    assert m["n"] == 8 and m["pcc"] > 0.9, m
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| Experiment | PCC | CCC | MAE | UAR | WAR |" in md
    pred_file = next((tmp_path / "run").glob("*/seed0/predictions.jsonl"))
    rows = [json.loads(line) for line in pred_file.read_text().splitlines()]
    assert set(rows[0]) == {"id", "target", "pred"}
    # thesis Ch.3: test predictions min-max rescaled to the training targets' range before binarising
    train = [r.extra["valence"] for r in read_manifest(manifest) if r.split == "train"]
    t, p = np.array([r["target"] for r in rows]), np.array([r["pred"] for r in rows])
    ref = regression_metrics(t, p, rescale_to=(min(train), max(train)))
    assert m["war"] == pytest.approx(ref["war"]) and m["uar"] == pytest.approx(ref["uar"])
    assert m["pcc"] == pytest.approx(ref["pcc"], abs=1e-6)
    curves = next((tmp_path / "run").glob("*/seed0/curves.csv")).read_text()
    assert "val/pcc" in curves and "val/war" in curves
    again = evaluate_run(tmp_path / "run", manifest)
    assert again["runs"][0]["metrics"]["n"] == 48 and again["aggregate"]["pcc"]["mean"] > 0.9
    assert again["runs"][0]["metrics"]["binarized"]["threshold"] == 0.0


def test_a_fold_without_validation_selects_on_the_training_loss(tmp_path, manifest):
    """``val/pcc`` has no training twin (metrics are scored on val/test only): the run selects on train/loss."""
    recs = [r.model_copy(update={"split": "train"}) if r.split == "dev" else r for r in read_manifest(manifest)]
    no_dev = write_manifest(recs, tmp_path / "no-dev.jsonl")
    sets = [
        *_base(no_dev, "{loss: mse}"),
        "optim.lr=0.05",
        "optim.scheduler=plateau",
        "optim.plateau_monitor=val/ccc",
        "trainer.max_epochs=3",
        "trainer.monitor=val/pcc",
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        "trainer.logger=none",
        "seeds=[0]",
    ]
    with pytest.warns(UserWarning, match="no validation split: selecting on train/loss"):
        doc = run_experiment(load_config(None, sets), tmp_path / "run", progress=False)
    assert doc["runs"][0]["metrics"]["n"] == 8
