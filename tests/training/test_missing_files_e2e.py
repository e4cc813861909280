"""End to end with the library's components: tri-modal feature files (video absent for some records), ModDrop,
``emofuse train`` then ``emofuse evaluate RUN --drop-all`` / ``--drop video --drop-mode knn``."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.manifest import Utterance, write_manifest

runner = CliRunner()
CLASSES = ("neutral", "happy", "sad")
DIMS = {"text": (6, 5), "video": (3, 4), "audio": (8, 3)}

CONFIG = """
name: tiny-tri
seeds: [0]
data:
  manifest: {manifest}
  protocol: random-stratified
  max_batch_samples: null
  batch_size: 8
  moddrop: {{mode: zero}}
model:
  name: tri_fusion_intra
  text_dim: 5
  video_dim: 4
  audio_dim: 3
  text_len: 6
  video_len: 3
  video_short: 2
  audio_len: 8
  audio_short: 4
  hidden: 4
  num_heads: 2
encoders:
  inputs: features
  files: [text, video, audio]
optim: {{name: adam, lr: 0.01, scheduler: plateau, plateau_patience: 1}}
trainer:
  max_epochs: 2
  monitor: val/wa
  accelerator: cpu
  devices: 1
  progress_bar: false
  logger: none
stages:
  - name: train
    task: classify
    task_options: {{loss: ce}}
"""


@pytest.mark.slow
def test_train_then_missing_rows_from_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "feats").mkdir()
    recs = []
    for i in range(36):
        label = CLASSES[i % 3]
        refs = {}
        for m, (t, d) in DIMS.items():
            if m == "video" and i % 5 == 0:
                continue  # no face features for this utterance: absent, masked
            x = rng.normal(size=(t - i % 2, d)).astype(np.float32) * 0.5
            x[:, i % 3 % d] += 1.5
            np.save(tmp_path / "feats" / f"{m}{i}.npy", x)
            refs[m] = f"feats/{m}{i}.npy"
        recs.append(Utterance(id=f"u{i:02d}", text="x", label=label, speaker=f"s{i % 4}", features=refs))
    write_manifest(recs, tmp_path / "manifest.jsonl")
    cfg = tmp_path / "tri.yaml"
    cfg.write_text(CONFIG.format(manifest=tmp_path / "manifest.jsonl"))
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(cfg), "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(next(run.glob("*/seed0/metrics.json")).read_text())
    res = runner.invoke(
        app, ["evaluate", str(run), "--drop-all", "--drop-mode", "absent", "--out", str(tmp_path / "m")]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "m" / "missing.json").read_text())
    assert [c["name"] for c in doc["conditions"]][:2] == ["full", "-video-audio (absent)"]
    assert len(doc["conditions"]) == 7
    assert doc["conditions"][0]["runs"][0]["metrics"]["wa"] == pytest.approx(metrics["wa"])
    assert "| ● | ○ | ○ | absent |" in (tmp_path / "m" / "missing.md").read_text()
    res = runner.invoke(
        app, ["evaluate", str(run), "--drop", "video", "--drop-mode", "knn", "--k", "3", "--out", str(tmp_path / "k")]
    )
    assert res.exit_code == 0, res.output
    knn = json.loads((tmp_path / "k" / "missing.json").read_text())
    assert [c["name"] for c in knn["conditions"]] == ["full", "-video (knn k=3)"]
