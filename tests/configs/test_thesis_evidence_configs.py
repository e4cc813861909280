"""configs/evidence/synthetic-{conflictnet,seqsew[-dialogue][-unimodal]}.yaml: the thesis systems' evidence.

All three load and build, are headed as evidence (not a paper row), and regress a continuous target of the synthetic
recipe speaker-independently; the SeqSEW student and the unimodal baseline are the same network on the same data.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import emofuse.models  # noqa: E402, F401  (registers the model option schemas)
from emofuse.config import load_config  # noqa: E402
from emofuse.models import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "configs" / "evidence"
STEMS = [
    "synthetic-conflictnet",
    "synthetic-seqsew",
    "synthetic-seqsew-unimodal",
    "synthetic-seqsew-dialogue",
    "synthetic-seqsew-dialogue-unimodal",
    "synthetic-seqsew-dialogue-control",
]


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("stem", STEMS)
def test_headed_as_evidence_and_speaker_independent(stem):
    cfg = load_config(ROOT / f"{stem}.yaml")
    header = (ROOT / f"{stem}.yaml").read_text().split("\nname:")[0]
    assert "not a paper row" in header and f"emofuse train configs/evidence/{stem}.yaml" in header
    assert cfg.data.protocol == "speaker-out" and cfg.data.target.startswith("extra.")
    assert cfg.data.target.removeprefix("extra.") in {"valence", "arousal", "vocal_arousal"}


def test_conflictnet_is_the_thesis_network_on_8khz_raw_speech():
    cfg = load_config(ROOT / "synthetic-conflictnet.yaml")
    assert cfg.data.sample_rate == 8000 and cfg.encoders.audio == "waveform" and cfg.encoders.inputs == "raw"
    model = create_model(cfg.model.name, **cfg.model.options)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 420_418  # the window only pads the input: Table 3.1's ConflictNET
    assert cfg.stages[0].task == "regress" and cfg.stages[0].task_options["loss"] == "pcc"


@pytest.mark.parametrize("level", ["", "-dialogue"])
def test_seqsew_student_and_unimodal_baseline_are_the_same_network_on_the_same_data(level):
    sew = load_config(ROOT / f"synthetic-seqsew{level}.yaml")
    uni = load_config(ROOT / f"synthetic-seqsew{level}-unimodal.yaml")
    fields = ("manifest", "labels", "protocol", "protocol_options", "folds", "target", "batch_size", "dialogue_size")
    for field in fields:
        assert getattr(sew.data, field) == getattr(uni.data, field), field
    assert sew.seeds == uni.seeds and len(sew.seeds) >= 3
    assert sew.optim == uni.optim and sew.trainer.max_epochs == uni.trainer.max_epochs
    assert (sew.encoders.audio, sew.encoders.audio_options) == (uni.encoders.audio, uni.encoders.audio_options)
    assert [s.task for s in sew.stages] == ["regress", "seqsew"] and uni.stages[0].task == "regress"
    student = create_model(sew.model.name, **{**sew.model.options, "phase": "student"})
    baseline = create_model(uni.model.name, **uni.model.options)
    assert student.weak == "audio" and student.strong == "text" and baseline.modality == "audio"
    assert _params(student.student) == _params(baseline.branch) > 0
    assert student.dialogue_level == baseline.dialogue_level == bool(level)


def test_dialogue_control_is_seqsew_without_the_co_learning_terms():
    sew = load_config(ROOT / "synthetic-seqsew-dialogue.yaml")
    ctl = load_config(ROOT / "synthetic-seqsew-dialogue-control.yaml")
    assert (ctl.data, ctl.model, ctl.encoders, ctl.optim, ctl.trainer, ctl.seeds) == (
        sew.data, sew.model, sew.encoders, sew.optim, sew.trainer, sew.seeds
    )  # fmt: skip
    (t0, s0), (t1, s1) = sew.resolved_stages(), ctl.resolved_stages()
    assert t0 == t1 and (s1.task_options["alpha"], s1.task_options["beta"]) == (0.0, 0.0)
    assert {k: v for k, v in s0.task_options.items() if k not in ("alpha", "beta")} == {
        k: v for k, v in s1.task_options.items() if k not in ("alpha", "beta")
    }
