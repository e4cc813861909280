"""Predictor for every model family: the inputs rebuilt from the checkpoint equal the training pipeline's.

Each family is built tiny and saved with the ``inputs`` entry the runner writes; the reference is what training
feeds the model (the feature cache of :func:`~emofuse.features.extract_features`, standardised, collated by the
training datasets). Batched prediction must equal one clip at a time for clips of different lengths.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.features import extract_features  # noqa: E402
from emofuse.inference import Predictor  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from emofuse.pipeline import MultimodalDataset  # noqa: E402
from emofuse.pipeline.dialogue import DialogueDataset  # noqa: E402
from emofuse.pipeline.standardize import fit_feature_stats, standardize_stores  # noqa: E402
from emofuse.testing.dummies import make_wav_corpus  # noqa: E402

CLASSES = ["neutral", "happy"]
ENC = {"audio": "tiny-wav2vec2", "text": "tiny-bert"}


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    records = make_wav_corpus(root, 5, seconds=0.4, labels=CLASSES)  # 0.4, 0.5, 0.6, 0.4, 0.5 s
    stores = {}
    for m, name in ENC.items():
        enc = quiet(create_encoder, name, frozen=True, allow_random=True)
        stores[m] = quiet(extract_features, records, enc, root / "cache", progress=False, root=root)
    return root, records, stores


def _save(model, root, name, inputs, stats=None):
    meta = {"classes": CLASSES, "inputs": {"allow_random": True, **inputs}}
    if stats:
        meta["feature_stats"] = stats
    return save_checkpoint(model.eval(), root / name / "best.safetensors", meta)


def _reference(model, records, stores, dialogue=False):
    """What training feeds the model: the cached features (standardised as the checkpoint says), collated."""
    stores = standardize_stores({m: stores[m] for m in model.modalities}, model.feature_stats)
    if dialogue:
        recs = [r.model_copy(update={"dialogue": "d", "turn": k}) for k, r in enumerate(records)]
        ds = DialogueDataset(recs, CLASSES, stores)
    else:
        ds = MultimodalDataset(records, CLASSES, feature_stores=stores)
    with torch.inference_mode():
        out = model(ds.collate([ds[i] for i in range(len(ds))]))
    return (out.probs if out.probs is not None else out.logits.softmax(-1)).numpy()


def _predict_each(p, root, records):
    preds = [p.predict(root / r.audio, text=r.text) for r in records]
    return preds, np.array([[q.probabilities[c] for c in CLASSES] for q in preds])


def _batched_equals_single(p, root, records, single):
    batched = p.predict_batch([root / r.audio for r in records], [r.text for r in records])
    got = np.array([[q.probabilities[c] for c in CLASSES] for q in batched])
    np.testing.assert_allclose(got, single, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mult", dict(audio_dim=32, text_dim=32, dim=10, num_heads=2, num_layers=2)),
        ("probe", dict(modality="text", input_dim=32)),
    ],
)
def test_feature_models_match_the_training_inputs(corpus, name, options):
    root, records, stores = corpus
    torch.manual_seed(0)
    model = quiet(create_model, name, num_classes=2, **options)
    stats = fit_feature_stats({m: stores[m] for m in model.modalities}, [r.id for r in records], list(model.modalities))
    model.feature_stats = stats  # encoders.standardize travels in the checkpoint
    path = _save(model, root, name, {"inputs": "features", **ENC, "standardize": list(model.modalities)}, stats)
    p = quiet(Predictor.from_checkpoint, path)
    assert p.inputs.kind == "features" and p.card()["capabilities"]["input_kind"] == "features"
    _, single = _predict_each(p, root, records)
    np.testing.assert_allclose(single, _reference(model, records, stores), atol=1e-5)
    _batched_equals_single(p, root, records, single)


def test_dialogue_model_scores_a_conversation_in_context(corpus):
    root, records, stores = corpus
    torch.manual_seed(0)
    model = quiet(create_model, "cm_roberta", num_classes=2, audio_dim=32, text_dim=32, hidden=8, num_heads=2)
    path = _save(model, root, "cm_roberta", {"inputs": "features", **ENC})
    p = quiet(Predictor.from_checkpoint, path)
    assert p.dialogue_level
    turns = p.predict_dialogue([root / r.audio for r in records], [r.text for r in records])
    got = np.array([[q.probabilities[c] for c in CLASSES] for q in turns])
    np.testing.assert_allclose(got, _reference(model, records, stores, dialogue=True), atol=1e-5)
    # a single clip is a one-turn dialogue; batching clips keeps them apart
    _, single = _predict_each(p, root, records[:3])
    _batched_equals_single(p, root, records[:3], single)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cmd_student", dict(audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert", num_classes=2)),
        ("mgcma", dict(audio_encoder="tiny-wav2vec2", text_encoder="tiny-bert", num_heads=2, tam_layers=2)),
        ("finetuned_encoder", dict(encoder="tiny-whisper", layer="weighted", pooling="mean_std")),
        ("finetuned_encoder", dict(encoder="tiny-bert")),
    ],
)
def test_raw_input_models_batched_equals_one_at_a_time(corpus, name, options):
    root, records, _ = corpus
    torch.manual_seed(0)
    model = quiet(create_model, name, **{"num_classes": 2, **options})
    p = quiet(Predictor.from_checkpoint, _save(model, root, name, {"inputs": "raw"}))
    assert p.inputs.kind == "raw"
    _, single = _predict_each(p, root, records)
    _batched_equals_single(p, root, records, single)


def test_regression_model_gives_values(corpus):
    root, records, _ = corpus
    torch.manual_seed(0)
    model = quiet(create_model, "conflictnet", window=8000, filters=(4, 8, 8), lstm_sizes=(8, 4))
    path = save_checkpoint(model.eval(), root / "conflict" / "best.safetensors", {"inputs": {"inputs": "raw"}})
    p = quiet(Predictor.from_checkpoint, path)
    preds = p.predict_batch([root / r.audio for r in records])
    for r, q in zip(records, preds, strict=True):
        assert q.label is None and q.probabilities == {} and len(q.values) == 1
        assert q.values == pytest.approx(p.predict(root / r.audio).values, abs=1e-5)


def test_models_reading_feature_files_are_refused_with_the_reason(corpus):
    root, _, _ = corpus
    model = quiet(create_model, "tri_fusion_cross", audio_dim=8, text_dim=12, video_dim=5, num_classes=2)
    path = _save(model, root, "tri", {"inputs": "features", "files": ["video"]})
    with pytest.raises(CheckpointError, match="reads .*video.* features from feature files"):
        quiet(Predictor.from_checkpoint, path)


RUN_CONFIG = """
name: tiny-mult
seeds: [0]
data: {{manifest: {manifest}, protocol: random-stratified}}
model: {{name: mult, audio_dim: null, text_dim: null, dim: 8, num_heads: 2, num_layers: 1}}
encoders:
  inputs: features
  audio: tiny-wav2vec2
  text: tiny-bert
  allow_random: true
  cache_dir: {cache}
  standardize: [audio, text]
optim: {{lr: 0.001}}
trainer: {{max_epochs: 1, accelerator: cpu, devices: 1, progress_bar: false, logger: []}}
"""


def test_a_trained_feature_run_predicts_what_it_tested(tmp_path):
    import json

    from emofuse.config import load_config
    from emofuse.data.manifest import write_manifest
    from emofuse.training import run_experiment

    records = make_wav_corpus(tmp_path, 12, seconds=0.4, labels=CLASSES)
    write_manifest(records, tmp_path / "manifest.jsonl", overwrite=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(RUN_CONFIG.format(manifest=tmp_path / "manifest.jsonl", cache=tmp_path / "cache"), encoding="utf-8")
    quiet(run_experiment, load_config(cfg), tmp_path / "run", progress=False, echo=lambda _: None)
    p = quiet(Predictor.from_checkpoint, tmp_path / "run")
    assert p.meta["inputs"]["standardize"] == ["audio", "text"] and p.model.feature_stats
    by_id = {r.id: r for r in records}
    rows = [json.loads(line) for line in (tmp_path / "run" / "seed0" / "seed0" / "predictions.jsonl").open()]
    assert rows
    for row in rows:
        rec = by_id[row["id"]]
        got = p.predict(tmp_path / rec.audio, text=rec.text).probabilities
        np.testing.assert_allclose([got[c] for c in p.classes], row["probs"], atol=1e-5)  # the run's class order


def test_cli_scores_a_conversation_with_a_dialogue_model(corpus):
    import json

    from typer.testing import CliRunner

    from emofuse.cli.main import app
    from emofuse.data.manifest import write_manifest

    root, records, _ = corpus
    torch.manual_seed(0)
    model = quiet(create_model, "cm_roberta", num_classes=2, audio_dim=32, text_dim=32, hidden=8, num_heads=2)
    path = _save(model, root, "cm_roberta_cli", {"inputs": "features", **ENC})
    manifest = write_manifest(records, root / "conversation.jsonl", overwrite=True)
    res = CliRunner().invoke(app, ["predict", str(path), str(manifest), "--dialogue", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("{") :])["results"]
    p = quiet(Predictor.from_checkpoint, path)
    ref = p.predict_dialogue([root / r.audio for r in records], [r.text for r in records])
    assert [r["file"] for r in rows] == [r.id for r in records]
    for row, q in zip(rows, ref, strict=True):
        assert row["probabilities"] == pytest.approx(q.probabilities, abs=1e-6)
    mult = _save(quiet(create_model, "probe", modality="text", input_dim=32, num_classes=2), root, "p2", ENC)
    res = CliRunner().invoke(app, ["predict", str(mult), str(manifest), "--dialogue"])
    assert res.exit_code == 2 and "--dialogue needs a dialogue-level model" in res.output
