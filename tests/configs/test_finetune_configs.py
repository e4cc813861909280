"""configs/finetune/: encoder fine-tuning recipes (RAVDESS Whisper tiny.en, MELD MiniLM) load, select on a
validation metric, and set separate encoder / head learning rates; their model runs at a tiny size."""

from pathlib import Path

import pytest
import torch

from emofuse.config import load_config
from emofuse.models import create_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
# file: (encoder, labels, protocol, monitor)
EXPECTED = {
    "ravdess-whisper-tiny": ("openai/whisper-tiny.en", "ravdess8", "speaker-out", "val/ua"),
    "meld-minilm": ("all-MiniLM-L6-v2", "meld7", "official", "val/weighted_f1"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_settings(name, tmp_path):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text(encoding="utf-8").startswith("# Fine-tune")  # a header that says what it is
    cfg = load_config(path, [f"data.manifest={tmp_path / 'm.jsonl'}"])
    encoder, labels, protocol, monitor = EXPECTED[name]
    assert cfg.model.name == "finetuned_encoder" and cfg.model.options["encoder"] == encoder
    assert (cfg.data.labels, cfg.data.protocol, cfg.encoders.inputs) == (labels, protocol, "raw")
    assert [s.task for s in cfg.resolved_stages()] == ["finetune_encoder"]
    assert cfg.trainer.monitor == monitor and cfg.trainer.monitor_mode == "max"  # a metric, not the loss
    assert 1e-5 <= cfg.optim.encoder_lr <= 5e-5 < cfg.optim.lr and cfg.optim.layer_decay == 0.9
    assert cfg.data.augment is None  # augmentation off by default
    if name.startswith("ravdess"):
        assert cfg.data.protocol_options == {"groups": 5, "val_groups": 1} and cfg.encoders.max_duration == 6.0
        assert cfg.model.options["freeze_front_end"] and cfg.model.options["layer"] == "weighted"


@pytest.mark.parametrize(("name", "tiny"), [("ravdess-whisper-tiny", "tiny-whisper"), ("meld-minilm", "tiny-bert")])
def test_recipe_model_runs_at_a_tiny_size(name, tiny, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.manifest={tmp_path / 'm.jsonl'}"])
    model = create_model(cfg.model.name, **{**cfg.model.options, "encoder": tiny, "num_classes": 7})
    raw = [0.1 * torch.randn(6000), 0.1 * torch.randn(4000)] if model.modality == "audio" else ["hi there", "no"]
    out = model({model.modality: model.encoder.preprocess(raw)})
    assert out.logits.shape == (2, 7)
