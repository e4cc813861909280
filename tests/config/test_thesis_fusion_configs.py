"""Every config of configs/thesis/fusion (Rajan 2022, Tables 4.1-4.5) loads and builds the model it names."""

from pathlib import Path

import pytest

from emofuse.config import load_config
from emofuse.models import create_model

ROOT = Path(__file__).resolve().parents[2] / "configs" / "thesis" / "fusion"
CONFIGS = sorted(p for p in ROOT.glob("t4.*.yaml"))
LETTERS = {"t": "text", "v": "video", "a": "audio"}


def test_every_table_row_has_a_config():
    names = {p.stem for p in CONFIGS}
    for s in ("t", "v", "a", "tv", "ta", "va", "tva"):
        assert f"t4.1-intra-{s}" in names
    for s in ("tv", "ta", "va", "tva"):
        assert f"t4.1-cross-{s}" in names
    assert {"t4.2-cross-nosp", "t4.2-intra-nosp", "t4.2-cross-intra"} <= names
    assert len([n for n in names if n.startswith("t4.3-")]) == 12
    assert {
        "t4.4-intra-missing",
        "t4.4-cross-missing",
        "t4.4-intra-knn",
        "t4.5-cross-moddrop",
        "t4.5-intra-moddrop",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_its_model(path):
    cfg = load_config(path)
    text = path.read_text(encoding="utf-8")
    assert (
        text.startswith(("# Table 4.", "# Fig. 4.")) and "Thesis:" in text
    )  # header names the row and the thesis numbers
    assert cfg.seeds == list(range(1, 11)) and cfg.data.protocol_options["k"] == 5
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1e-3 and cfg.optim.scheduler == "plateau"
    assert cfg.optim.plateau_monitor == "val/loss"
    assert cfg.trainer.monitor == "val/wa" and cfg.trainer.early_stopping_patience == 10
    model = create_model(cfg.model.name, **{"num_classes": 7, **cfg.model.options})
    stem = path.stem.split("-")
    if path.stem.startswith("t4.1-"):
        assert list(model.modalities) == [LETTERS[c] for c in stem[-1]]
    if path.stem in ("t4.1-intra-tva", "t4.4-intra-missing", "t4.4-intra-knn", "t4.5-intra-moddrop"):
        assert model.num_parameters() == 1_645_892
    if path.stem in ("t4.1-cross-tva", "t4.4-cross-missing", "t4.5-cross-moddrop"):
        assert model.num_parameters() == 1_820_132
    if path.stem.startswith("t4.3-"):
        assert sorted(model.pairs) == sorted(p.upper() for p in stem[2:])
    if "video" not in model.modalities:
        assert cfg.encoders.files == []
    if path.stem.startswith("t4.5-"):
        assert cfg.data.moddrop is not None and cfg.data.moddrop.mode == "zero"
    if path.stem.startswith("t4.4-") or path.stem.startswith("t4.5-"):
        assert cfg.eval.missing is not None
