"""configs/evidence/synthetic-{mgcma,cm-roberta}.yaml: MGCMA and CM-RoBERTa evidence comparable to CMD's.

Both load, are headed as evidence (not a paper row), and use the same manifest, labels, protocol, protocol options
and folds as configs/evidence/synthetic-cmd.yaml, with CMD's packaged encoders (Whisper tiny.en, MiniLM).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import emofuse.models  # noqa: E402, F401  (registers the model option schemas)
from emofuse.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "configs" / "evidence"
STEMS = ["synthetic-mgcma", "synthetic-cm-roberta"]


@pytest.mark.parametrize("stem", STEMS)
def test_same_data_and_folds_as_the_cmd_evidence(stem):
    cmd = load_config(ROOT / "synthetic-cmd.yaml")
    cfg = load_config(ROOT / f"{stem}.yaml")
    for field in ("manifest", "labels", "protocol", "protocol_options", "folds"):
        assert getattr(cfg.data, field) == getattr(cmd.data, field), field
    header = (ROOT / f"{stem}.yaml").read_text().split("\nname:")[0]
    assert "NOT a paper row" in header and "emofuse train configs/evidence/" in header


def test_mgcma_fine_tunes_cmds_teachers():
    cmd = load_config(ROOT / "synthetic-cmd.yaml")
    cfg = load_config(ROOT / "synthetic-mgcma.yaml")
    assert cfg.model.name == "mgcma" and cfg.encoders.inputs == "raw"
    extra = cfg.model.model_extra
    assert (extra["audio_encoder"], extra["text_encoder"]) == (
        cmd.model.model_extra["audio_teacher"],
        cmd.model.model_extra["text_teacher"],
    )
    assert not extra.get("freeze_encoders", False) and cfg.stages[0].task == "mgcma"  # fine-tuned end to end


def test_cm_roberta_forms_dialogues_from_cmds_encoders():
    cfg = load_config(ROOT / "synthetic-cm-roberta.yaml")
    assert cfg.model.name == "cm_roberta" and cfg.encoders.inputs == "features"
    assert cfg.data.dialogue_size == 8
    assert cfg.encoders.audio == "whisper-tiny.en-mean" and cfg.encoders.text == "all-MiniLM-L6-v2"
