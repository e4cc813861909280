"""task: finetune_encoder end to end: a tiny Whisper trained on raw waveforms, selected on val/ua, then predicted."""

import json
import warnings

import pytest

from emofuse.config import load_config
from emofuse.data.manifest import write_manifest
from emofuse.inference.predictor import Predictor
from emofuse.testing.dummies import make_wav_corpus
from emofuse.training import run_experiment

pytestmark = pytest.mark.slow

CLASSES = ("neutral", "happy", "sad")
CONFIG = """
name: tiny-finetune
data:
  manifest: {manifest}
  protocol: random-stratified
  max_batch_samples: null
  batch_size: 4
  augment: {{gain_db: 6, noise_snr_db: [10, 30], crop: 0.45}}
model: {{name: finetuned_encoder, encoder: tiny-whisper, layer: weighted, pooling: mean_std, freeze_front_end: true}}
optim: {{name: adamw, lr: 0.01, encoder_lr: 0.001, layer_decay: 0.5, scheduler: warmup_cosine}}
trainer: {{max_epochs: 3, accelerator: cpu, devices: 1, progress_bar: false, logger: [], monitor: val/ua,
  accumulate_grad_batches: 2}}
stages: [{{name: finetune, task: finetune_encoder}}]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    records = make_wav_corpus(root / "corpus", 15, seconds=0.4, labels=CLASSES)
    write_manifest(records, root / "corpus" / "manifest.jsonl")
    cfg = root / "config.yaml"
    cfg.write_text(CONFIG.format(manifest=root / "corpus" / "manifest.jsonl"), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_experiment(load_config(cfg), root / "run", progress=False, echo=lambda _: None)
    return root, results


def test_trains_on_raw_waveforms_and_selects_on_validation_ua(run):
    root, results = run
    seed_dir = root / "run" / "seed0" / "seed0"
    done = json.loads((seed_dir / "finetune" / "DONE").read_text())
    assert done["monitor"] == "val/ua" and done["epochs"] == 3
    curves = (seed_dir / "curves.csv").read_text().splitlines()
    header = curves[0].split(",")
    assert {"train/loss", "val/ua", "val/macro_f1", "val/weighted_f1"} <= set(header) and len(curves) == 4
    lr = [float(row.split(",")[header.index("lr")]) for row in curves[1:]]
    assert lr[0] == pytest.approx(0.01) and lr[-1] < lr[0]  # the head's lr, on the cosine schedule
    model_json = json.loads((seed_dir / "finetune" / "model.json").read_text())
    assert model_json["model_name"] == "finetuned_encoder" and model_json["task"]["name"] == "finetune_encoder"
    assert model_json["encoders"]["model.audio"]["name"] == "tiny-whisper"
    assert "ua" in results["aggregate"]


def test_predict_reads_raw_audio_like_the_test_split(run):
    root, _ = run
    seed_dir = root / "run" / "seed0" / "seed0"
    predictor = Predictor.from_checkpoint(root / "run")
    assert predictor.checkpoint.name == "best.safetensors" and predictor.modalities == ("audio",)
    rows = [json.loads(line) for line in (seed_dir / "predictions.jsonl").read_text().splitlines()]
    assert rows
    for row in rows[:3]:
        got = predictor.predict(root / "corpus" / "wav" / f"{row['id']}.wav")
        want = row["probs"] if isinstance(row["probs"], dict) else dict(zip(sorted(CLASSES), row["probs"], strict=True))
        for c, p in want.items():
            assert got.probabilities[c] == pytest.approx(p, abs=1e-5)
