"""configs/thesis/seqsew (Rajan 2022, Table 5.7): 4 RECOLA transfer cases x 3 rows; each loads and builds its stages."""

from pathlib import Path

import pytest

from emofuse.config import load_config
from emofuse.models import create_model
from emofuse.tasks import SeqSEWTask

ROOT = Path(__file__).resolve().parents[2] / "configs" / "thesis" / "seqsew"
CONFIGS = sorted(ROOT.glob("t5.7-*.yaml"))
ROWS = {"seqsew": (0.1, 0.1), "no-lfa": (0.0, 0.1), "no-decoder": (0.1, 0.0)}  # row -> (alpha: DCCA, beta: decoder)
DIMS = {"audio": 88, "video_geo": 632, "video_app": 168}


def test_every_table_cell_has_a_config():
    cases = ("ar-vapp+aud", "ar-vgeo+aud", "va-aud+vapp", "va-aud+vgeo")
    assert {p.stem for p in CONFIGS} == {f"t5.7-{c}-{r}" for c in cases for r in ROWS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_teacher_and_student(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Table 5.7, ") and "Thesis: CCC 0." in text
    cfg = load_config(path)
    opts = cfg.model.options
    dim = "arousal" if "-ar-" in path.stem else "valence"
    assert cfg.data.target == f"extra.{dim}" and cfg.data.manifest.as_posix().endswith(f"recola/{dim}/manifest.jsonl")
    assert sorted(cfg.encoders.files) == sorted([opts["weak"], opts["strong"]])
    assert (opts["weak_dim"], opts["strong_dim"]) == (DIMS[opts["weak"]], DIMS[opts["strong"]])
    audio_layers = opts["weak_gru_layers"] if opts["weak"] == "audio" else opts["strong_gru_layers"]
    assert audio_layers == 1 and opts["decoder_units"] == (250 if dim == "arousal" else 500)
    assert (cfg.optim.name, cfg.optim.lr) == ("adam", 1e-5)
    teacher_stage, student_stage = cfg.resolved_stages()
    assert (teacher_stage.task, student_stage.task) == ("regress", "seqsew")
    create_model(cfg.model.name, **{**opts, **teacher_stage.model})
    student = create_model(cfg.model.name, **{**opts, **student_stage.model})
    task = SeqSEWTask(student, **student_stage.task_options)
    row = next(r for r in ROWS if path.stem.endswith(r))
    assert (task.alpha, task.beta, task.align) == (*ROWS[row], "steps")
