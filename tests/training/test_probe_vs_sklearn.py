"""The toolkit's probe recipe (standardised features, weight decay, selection on validation UA) against
scikit-learn's StandardScaler + LogisticRegression on the same features and training split."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.data.protocols import make_folds
from emofuse.metrics.functional import classification_metrics
from emofuse.training.runner import run_experiment

CLASSES = ["neutral", "happy", "sad", "angry"]


def _corpus(tmp_path, seed=0):
    """6 speakers x 4 classes x 12: class means + speaker offsets + noise, dimensions on scales 1e-2..1e2."""
    rng = np.random.default_rng(seed)
    dim = 24
    means = rng.normal(0, 1.0, (4, dim))
    scales = 10.0 ** rng.uniform(-2, 2, dim)
    records, arrays = [], {}
    for s in range(6):
        offset = rng.normal(0, 0.8, dim)
        for c, label in enumerate(CLASSES):
            for k in range(12):
                uid = f"s{s}-{label}-{k:02d}"
                arrays[uid] = ((means[c] + offset + rng.normal(0, 1.6, dim)) * scales).astype(np.float32)
                records.append(Utterance(id=uid, label=label, speaker=f"spk{s}", features={"audio": f"f.npz#{uid}"}))
    np.savez(tmp_path / "f.npz", **arrays)
    write_manifest(records, tmp_path / "m.jsonl")
    return records, arrays


@pytest.mark.slow
def test_probe_matches_logistic_regression_on_the_same_split(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    records, arrays = _corpus(tmp_path)
    folds = make_folds(records, "speaker-out", groups=3, val_groups=1)
    label = {r.id: r.label for r in records}
    ref = []
    for fold in folds:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
        clf.fit(np.stack([arrays[i] for i in fold.train]), [label[i] for i in fold.train])
        pred = clf.predict(np.stack([arrays[i] for i in fold.test]))
        ref.append(classification_metrics([label[i] for i in fold.test], pred, labels=CLASSES)["ua"])

    overrides = [
        f"data.manifest={tmp_path / 'm.jsonl'}",
        "model.input_dim=24",
        "model.num_layers=null",
        "encoders.audio=null",
        "encoders.audio_options={}",
        "encoders.files=[audio]",
        "data.labels=ravdess4",
        "data.protocol_options={groups: 3, val_groups: 1}",
        "trainer.max_epochs=8",
        "stages.train.task_options={loss: ce, l2: 0.0208}",
    ]
    cfg = load_config("configs/evidence/ravdess-probe.yaml", overrides)
    assert cfg.encoders.standardize == ["audio"] and cfg.optim.name == "lbfgs" and cfg.trainer.monitor == "val/ua"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_experiment(cfg, tmp_path / "run", overrides, progress=False, echo=lambda s: None)
    ours = [r["metrics"]["ua"] for r in doc["runs"]]
    assert [r["fold"] for r in doc["runs"]] == [f.name for f in folds]
    # same folds, same training split: the probe must not lose to scikit-learn by more than 2 points on average
    assert np.mean(ours) >= np.mean(ref) - 0.02, (ours, ref)
    assert np.mean(ref) < 0.95  # the task is not trivially separable: the comparison means something
