"""The RAVDESS evidence configs run unchanged on any manifest whose records carry ``split``.

Each config runs end to end with exactly the ``--set`` overrides its header and the README give for a user's own
split (``data.protocol=official``, ``data.protocol_options={}``, ``data.folds=null``), on a miniature RAVDESS
manifest; only the teacher is swapped for the tiny test Whisper and the schedules cut to one epoch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.config import load_config
from emofuse.data.labels import get_scheme
from emofuse.training.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]
USER_SPLIT = ("data.protocol=official", "data.protocol_options={}", "data.folds=null")
TINY = {
    "configs/evidence/ravdess-wav-distill.yaml": ("model.audio_teacher=tiny-whisper", "model.allow_random=true",
                                                  "stages.distill.trainer.max_epochs=1",
                                                  "stages.finetune.trainer.max_epochs=1"),
    "configs/evidence/ravdess-wav2.yaml": ("encoders.audio=tiny-whisper", "encoders.allow_random=true",
                                           "trainer.max_epochs=1"),
    "configs/evidence/ravdess-probe.yaml": ("encoders.audio=tiny-whisper", "encoders.allow_random=true",
                                            "model.num_layers=3", "trainer.max_epochs=1"),
}  # fmt: skip


def _manifest(root: Path) -> Path:
    """Six actors, every RAVDESS emotion twice: actors 1-4 train, 5 validates, 6 tests."""
    rng = np.random.default_rng(0)
    classes = list(get_scheme("ravdess8").classes)
    lines = []
    for actor in range(1, 7):
        split = "train" if actor <= 4 else ("dev" if actor == 5 else "test")
        for e, label in enumerate(classes, 1):
            for rep in (1, 2):
                uid = f"03-01-{e:02d}-01-01-{rep:02d}-{actor:02d}"
                path = root / f"{uid}.wav"
                wave = 0.05 * rng.standard_normal(9600) + 0.1 * np.sin(np.arange(9600) * e / 40)
                sf.write(path, wave.astype(np.float32), 16000)
                lines.append({"id": uid, "audio": str(path), "text": "Kids are talking by the door", "label": label,
                              "speaker": f"Actor_{actor:02d}", "split": split})  # fmt: skip
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(TINY))
def test_evidence_config_runs_on_a_users_own_split(config, tmp_path):
    manifest = _manifest(tmp_path)
    overrides = [f"data.manifest={manifest}", *USER_SPLIT, f"encoders.cache_dir={tmp_path / 'features'}",
                 *TINY[config]]  # fmt: skip
    cfg = load_config(ROOT / config, overrides)
    cfg.seeds = [0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_experiment(cfg, tmp_path / "run", overrides, progress=False, echo=lambda s: None)
    assert doc is not None
    assert [r["fold"] for r in doc["runs"]] == ["official"]
    metrics = doc["runs"][0]["metrics"]
    assert 0.0 <= metrics["ua"] <= 1.0 and np.isfinite(metrics["macro_f1"])
