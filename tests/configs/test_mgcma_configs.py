"""configs/mgcma/: one config per row of MGCMA's Table II (S0-S4) and Table III (S5-S9), Wang et al. 2024.

Every file loads, its header names its row with the paper's WA / UA (copied from specs/mgcma.md §6), its settings
are the paper's (§3.2, §4), its module order is the row's (§2.6), the LOSO folds carve validation from the training
sessions, and each config's model + objective runs forward / backward with tiny encoders in place of
wav2vec2-base / bert-base-uncased. One slow test trains a config end to end through the runner.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import emofuse.models  # noqa: E402, F401  (registers the mgcma option schema)
from emofuse.config import load_config  # noqa: E402
from emofuse.data.labels import get_scheme  # noqa: E402
from emofuse.data.manifest import Utterance  # noqa: E402
from emofuse.data.protocols import make_folds  # noqa: E402
from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.tasks.mgcma import MGCMATask  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "configs" / "mgcma"
TINY = [
    "model.audio_encoder=tiny-wav2vec2",
    "model.text_encoder=tiny-bert",
    "model.num_heads=2",
    "model.tam_layers=1",
]
# file -> (table, system, method as printed, order, WA, UA): spec §6, Tables II and III
ROWS = {
    "s0-mgcma": ("Table II + Table III", "S0", "MGCMA (DAM + TAM + IAM)", ["dam", "tam", "iam"], "78.87", "80.24"),
    "s1-wo-dam": ("Table II", "S1", "w/o DAM", ["tam", "iam"], "77.78", "79.07"),
    "s2-wo-tam": ("Table II", "S2", "w/o TAM", ["dam", "iam"], "78.00", "79.14"),
    "s3-wo-iam": ("Table II", "S3", "w/o IAM", ["dam", "tam"], "78.30", "79.38"),
    "s4-wo-all": ("Table II", "S4", "w/o (DAM + TAM + IAM)", [], "76.20", "77.62"),
    "s5-dam-iam-tam": ("Table III", "S5", "DAM + IAM + TAM", ["dam", "iam", "tam"], "78.76", "79.48"),
    "s6-iam-dam-tam": ("Table III", "S6", "IAM + DAM + TAM", ["iam", "dam", "tam"], "77.60", "78.60"),
    "s7-iam-tam-dam": ("Table III", "S7", "IAM + TAM + DAM", ["iam", "tam", "dam"], "78.71", "79.81"),
    "s8-tam-dam-iam": ("Table III", "S8", "TAM + DAM + IAM", ["tam", "dam", "iam"], "77.33", "78.75"),
    "s9-tam-iam-dam": ("Table III", "S9", "TAM + IAM + DAM", ["tam", "iam", "dam"], "76.88", "78.43"),
}
_HEADER = re.compile(r"^# reproduces: (.+?) \| (S\d) \| (.+?) \| WA (\d+\.\d\d) \| UA (\d+\.\d\d)$", re.M)


def _load(row, overrides=()):
    path = ROOT / f"{row}.yaml"
    return load_config(path, list(overrides)), path.read_text(encoding="utf-8")


def test_one_config_per_row_and_nothing_else():
    assert sorted(p.stem for p in ROOT.glob("*.yaml")) == sorted(["_base", *ROWS])


@pytest.mark.parametrize("row", list(ROWS))
def test_header_names_the_row_and_the_papers_numbers(row):
    cfg, text = _load(row)
    table, system, method, _, wa, ua = ROWS[row]
    m = _HEADER.search(text)
    assert m is not None, f"{row}.yaml has no '# reproduces:' line"
    assert m.groups() == (table, system, method, wa, ua)
    assert cfg.description == f"{table} | {system} | {method} | paper WA {wa} / UA {ua}"
    assert "the paper has no validation split" in text
    assert cfg.name == f"mgcma-{row}"


@pytest.mark.parametrize("row", list(ROWS))
def test_settings_are_the_papers(row):
    cfg, _ = _load(row)
    assert cfg.data.labels == "iemocap4" and get_scheme("iemocap4").classes == ("neutral", "happy", "sad", "angry")
    assert cfg.data.protocol == "iemocap-loso" and cfg.data.protocol_options == {"val_speakers": 1, "seed": 0}
    assert cfg.data.batch_size == 4 and cfg.data.max_batch_samples is None
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.scheduler) == ("adam", 1e-5, 0.0, "none")
    assert cfg.trainer.max_epochs == 100
    opts = cfg.model.options
    assert cfg.model.name == "mgcma" and opts["order"] == ROWS[row][3]
    assert (opts["audio_encoder"], opts["text_encoder"]) == ("facebook/wav2vec2-base", "bert-base-uncased")
    assert (opts["num_heads"], opts["tam_layers"], opts["allow_random"], opts["freeze_feature_encoder"]) == (
        12,
        6,
        False,
        False,
    )
    assert cfg.encoders.inputs == "raw"
    (stage,) = cfg.resolved_stages()
    assert stage.task == "mgcma"
    assert stage.task_options == dict(temperature=0.07, p=0.005, q=4.0, da_weight=1.0, ia_weight=1.0, ce_weight=1.0)


def _iemocap_like(n_per_speaker=3):
    recs = []
    for s in range(1, 6):
        for g in "FM":
            for i in range(n_per_speaker):
                spk = f"Ses0{s}{g}"
                recs.append(Utterance(id=f"{spk}_{i}", label="happy", speaker=spk, session=f"Session{s}"))
    return recs


def test_folds_are_loso_with_validation_from_the_training_sessions():
    cfg, _ = _load("s0-mgcma")
    recs = _iemocap_like()
    folds = make_folds(recs, cfg.data.protocol, **cfg.data.protocol_options)
    assert [f.name for f in folds] == [f"Session{s}" for s in range(1, 6)]
    session = {r.id: r.session for r in recs}
    speaker = {r.id: r.speaker for r in recs}
    for f in folds:
        assert {session[i] for i in f.test} == {f.name}
        assert f.val and {session[i] for i in f.val} <= {session[i] for i in f.train} - {f.name}
        assert len({speaker[i] for i in f.val}) == 1 and not {speaker[i] for i in f.val} & {speaker[i] for i in f.train}


@pytest.fixture(scope="module")
def batch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio, text = create_encoder("tiny-wav2vec2"), create_encoder("tiny-bert")
    g = torch.Generator().manual_seed(0)
    return {
        "ids": ["a", "b", "c", "d"],
        "audio": audio.preprocess([0.1 * torch.randn(n, generator=g) for n in (5000, 7000, 4000, 6000)]),
        "text": text.preprocess(["so glad", "why me", "fine", "go away now"]),
        "labels": torch.tensor([1, 2, 0, 3]),
    }


@pytest.mark.parametrize("row", list(ROWS))
def test_every_config_builds_and_trains_a_step(row, batch):
    from emofuse.training.components import DefaultComponents

    cfg, _ = _load(row, TINY)
    (stage,) = cfg.resolved_stages()
    comps = DefaultComponents(progress=False)
    classes = list(get_scheme(cfg.data.labels).classes)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = comps.model(cfg, stage, classes)
    assert model.config["order"] == ROWS[row][3] and model.config["num_classes"] == 4
    assert comps.encoder_names(cfg, model) == {"audio": "tiny-wav2vec2", "text": "tiny-bert"}
    task = comps.task(cfg, stage, model, classes, None)
    assert isinstance(task, MGCMATask)
    out = task.train()(batch)
    order = ROWS[row][3]
    assert ("da" in out) == ("dam" in order) and ("ia" in out) == ("iam" in order)
    out["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.slow
def test_s0_trains_end_to_end_through_the_runner(tmp_path):
    """Tiny encoders, two sessions of sine-tone speech: the runner writes WA / UA for the fold."""
    from emofuse.data.manifest import write_manifest
    from emofuse.testing.dummies import make_wav_corpus
    from emofuse.training import run_experiment

    labels = ("neutral", "happy", "sad", "angry")
    recs = make_wav_corpus(tmp_path, 24, seconds=0.3, labels=labels)
    recs = [
        r.model_copy(update={"session": f"Session{1 + i % 2}", "speaker": f"Ses0{1 + i % 2}{'FM'[(i // 2) % 2]}"})
        for i, r in enumerate(recs)
    ]
    write_manifest(recs, tmp_path / "manifest.jsonl")
    sets = [
        *TINY,
        f"data.manifest={tmp_path / 'manifest.jsonl'}",
        "data.folds=[Session1]",
        "seeds=[0]",
        "optim.lr=0.001",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.progress_bar=false",
        "trainer.logger=none",
    ]
    cfg, _ = _load("s0-mgcma", sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_experiment(cfg, tmp_path / "run", sets, progress=False, echo=lambda s: None)
    assert doc is not None
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["n_runs"] == 1 and results["protocol"] == "iemocap-loso" and results["folds"] == ["Session1"]
    assert results["encoders"]["model.audio"]["name"] == "tiny-wav2vec2"  # the fine-tuned encoders are recorded
    run = tmp_path / "run" / "Session1" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["wa"] <= 1.0 and 0.0 <= metrics["ua"] <= 1.0 and sum(metrics["support"].values()) == 12
    model = json.loads((run / "train" / "model.json").read_text())
    assert model["model_name"] == "mgcma" and model["model_config"]["order"] == ["dam", "tam", "iam"]
    from emofuse.models.checkpoint import load_checkpoint
    from emofuse.models.mgcma import MGCMA

    rebuilt, meta = load_checkpoint(run / "train" / "best.safetensors")  # no YAML needed (inference / evaluate)
    assert isinstance(rebuilt, MGCMA) and meta["model_config"]["audio_encoder"] == "tiny-wav2vec2"
