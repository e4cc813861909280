"""configs/thesis/conflictnet (Rajan 2022, Table 3.1): every row loads and builds; one trains on a mini corpus."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.config import load_config
from emofuse.data.corpora import prepare
from emofuse.data.manifest import write_manifest
from emofuse.models import create_model

ROOT = Path(__file__).resolve().parents[2] / "configs" / "thesis" / "conflictnet"
CONFIGS = sorted(ROOT.glob("t3.1-*.yaml"))
ROWS = {  # config -> (avg_pool, attention, gap, trainable parameters)
    "t3.1-paranet": (False, False, False, 420_418 - 8_257),
    "t3.1-paranet-ap": (True, False, False, 420_418 - 8_257),
    "t3.1-paranet-attn": (False, True, False, 420_418),
    "t3.1-paranet-ap-attn-gap": (True, True, True, 420_418),
    "t3.1-conflictnet": (True, True, False, 420_418),
}


def test_every_table_row_has_a_config():
    assert {p.stem for p in CONFIGS} == set(ROWS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_matches_the_thesis_settings(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Table 3.1, ") and "Thesis: PCC ." in text  # header: the row and its numbers
    cfg = load_config(path)
    assert cfg.data.sample_rate == 8000 and cfg.data.target == "extra.conflict" and cfg.data.batch_size == 32
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.scheduler, cfg.optim.decay) == ("adam", 0.01, "inverse_time", 0.6)
    assert cfg.trainer.monitor == "val/pcc" and cfg.trainer.monitor_mode == "max" and len(cfg.seeds) == 10
    stage = cfg.resolved_stages()[0]
    assert stage.task == "regress" and stage.task_options["loss"] == "pcc"
    model = create_model(cfg.model.name, **cfg.model.options)
    avg_pool, attention, gap, trainable = ROWS[path.stem]
    assert (model.config["avg_pool"], model.config["attention"], model.config["gap"]) == (avg_pool, attention, gap)
    assert model.parameter_counts()["trainable"] == trainable and model.parameter_counts()["non_trainable"] == 896


@pytest.mark.slow
def test_conflictnet_config_trains_end_to_end_on_a_miniature_corpus(tmp_path):
    from emofuse.training import run_experiment

    rng = np.random.default_rng(0)
    root = tmp_path / "sspnet"
    (root / "wav").mkdir(parents=True)
    rows = ["file,level,moderator"]
    for i in range(20):
        level = float(rng.uniform(-9, 9))
        loud = 0.05 + 0.1 * (level + 10)  # conflict ~ loudness variation
        wave = 0.05 * rng.standard_normal(2000)
        wave[: int(100 * (level + 10))] *= loud * 20
        name = f"06-11-{i:02d}_0_30"
        sf.write(root / "wav" / f"{name}.wav", wave.astype(np.float32), 8000)
        rows.append(f"{name}.wav,{level:.2f},{50 if i < 12 else (153 if i < 16 else 7)}")
    (root / "conflictlevel.csv").write_text("\n".join(rows) + "\n")
    prep = prepare("sspnet", root, progress=False)
    manifest = write_manifest(prep.records, tmp_path / "manifest.jsonl")
    sets = [
        f"data.manifest={manifest}",
        "seeds=[1]",
        "data.batch_size=4",
        "model.window=2000",
        "model.filters=[4, 8, 8]",
        "model.lstm_sizes=[8, 4]",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.logger=none",
    ]
    cfg = load_config(ROOT / "t3.1-conflictnet.yaml", sets)
    doc = run_experiment(cfg, tmp_path / "run", progress=False)
    m = doc["runs"][0]["metrics"]
    assert m["n"] == 4 and {"pcc", "ccc", "mae", "uar", "war"} <= set(m)
    assert "| Experiment | PCC | CCC | MAE | UAR | WAR |" in (tmp_path / "run" / "results.md").read_text()
