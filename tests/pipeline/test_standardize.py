"""Feature standardisation (encoders.standardize): statistics against NumPy, the store wrapper, errors, and the
runner fitting them on each fold's training split only, keeping them in the checkpoints, and evaluate reusing them."""

import numpy as np
import pytest
import torch

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, read_manifest, write_manifest
from emofuse.models.checkpoint import load_checkpoint, read_checkpoint_meta
from emofuse.pipeline.standardize import FeatureStatsError, StandardizedStore, fit_feature_stats
from emofuse.training import evaluate_run, run_experiment
from emofuse.training.rundir import resolve_folds


class Store(dict):
    def __init__(self, frames):
        super().__init__(frames)
        self.output_dim = next(iter(frames.values())).shape[-1]

    def get(self, utt):
        return self[utt]


def _store(seed=0, n=6, dim=3):
    rng = np.random.default_rng(seed)
    frames = {f"u{i}": torch.tensor(rng.normal(5.0, 3.0, (int(rng.integers(1, 5)), dim)), dtype=torch.float32)
              for i in range(n)}  # fmt: skip
    return Store(frames)


def test_stats_match_numpy_over_frames_and_over_utterances():
    store = _store()
    train = ["u0", "u2", "u3", "u5"]
    stats = fit_feature_stats({"audio": store}, [*train, "unknown"], ["audio"])["audio"]
    rows = np.concatenate([store[u].numpy() for u in train]).astype(np.float64)
    np.testing.assert_allclose(stats["mean"], rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], rows.std(0), rtol=1e-5)  # population std (ddof 0)
    assert stats["n"] == len(rows) and stats["over"] == "frames"
    pooled = fit_feature_stats({"audio": store}, train, ["audio"], pooled=True)["audio"]
    vecs = np.stack([store[u].numpy().mean(0) for u in train]).astype(np.float64)
    np.testing.assert_allclose(pooled["mean"], vecs.mean(0), rtol=1e-6)
    assert pooled["n"] == 4 and pooled["over"] == "utterances"
    norm = StandardizedStore(store, stats)
    z = np.concatenate([norm.get(u).numpy() for u in train])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
    assert "u1" in norm and "nope" not in norm and norm.output_dim == 3  # other attributes pass through
    expected = (store["u1"].numpy().mean(0) - stats["mean"]) / stats["std"]
    np.testing.assert_allclose(norm.get_pooled("u1").numpy(), expected, rtol=1e-4)


def test_constant_dimensions_are_centred_not_divided_by_zero():
    store = Store({"a": torch.tensor([[1.0, 7.0]]), "b": torch.tensor([[3.0, 7.0]])})
    stats = fit_feature_stats({"audio": store}, ["a", "b"], ["audio"])["audio"]
    assert stats["std"][1] == 0.0
    assert StandardizedStore(store, stats).get("a").tolist() == [[-1.0, 0.0]]


def test_errors_name_the_modality_and_the_problem():
    store = _store()
    with pytest.raises(FeatureStatsError, match="names 'video'.*features: \\['audio'\\]"):
        fit_feature_stats({"audio": store}, ["u0"], ["video"])
    with pytest.raises(FeatureStatsError, match="no training utterance has 'audio'"):
        fit_feature_stats({"audio": store}, ["x", "y"], ["audio"])
    stats = fit_feature_stats({"audio": store}, ["u0"], ["audio"])["audio"]
    with pytest.raises(FeatureStatsError, match="3-d, the features 4-d"):
        StandardizedStore(_store(dim=4), stats)


@pytest.fixture
def manifest(tmp_path):
    """Audio features on a scale of hundreds whose first dimension carries the target; speakers s0..s3."""
    rng = np.random.default_rng(0)
    (tmp_path / "f").mkdir()
    recs = []
    for i in range(48):
        y = float(rng.uniform(-0.9, 0.9))
        audio = rng.normal([300.0, -50.0, 0.01], [40.0, 5.0, 0.001], (int(rng.integers(3, 6)), 3)).astype(np.float32)
        audio[:, 0] += 60.0 * y
        np.save(tmp_path / "f" / f"a{i}.npy", audio)
        recs.append(Utterance(id=f"u{i:02d}", speaker=f"s{i % 4}", features={"audio": f"f/a{i}.npy"}, extra={"y": y}))
    return write_manifest(recs, tmp_path / "manifest.jsonl")


@pytest.mark.slow
def test_runner_fits_on_the_training_split_and_the_checkpoint_carries_the_stats(tmp_path, manifest):
    sets = [
        f"data.manifest={manifest}",
        "data.protocol=speaker-out",
        "data.target=extra.y",
        "data.max_batch_samples=null",
        "data.batch_size=8",
        "encoders.inputs=features",
        "encoders.files=[audio]",
        "encoders.standardize=[audio]",
        "model={name: seqsew_unimodal, modality: audio, input_dim: 3, gru_layers: 1, dim: 8, ffn_dim: 16,"
        " head_hidden: 8}",
        "stages=[{name: train, task: regress}]",
        "optim.lr=0.003",
        "trainer.max_epochs=2",
        "trainer.monitor=val/ccc",
        "trainer.monitor_mode=max",
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        "trainer.logger=none",
        "seeds=[0]",
    ]
    cfg = load_config(None, sets)
    run_experiment(cfg, tmp_path / "run", progress=False)
    records = read_manifest(manifest)
    by_id = {r.id: r for r in records}
    folds = resolve_folds(cfg, records)
    assert len(folds) == 4  # leave one of 4 speakers out
    for fold in folds:
        ckpt = tmp_path / "run" / fold.name / "seed0" / "train" / "best.safetensors"
        stats = read_checkpoint_meta(ckpt)["feature_stats"]["audio"]
        model, _ = load_checkpoint(ckpt)
        assert model.feature_stats["audio"] == stats
        frames = np.concatenate([np.load(tmp_path / by_id[i].features["audio"]) for i in fold.train]).astype(np.float64)
        np.testing.assert_allclose(stats["mean"], frames.mean(0), rtol=1e-5)  # the training split only
        np.testing.assert_allclose(stats["std"], frames.std(0), rtol=1e-4)
    doc = evaluate_run(tmp_path / "run", manifest)  # a later evaluation standardises with the stored stats
    assert all(np.isfinite(r["metrics"]["ccc"]) for r in doc["runs"])


def test_a_model_without_stats_is_refused_by_name(manifest):
    from emofuse.models import create_model
    from emofuse.training.components import DefaultComponents

    sets = [f"data.manifest={manifest}", "data.target=extra.y", "encoders.inputs=features", "encoders.files=[audio]"]
    cfg = load_config(None, [*sets, "encoders.standardize=[audio]", "model={name: seqsew_unimodal, input_dim: 3}"])
    model = create_model("seqsew_unimodal", modality="audio", input_dim=3)
    records = read_manifest(manifest)
    with pytest.raises(FeatureStatsError, match=r"standardize names \['audio'\].*no feature statistics"):
        DefaultComponents(progress=False).dataset(cfg, cfg.resolved_stages()[0], model, records, [], "test")
