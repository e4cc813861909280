"""Missing-modality evaluation of a trained tri-modal run (zero / absent / KNN) and ModDrop training."""

import hashlib
import json
import warnings

import pytest
import torch

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.models import create_model
from emofuse.models.checkpoint import load_checkpoint
from emofuse.pipeline import MultimodalDataset
from emofuse.pipeline.missing import ModDropDataset, drop_modalities
from emofuse.training import run_experiment
from emofuse.training.components import Components
from emofuse.training.evaluate import predict, score
from emofuse.training.missing import all_conditions, compare_missing, evaluate_missing, fit_imputer, missing_markdown

CLASSES = ("neutral", "happy", "sad")
DIMS = {"text": (5, 6), "video": (3, 5), "audio": (7, 4)}  # (frames, dim)
TINY = dict(text_dim=6, video_dim=5, audio_dim=4, text_len=5, video_len=3, video_short=2, audio_len=7)
TINY |= dict(audio_short=3, hidden=4, num_heads=2, text_dropout=0.0)


class HashStore:
    """Deterministic class-dependent features per utterance id (a modality can be missing for some ids)."""

    def __init__(self, modality, labels, missing=()):
        self.modality, self.labels, self.missing = modality, labels, set(missing)
        self.allow_missing = True
        self.output_dim = DIMS[modality][1]

    def __contains__(self, utt):
        return utt not in self.missing

    def get(self, utt):
        t, d = DIMS[self.modality]
        seed = int(hashlib.sha1(f"{self.modality}/{utt}".encode()).hexdigest()[:8], 16)
        x = torch.randn(t, d, generator=torch.Generator().manual_seed(seed)) * 0.5
        x[:, CLASSES.index(self.labels[utt]) % d] += 1.5
        return x


class TriComponents(Components):
    def __init__(self, labels, missing=()):
        self.labels, self.missing = labels, missing
        self.sizes = {}

    def model(self, cfg, stage, classes):
        return create_model(cfg.model.name, **{"num_classes": len(classes), **cfg.model.options, **stage.model})

    def dataset(self, cfg, stage, model, records, classes, split):
        stores = {m: HashStore(m, self.labels, self.missing if m == "video" else ()) for m in DIMS}
        ds = MultimodalDataset(records, list(classes), feature_stores=stores)
        self.sizes[split] = len(ds)
        return ds

    def task(self, cfg, stage, model, classes, train):
        from emofuse.tasks.classification import ClassificationTask

        self.sizes["task_train"] = len(train)
        return ClassificationTask(model, loss="ce")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("missing")
    recs = [Utterance(id=f"u{i:03d}", text="x", label=CLASSES[i % 3], speaker=f"s{i % 4}") for i in range(45)]
    write_manifest(recs, tmp / "manifest.jsonl")
    labels = {r.id: r.label for r in recs}
    sets = [
        f"data.manifest={tmp / 'manifest.jsonl'}",
        "data.protocol=random-stratified",
        "data.max_batch_samples=null",
        "data.batch_size=8",
        "model.name=tri_fusion_intra",
        *[f"model.{k}={v}" for k, v in TINY.items()],
        "optim.lr=0.01",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.progress_bar=false",
        "trainer.logger=none",
        "seeds=[0]",
    ]
    cfg = load_config(None, sets)
    comps = TriComponents(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(cfg, tmp / "run", components=comps, progress=False)
    return tmp, labels, comps, cfg


def test_conditions_of_table_4_4():
    assert all_conditions(["text", "video", "audio"]) == [
        ("video", "audio"),
        ("text", "audio"),
        ("text", "video"),
        ("audio",),
        ("video",),
        ("text",),
    ]


@pytest.mark.slow
def test_zero_and_absent_rows(trained):
    tmp, labels, comps, cfg = trained
    run = tmp / "run"
    doc = evaluate_missing(run, mode="zero", out_dir=tmp / "zero", components=comps)
    names = [c["name"] for c in doc["conditions"]]
    assert names[0] == "full" and len(names) == 7 and "-video-audio (zero)" in names
    metrics = json.loads(next(run.glob("*/seed0/metrics.json")).read_text())
    full = doc["conditions"][0]["runs"][0]["metrics"]
    assert full["wa"] == pytest.approx(metrics["wa"]) and full["ua"] == pytest.approx(metrics["ua"])
    # a row equals scoring the test split by hand with the modality zeroed
    ckpt = next(run.glob("*/seed0/train/best.safetensors"))
    model, _ = load_checkpoint(ckpt)
    from emofuse.data.manifest import read_manifest
    from emofuse.training.rundir import resolve_folds

    records = read_manifest(cfg.data.manifest)
    f0 = resolve_folds(cfg, records)[0]
    by_id = {r.id: r for r in records}
    classes = doc["classes"]  # the run's class order (sorted labels), not CLASSES
    ds = comps.dataset(cfg, None, model, [by_id[i] for i in f0.test], classes, "test")

    class Dropped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.model_name = inner, "x"

        def forward(self, b):
            return self.inner(drop_modalities(b, ["video"], "zero"))

    want = score(predict(Dropped(model), ds, cfg.data), classes)
    row = next(c for c in doc["conditions"] if c["name"] == "-video (zero)")
    assert row["runs"][0]["metrics"]["wa"] == pytest.approx(want["wa"])
    md = (tmp / "zero" / "missing.md").read_text()
    assert "| ● | ○ | ○ | zero |" in md and "| ● | ● | ● | – |" in md
    absent = evaluate_missing(run, [["audio"]], mode="absent", components=comps)
    assert [c["name"] for c in absent["conditions"]] == ["full", "-audio (absent)"]
    with pytest.raises(ValueError, match="proper subset"):
        evaluate_missing(run, [["text", "video", "audio"]], components=comps)


@pytest.mark.slow
def test_knn_latent_imputation_with_all_neighbours_is_the_training_mean(trained):
    tmp, labels, comps, cfg = trained
    run = tmp / "run"
    doc = evaluate_missing(run, [["video"]], mode="knn", k=[2, 1000], components=comps)
    assert [c["name"] for c in doc["conditions"]] == ["full", "-video (knn k=2)", "-video (knn k=1000)"]
    model, _ = load_checkpoint(next(run.glob("*/seed0/train/best.safetensors")))
    from emofuse.data.manifest import read_manifest
    from emofuse.training.rundir import resolve_folds

    records = read_manifest(cfg.data.manifest)
    f0 = resolve_folds(cfg, records)[0]
    by_id = {r.id: r for r in records}
    classes = doc["classes"]
    train = comps.dataset(cfg, None, model, [by_id[i] for i in f0.train], classes, "train")
    imputer, latent = fit_imputer(model, train, cfg, 1000)
    assert latent and imputer.train["video"].shape == (len(f0.train), 8)
    # by hand: the training vectors are the model's intra-attention video vectors of every training item
    model.eval()
    with torch.no_grad():
        b = train.collate([train[i] for i in range(len(train))])
        assert torch.allclose(torch.as_tensor(imputer.train["video"]).float(), model(b).pooled["video"], atol=1e-5)
        mean = model(b).pooled["video"].mean(0)
        test = comps.dataset(cfg, None, model, [by_id[i] for i in f0.test], classes, "test")
        tb = test.collate([test[i] for i in range(len(test))])
        tb = drop_modalities(tb, ["video"], "absent")
        tb["latent_override"] = {"video": mean.expand(len(test), -1)}
        probs = model(tb).probs
    want = score({"ids": list(range(len(test))), "labels": tb["labels"], "probs": probs}, classes)
    row = doc["conditions"][2]
    assert row["runs"][0]["metrics"]["wa"] == pytest.approx(want["wa"])
    assert "knn (K=1000)" in missing_markdown(doc)


@pytest.mark.slow
def test_moddrop_config_multiplies_the_training_set(trained, tmp_path):
    tmp, labels, _, cfg = trained
    cfg = cfg.model_copy(deep=True)
    cfg.data.moddrop = {"mode": "zero"}
    cfg.eval.missing = {"conditions": [["video"]], "mode": "absent"}
    cfg.trainer.max_epochs = 1
    comps = TriComponents(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(cfg, tmp_path / "run", components=comps, progress=False)
    assert comps.sizes["task_train"] == 4 * comps.sizes["train"]  # (T,V,A), (0,V,A), (T,0,A), (T,V,0)
    doc = json.loads((tmp_path / "run" / "missing.json").read_text())
    assert [c["name"] for c in doc["conditions"]] == ["full", "-video (absent)"]
    assert "| ● | ○ | ● | absent |" in (tmp_path / "run" / "missing.md").read_text()


def test_moddrop_dataset_wraps_multimodal_dataset():
    recs = [Utterance(id=f"u{i}", text="x", label=CLASSES[i % 3]) for i in range(3)]
    labels = {r.id: r.label for r in recs}
    stores = {m: HashStore(m, labels) for m in DIMS}
    ds = ModDropDataset(MultimodalDataset(recs, list(CLASSES), feature_stores=stores), list(DIMS), mode="absent")
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert len(ds) == 12 and batch["labels"].tolist() == [0, 1, 2] * 4
    assert batch["present"]["video"].tolist() == [True] * 6 + [False] * 3 + [True] * 3
    assert not batch["features"]["video_mask"][6:9].any() and batch["features"]["video_mask"][:6].all()


def test_compare_missing_puts_runs_side_by_side():
    def doc(rows):
        return {
            "modalities": ["text", "video", "audio"],
            "conditions": [
                {
                    "drop": d,
                    "k": k,
                    "aggregate": {"ua": {"mean": ua, "std": 0.01}, "wa": {"mean": ua + 0.1, "std": 0.02}},
                }
                for d, k, ua in rows
            ],
        }

    a = doc([([], None, 0.5), (["audio"], None, 0.4)])
    b = doc([([], None, 0.55), (["audio"], None, 0.5), (["video", "text"], None, 0.3)])
    md = compare_missing({"Intra": a, "Intra+ModDrop": b})
    lines = md.splitlines()
    assert lines[0] == "| Text | Video | Audio | K | Intra UA | Intra WA | Intra+ModDrop UA | Intra+ModDrop WA |"
    assert lines[2] == "| ● | ● | ● | – | 0.500 (0.010) | 0.600 (0.020) | 0.550 (0.010) | 0.650 (0.020) |"
    assert lines[3] == "| ● | ● | ○ | – | 0.400 (0.010) | 0.500 (0.020) | 0.500 (0.010) | 0.600 (0.020) |"
    assert lines[4] == "| ○ | ○ | ● | – | – | – | 0.300 (0.010) | 0.400 (0.020) |"


def test_knn_transform_groups_rows_by_what_they_have():
    import numpy as np

    from emofuse.pipeline.imputation import KNNImputer
    from emofuse.training.missing import _knn_transform

    torch.manual_seed(0)
    model = create_model("tri_fusion_intra", num_classes=3, **TINY).eval()
    recs = [Utterance(id=f"u{i}", text="x", label=CLASSES[i % 3]) for i in range(3)]
    labels = {r.id: r.label for r in recs}
    stores = {m: HashStore(m, labels, {"u2"} if m == "video" else ()) for m in DIMS}  # u2 has no video
    ds = MultimodalDataset(recs, list(CLASSES), feature_stores=stores)
    batch = ds.collate([ds[i] for i in range(3)])
    rng = np.random.default_rng(0)
    imputer = KNNImputer(k=2).fit({m: rng.normal(size=(10, 8)) for m in DIMS})
    with torch.no_grad():
        out = _knn_transform(model, imputer, True, ["audio"])(batch)
        own = model(drop_modalities(batch, ["audio"], "absent")).pooled
    over = out["latent_override"]
    assert sorted(over) == ["audio", "video"]
    both = imputer.impute({"text": own["text"][:2], "video": own["video"][:2]}, ["audio"])["audio"]
    alone = imputer.impute({"text": own["text"][2:]}, ["audio", "video"])
    assert np.allclose(over["audio"][:2].numpy(), both, atol=1e-6)
    assert np.allclose(over["audio"][2:].numpy(), alone["audio"], atol=1e-6)
    assert np.allclose(over["video"][2:].numpy(), alone["video"], atol=1e-6)
    assert torch.allclose(over["video"][:2], own["video"][:2])  # present video keeps its own vector
    # a modality the data never has is not an error: it is left out of the neighbour search
    no_video = {k: v for k, v in batch.items()}
    no_video["features"] = {k: v for k, v in batch["features"].items() if not k.startswith("video")}
    with torch.no_grad():
        out2 = _knn_transform(model, imputer, True, ["audio"])(no_video)
    assert sorted(out2["latent_override"]) == ["audio"]
