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


def test_selects_on_validation_ua_unless_the_config_names_a_monitor(tmp_path):
    records = make_wav_corpus(tmp_path / "corpus", 15, seconds=0.3, labels=CLASSES)
    write_manifest(records, tmp_path / "corpus" / "manifest.jsonl")
    text = CONFIG.format(manifest=tmp_path / "corpus" / "manifest.jsonl").replace(" monitor: val/ua,", "")
    text = text.replace("max_epochs: 3", "max_epochs: 1")
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    cfg = load_config(tmp_path / "c.yaml")
    assert "monitor" not in cfg.trainer.model_fields_set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(cfg, tmp_path / "run", progress=False, echo=lambda _: None)
    done = json.loads((tmp_path / "run" / "seed0" / "seed0" / "finetune" / "DONE").read_text())
    assert done["monitor"] == "val/ua"


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


COSMIC = """
name: tiny-cosmic-{step}
data: {{manifest: {manifest}, protocol: official, protocol_options: {{speaker_dependent: true}}, batch_size: 4,
  max_batch_samples: null}}
trainer: {{max_epochs: 2, accelerator: cpu, devices: 1, progress_bar: false, logger: [], monitor: val/weighted_f1}}
"""
FINETUNE = """
model: {name: finetuned_encoder, encoder: tiny-roberta}
optim: {name: adamw, lr: 0.01, encoder_lr: 0.001, layer_decay: 0.9}
stages: [{name: finetune, task: finetune_encoder}]
"""
CM_ROBERTA = """
model: {{name: cm_roberta_text, text_dim: null, hidden: 8, num_heads: 2, ffn_dim: 16, head_hidden: 8}}
encoders: {{text: tiny-roberta-last2, inputs: features, cache_dir: {cache}, text_options: {{checkpoint: {ckpt}}}}}
stages: [{{name: train, task: classify, task_options: {{loss: ce}}}}]
"""


def test_cm_roberta_reads_the_states_of_a_fine_tuned_text_encoder(tmp_path, monkeypatch):
    """The COSMIC recipe: fine-tune the text encoder on the corpus, then CM-RoBERTa's features come from it."""
    from emofuse.models.checkpoint import load_checkpoint

    recs = make_wav_corpus(tmp_path / "corpus", 24, seconds=0.2, labels=CLASSES)
    split = {0: "train", 1: "train", 2: "train", 3: "dev", 4: "test", 5: "test"}
    recs = [
        r.model_copy(update={"dialogue": f"d{i // 4}", "turn": i % 4, "split": split[i // 4], "audio": None})
        for i, r in enumerate(recs)
    ]
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    write_manifest(recs, manifest)
    (tmp_path / "ft.yaml").write_text(COSMIC.format(manifest=manifest, step="ft") + FINETUNE, encoding="utf-8")
    cm = CM_ROBERTA.format(cache=tmp_path / "cache", ckpt="ft-run")  # relative: made absolute in the run's config
    (tmp_path / "cm.yaml").write_text(COSMIC.format(manifest=manifest, step="cm") + cm, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(load_config(tmp_path / "ft.yaml"), tmp_path / "ft-run", progress=False, echo=lambda _: None)
        monkeypatch.chdir(tmp_path)
        run_experiment(load_config(tmp_path / "cm.yaml"), tmp_path / "cm-run", progress=False, echo=lambda _: None)
    saved = load_config(tmp_path / "cm-run" / "config.yaml")
    assert saved.encoders.text_options["checkpoint"] == str(tmp_path / "ft-run")
    model, meta = load_checkpoint(tmp_path / "cm-run" / "official" / "seed0" / "train")
    text = meta["encoders"]["text"]
    assert model.config["text_dim"] == 64 and text["name"] == "tiny-roberta-last2" and text["resolved"] == "local"
    assert any("fine-tuned on the corpus first" in n for n in text["notes"])
    assert not any("NOT the paper's" in n for n in text["notes"])
    assert any("fine-tuned end to end by emofuse" in n for n in text["notes"])
