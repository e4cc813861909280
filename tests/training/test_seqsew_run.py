"""SeqSEW through the runner: stage 1 trains the text teacher, stage 2 the audio student against it (teacher frozen)."""

import numpy as np
import pytest
import torch

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.models.checkpoint import load_checkpoint
from emofuse.training import run_experiment


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "f").mkdir()
    recs = []
    for i in range(40):
        y = float(rng.uniform(-0.9, 0.9))
        text = rng.standard_normal((int(rng.integers(3, 6)), 6)).astype(np.float32)
        text[:, 0] += 2 * y  # the stronger modality carries the target clearly
        audio = rng.standard_normal((int(rng.integers(4, 8)), 4)).astype(np.float32)
        audio[:, 0] += y + rng.normal(0, 0.5)  # the weaker one, noisily
        np.save(tmp_path / "f" / f"t{i}.npy", text)
        np.save(tmp_path / "f" / f"a{i}.npy", audio)
        split = "train" if i < 28 else ("dev" if i < 34 else "test")
        feats = {"text": f"f/t{i}.npy", "audio": f"f/a{i}.npy"}
        recs.append(Utterance(id=f"u{i:02d}", speaker=f"s{i % 5}", split=split, features=feats, extra={"y": y}))
    return write_manifest(recs, tmp_path / "manifest.jsonl")


@pytest.mark.slow
def test_two_stage_seqsew_run(tmp_path, manifest):
    kw = "weak: audio, strong: text, weak_dim: 4, strong_dim: 6, dim: 8, ffn_dim: 16, head_hidden: 8, decoder_units: 4"
    sets = [
        f"data.manifest={manifest}",
        "data.protocol=official",
        "data.target=extra.y",
        "data.max_batch_samples=null",
        "data.batch_size=8",
        "encoders.files=[text, audio]",
        f"model={{name: seqsew, {kw}}}",
        "stages=[{name: teacher, task: regress, model: {phase: teacher}},"
        " {name: student, task: seqsew, model: {phase: student}, task_options: {alpha: 0.1, beta: 0.1}}]",
        "optim.lr=0.003",
        "trainer.max_epochs=3",
        "trainer.monitor=val/pcc",
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        "trainer.logger=none",
        "seeds=[0]",
    ]
    doc = run_experiment(load_config(None, sets), tmp_path / "run", progress=False)
    m = doc["runs"][0]["metrics"]
    assert {"pcc", "ccc", "mae", "uar", "war"} <= set(m) and m["n"] == 6
    seed = next((tmp_path / "run").glob("*/seed0"))
    teacher, _ = load_checkpoint(seed / "teacher")
    student, meta = load_checkpoint(seed / "student")
    assert teacher.config["phase"] == "teacher" and student.config["phase"] == "student"
    assert meta["initialised_from"].endswith("teacher/best.safetensors")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k in (k for k in t_state if k.startswith("teacher.")):  # the frozen teacher is the stage-1 teacher
        assert torch.equal(t_state[k], s_state[k]), k
    assert any(not torch.equal(t_state[k], s_state[k]) for k in t_state if k.startswith("student."))
