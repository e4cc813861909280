"""configs/thesis/sew (Rajan 2022, Table 5.2): 5 transfer cases x 6 rows; each loads, builds its model and task."""

from pathlib import Path

import pytest

from emofuse.config import load_config
from emofuse.models import create_model
from emofuse.tasks import SEWTask

ROOT = Path(__file__).resolve().parents[2] / "configs" / "thesis" / "sew"
CONFIGS = sorted(ROOT.glob("t5.2-*.yaml"))
WEIGHTS = {  # row -> (alpha: S_D1, beta: S_D2, gamma: CCA)
    "sew": (1, 1, 1),
    "no-sd2": (1, 0, 1),
    "no-cca": (1, 1, 0),
    "no-sd1": (0, 1, 1),
    "no-cca-sd1": (0, 1, 0),
    "unimodal-weaker": (0, 0, 0),
}
DIMS = {"audio": 88, "video_geo": 632, "video_app": 168}


def test_every_table_cell_has_a_config():
    cases = ("ar-vgeo+aud", "ar-vapp+aud", "va-aud+vgeo", "va-vapp+aud", "va-vapp+vgeo")
    assert {p.stem for p in CONFIGS} == {f"t5.2-{c}-{r}" for c in cases for r in WEIGHTS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_its_model_and_task(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Table 5.2, ") and "Thesis: CCC 0." in text
    cfg = load_config(path)
    opts = cfg.model.options
    assert cfg.data.target == ("extra.arousal" if "-ar-" in path.stem else "extra.valence")
    assert sorted(cfg.encoders.files) == sorted([opts["weak"], opts["strong"]])
    assert (opts["weak_dim"], opts["strong_dim"]) == (DIMS[opts["weak"]], DIMS[opts["strong"]])
    assert opts["latent"] == (168 if "video_app" in (opts["weak"], opts["strong"]) else 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 1e-3, 0.7)
    model = create_model(cfg.model.name, **opts)
    stage = cfg.resolved_stages()[0]
    task = SEWTask(model, **stage.task_options)
    row = next(r for r in sorted(WEIGHTS, key=len, reverse=True) if path.stem.endswith(r))
    assert (task.alpha, task.beta, task.gamma, task.k) == (*WEIGHTS[row], 10)
