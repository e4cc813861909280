"""configs/thesis/seqsew, CMU-MOSI (Rajan 2022, Tables 5.4 and 5.6): every cell has a config that builds, and the
SeqSEW config trains end to end on a Poria-style miniature (videos = sequences of utterance vectors)."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from emofuse.config import load_config
from emofuse.data.corpora import prepare
from emofuse.data.manifest import write_manifest
from emofuse.models import create_model
from emofuse.tasks import SeqSEWTask
from emofuse.training import run_experiment

ROOT = Path(__file__).resolve().parents[2] / "configs" / "thesis" / "seqsew"
T54 = sorted(ROOT.glob("t5.4-*.yaml"))
T56 = sorted(ROOT.glob("t5.6-*.yaml"))
DIMS = {"text": 100, "audio": 73, "video": 100}
ROWS = {"seqsew": (0.1, 0.1), "no-lfa": (0.0, 0.1), "no-decoder": (0.1, 0.0)}


def test_every_table_cell_has_a_config():
    methods = {"classifier": (0, 0), "bigru": (None, 0), "bigru-te": (None, 2)}  # (gru layers, TE layers)
    assert {p.stem for p in T54} == {f"t5.4-{m}-{k}" for m in DIMS for k in methods}
    assert {p.stem for p in T56} == {f"t5.6-{w}+text-{r}" for w in ("aud", "vis") for r in ROWS}
    for path in T54:
        cfg = load_config(path)
        opts = cfg.model.options
        gru, te = methods[path.stem.split("-", 2)[2]]
        modality = opts["modality"]
        expected_gru = gru if gru is not None else (1 if modality == "text" else 2)
        assert (opts["gru_layers"], opts["num_layers"]) == (expected_gru, te), path.stem
        assert (opts["input_dim"], opts["sequence"], opts["activation"]) == (DIMS[modality], "dialogue", "sigmoid")
        assert cfg.encoders.files == [modality] and cfg.data.target == "extra.positive"
        model = create_model(cfg.model.name, **opts)
        assert model.dialogue_level
        (stage,) = cfg.resolved_stages()
        assert stage.task == "regress" and stage.task_options == {"loss": "bce", "threshold": 0.5}
        assert "Thesis: Acc " in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", T56, ids=lambda p: p.stem)
def test_seqsew_config_builds_teacher_and_student(path):
    cfg = load_config(path)
    opts = cfg.model.options
    assert opts["strong"] == "text" and opts["strong_gru_layers"] == 1 and opts["sequence"] == "dialogue"
    assert (opts["weak_dim"], opts["strong_dim"]) == (DIMS[opts["weak"]], 100)
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size) == ("adam", 1e-4, 32)
    teacher_stage, student_stage = cfg.resolved_stages()
    create_model(cfg.model.name, **{**opts, **teacher_stage.model})
    student = create_model(cfg.model.name, **{**opts, **student_stage.model})
    task = SeqSEWTask(student, **student_stage.task_options)
    row = next(r for r in ROWS if path.stem.endswith(r))
    assert (task.alpha, task.beta, task.align, task.loss_name) == (*ROWS[row], "steps", "bce")


def _poria_release(root: Path, rng: np.random.Generator) -> None:
    """Poria-style pickles: 12 train + 4 test videos of 3-6 utterances; text carries the label, audio noisily."""
    raw = root / "mosi" / "raw"
    raw.mkdir(parents=True)
    parts = {}
    for part, n_videos in (("train", 12), ("test", 4)):
        lengths = rng.integers(3, 7, n_videos)
        labels = np.zeros((n_videos, 6, 2))
        y = rng.integers(0, 2, (n_videos, 6))
        labels[np.arange(n_videos)[:, None], np.arange(6)[None], y] = 1
        parts[part] = (lengths, labels, y)
    for m, dim in (("text", 100), ("audio", 73)):
        obj = []
        for part in ("train", "test"):
            lengths, labels, y = parts[part]
            data = rng.standard_normal((len(lengths), 6, dim))
            data[..., 0] += (2.0 if m == "text" else 0.7) * (2 * y - 1)
            obj += [data, labels]
        obj += [6, parts["train"][0], parts["test"][0]]
        with open(raw / f"{m}_2way.pickle", "wb") as f:
            pickle.dump(tuple(obj), f)


@pytest.mark.slow
def test_mosi_seqsew_config_runs_end_to_end(tmp_path):
    _poria_release(tmp_path / "release", np.random.default_rng(0))
    prep = prepare("mosi", tmp_path / "release", progress=False, features_dir=tmp_path / "npy", dev_videos=3, seed=0)
    manifest = write_manifest(prep.records, tmp_path / "manifest.jsonl")
    sets = [
        f"data.manifest={manifest}",
        "data.batch_size=4",
        "model.dim=8",
        "model.ffn_dim=16",
        "model.head_hidden=8",
        "model.decoder_units=4",
        "model.decoder_layers=1",
        "model.weak_gru_layers=1",
        "optim.lr=0.003",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "trainer.logger=none",
    ]
    cfg = load_config(ROOT / "t5.6-aud+text-seqsew.yaml", sets)
    doc = run_experiment(cfg, tmp_path / "run", progress=False)
    (run,) = doc["runs"]
    n_test = sum(r.split == "test" for r in prep.records)
    assert run["metrics"]["n"] == n_test  # one prediction per test utterance, not per video
    assert {"pcc", "ccc", "mae", "uar", "war", "weighted_f1"} <= set(run["metrics"])  # Acc = WAR, F̄1
    preds = (tmp_path / "run").glob("*/seed0/predictions.jsonl")
    lines = next(preds).read_text(encoding="utf-8").splitlines()
    assert len(lines) == n_test
