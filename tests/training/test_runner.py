"""Experiment runner: run-folder layout, results, determinism, crash resume, skip of finished runs, two stages."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from _train_fakes import FakeComponents, fake_config, write_fake_manifest

from emofuse.models.checkpoint import load_checkpoint, read_checkpoint_meta
from emofuse.training import RunDirError, evaluate_run, run_experiment


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "data" / "manifest.jsonl"
    write_fake_manifest(path)
    return path


def _run(cfg, out, **kw):
    return run_experiment(cfg, out, components=FakeComponents(), progress=False, **kw)


def _json(path):
    return json.loads(path.read_text())


class Recorder(L.Callback):
    """Records the epochs that start; raises once at ``crash_at`` (a simulated kill)."""

    def __init__(self, crash_at=None):
        self.crash_at = crash_at
        self.started = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append(trainer.current_epoch)
        if trainer.current_epoch == self.crash_at:
            self.crash_at = None
            raise RuntimeError("simulated crash")


def test_layout_results_and_paper_table(tmp_path, manifest):
    cfg = fake_config(manifest, **{"data.protocol": "kfold", "data.protocol_options": "{k: 2}", "seeds": "[0, 1]"})
    doc = _run(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "results.json").is_file()
    assert doc["n_runs"] == 4 and {(r["fold"], r["seed"]) for r in doc["runs"]} == {
        (f, s) for f in ("fold1", "fold2") for s in (0, 1)
    }
    one = run / "fold1" / "seed1"
    for name in ("config.yaml", "env.json", "metrics.json", "predictions.jsonl", "curves.csv", "DONE"):
        assert (one / name).is_file(), name
    for name in ("best.safetensors", "last.safetensors", "model.json", "last.ckpt", "curves.csv", "DONE"):
        assert (one / "train" / name).is_file(), name
    metrics = _json(one / "metrics.json")
    assert {"wa", "ua", "weighted_f1", "macro_f1", "per_class_f1", "confusion", "mult_f1"} <= set(metrics)
    assert set(metrics["mult_f1"]["per_class"]) == {"neutral", "happy", "sad"}
    pred = json.loads((one / "predictions.jsonl").read_text().splitlines()[0])
    assert set(pred) == {"id", "label", "pred", "probs"} and len(pred["probs"]) == 3
    env = _json(one / "env.json")
    assert env["seed"] == 1 and env["fold"] == "fold1" and "torch" in env["versions"] and env["encoders"]
    agg = _json(run / "results.json")["aggregate"]
    assert agg["mult_f1"]["macro"]["n"] == 4 and agg["ua"]["std"] >= 0
    md = (run / "results.md").read_text()
    assert "| Experiment | Happy | Neutral | Sad | Macro-F1 |" in md
    assert "| Experiment | WA | UA | Weighted F1 | Macro F1 |" in md and "## Per fold" in md
    mean, std = agg["macro_f1"]["mean"], agg["macro_f1"]["std"]
    assert f"{mean:.4f} ({std:.4f})" in md and "## Per-class F1 (standard" in md
    assert "MulT convention" not in md  # the fake model's "paper" does not use it (CMD and MulT do)
    rows = list(csv.DictReader((one / "curves.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[0]["stage"] == "train" and "val/ua" in rows[0]
    model, meta = load_checkpoint(one / "train")
    assert meta["classes"] == ["happy", "neutral", "sad"] and meta["model_name"] == "_fake_linear"
    assert meta["task"]["name"] == "classify" and meta["encoders"]["audio"]["name"] == "fake"
    # each run says how its tested checkpoint was chosen: the best validation score of the monitor, and when
    monitor = meta["monitor"]
    pick = min if "loss" in monitor else max
    best = pick((r for r in rows if r[monitor]), key=lambda r: float(r[monitor]))
    sel = next(r for r in doc["runs"] if (r["fold"], r["seed"]) == ("fold1", 1))["selection"]
    assert sel["monitor"] == monitor and sel["stage"] == "train"
    assert sel["score"] == pytest.approx(float(best[monitor])) and sel["epoch"] == int(best["epoch"])
    scores = [r["selection"]["score"] for r in doc["runs"]]
    assert f"score {monitor} = {sum(scores) / 4:.4f}" in md


def test_same_config_and_seed_give_identical_metrics(tmp_path, manifest):
    cfg = fake_config(manifest)
    _run(cfg, tmp_path / "a")
    _run(cfg, tmp_path / "b")
    a, b = (tmp_path / x / "seed0" / "seed0" for x in "ab")
    assert _json(a / "metrics.json") == _json(b / "metrics.json")
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()


def test_crash_resumes_from_last_ckpt_and_done_runs_are_skipped(tmp_path, manifest):
    cfg = fake_config(
        manifest,
        **{"trainer.max_epochs": 4, "optim.scheduler": "warmup_linear", "optim.warmup_epochs": 2, "optim.decay": 0.5},
    )
    _run(cfg, tmp_path / "ref")
    rec = Recorder(crash_at=2)  # killed after epochs 0 and 1 were checkpointed
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(cfg, tmp_path / "run", callbacks=[rec])
    stage = tmp_path / "run" / "seed0" / "seed0" / "train"
    assert (stage / "last.ckpt").is_file() and not (stage / "DONE").exists()
    assert read_checkpoint_meta(stage / "last.safetensors")["epoch"] == 1
    rec.started = []
    _run(cfg, tmp_path / "run", callbacks=[rec])
    assert rec.started == [2, 3]  # continued from last.ckpt, not from scratch
    assert _json(stage / "DONE")["resumed"] is True
    # the resumed run is the uninterrupted run: same schedule, same metrics
    ref = tmp_path / "ref" / "seed0" / "seed0"
    assert _json(stage.parent / "metrics.json") == _json(ref / "metrics.json")
    assert (stage.parent / "curves.csv").read_text() == (ref / "curves.csv").read_text()
    lrs = [float(r["lr"]) for r in csv.DictReader((ref / "curves.csv").open())]
    assert lrs == pytest.approx([0.025, 0.05, 0.025, 0.0125])
    rec.started = []
    doc = _run(cfg, tmp_path / "run", callbacks=[rec])
    assert rec.started == [] and doc["n_runs"] == 1  # DONE: not trained again


def test_different_config_is_refused_unless_overwrite(tmp_path, manifest):
    _run(fake_config(manifest), tmp_path / "run")
    other = fake_config(manifest, **{"optim.lr": 0.01, "trainer.max_epochs": 2})
    with pytest.raises(RunDirError, match=r"optim\.lr: 0\.05 → 0\.01") as e:
        _run(other, tmp_path / "run")
    assert "trainer.max_epochs" in str(e.value) and "--overwrite" in str(e.value)
    # hardware and seed list may change: the folder is resumed
    doc = _run(fake_config(manifest, **{"trainer.devices": "auto", "seeds": "[0, 1]"}), tmp_path / "run")
    assert doc["n_runs"] == 2
    doc = _run(other, tmp_path / "run", overwrite=True)
    assert doc["n_runs"] == 1 and "lr: 0.01" in (tmp_path / "run" / "config.yaml").read_text()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="not an emofuse run folder"):
        _run(other, tmp_path / "junk")


def test_two_stages_distill_then_finetune_from_best(tmp_path, manifest):
    cfg = fake_config(
        manifest,
        stages="[{name: distill, task: distill, model: {with_head: false}, trainer: {max_epochs: 2}},"
        " {name: finetune, task: classify, optim: {lr: 0.02}}]",
    )
    doc = _run(cfg, tmp_path / "run")
    seed = tmp_path / "run" / "seed0" / "seed0"
    assert (seed / "distill" / "DONE").is_file() and (seed / "finetune" / "best.safetensors").is_file()
    d_meta = read_checkpoint_meta(seed / "distill" / "best.safetensors")
    f_meta = read_checkpoint_meta(seed / "finetune" / "best.safetensors")
    assert d_meta["monitor"] == "val/loss" and d_meta["model_config"]["with_head"] is False
    assert f_meta["initialised_from"].endswith("distill/best.safetensors") and f_meta["model_config"]["with_head"]
    assert _json(seed / "DONE")["checkpoint"] == "finetune/best.safetensors"
    stages = [r["stage"] for r in csv.DictReader((seed / "curves.csv").open())]
    assert stages == ["distill"] * 2 + ["finetune"] * 3
    assert doc["aggregate"]["mult_f1"]["macro"]["mean"] > 0.5


def test_evaluate_on_another_manifest(tmp_path, manifest):
    _run(fake_config(manifest), tmp_path / "run")
    other = tmp_path / "other.jsonl"
    write_fake_manifest(other, n=30)
    doc = evaluate_run(tmp_path / "run", other, tmp_path / "metrics.json", components=FakeComponents())
    assert doc["n_runs"] == 1 and doc["runs"][0]["metrics"]["support"] == {"happy": 10, "neutral": 10, "sad": 10}
    assert _json(tmp_path / "metrics.json")["aggregate"]["ua"]["n"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "label": "angry"}\n{"id": "x2", "label": "sad"}\n')
    with pytest.raises(ValueError, match=r"labels \['angry', 'sad'\].*trained on \['happy', 'neutral', 'sad'\]"):
        evaluate_run(tmp_path / "run", bad, components=FakeComponents())


def test_early_stopping_ends_the_stage(tmp_path, manifest):
    cfg = fake_config(
        manifest,
        **{
            "optim.lr": 1e-9,  # nothing changes: val/wa never improves after the first epoch
            "trainer.max_epochs": 6,
            "trainer.monitor": "val/wa",
            "trainer.early_stopping_patience": 1,
        },
    )
    _run(cfg, tmp_path / "run")
    stage = tmp_path / "run" / "seed0" / "seed0" / "train"
    done = _json(stage / "DONE")
    assert done["epochs"] == 2 and done["best_epoch"] == 0 and done["monitor"] == "val/wa"
    assert len(list(csv.DictReader((stage / "curves.csv").open()))) == 2


@pytest.mark.parametrize(("name", "package"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_optional_loggers_name_their_package(tmp_path, name, package):
    from emofuse.training import make_loggers
    from emofuse.utils.optional import MissingDependencyError, is_available

    assert type(make_loggers(["csv"], tmp_path)[0]).__name__ == "CSVLogger"
    if is_available(package):
        assert make_loggers([name], tmp_path)
    else:
        with pytest.raises(MissingDependencyError, match=rf"trainer.logger '{name}' needs the '{package}"):
            make_loggers([name], tmp_path)


class EpochLog(L.Callback):
    """Training batches seen per epoch, and the epochs whose validation ran."""

    def __init__(self):
        self.batches, self.validated = {}, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches[trainer.current_epoch] = batch_idx + 1

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)


def test_dynamic_batches_validate_every_epoch(tmp_path, manifest):
    # Dynamic batches change in number from epoch to epoch; Lightning sizes an epoch from the loader's
    # length, so without reloading it would skip validation in every epoch shorter than the first.
    from emofuse.data.manifest import read_manifest
    from emofuse.data.protocols import make_folds
    from emofuse.data.sampling import DynamicBatchSampler

    cfg = fake_config(manifest, **{"data.max_batch_samples": 50000, "trainer.max_epochs": 6})
    log = EpochLog()
    run_experiment(cfg, tmp_path / "run", components=FakeComponents(), progress=False, callbacks=[log])
    assert log.validated == list(range(6))
    fold = make_folds(read_manifest(manifest), "random-stratified")[0]
    lengths = [16000 + 1000 * (i % 5) for i in range(len(fold.train))]
    sampler = DynamicBatchSampler(lengths, 50000, shuffle=True, seed=0)
    expected = {}
    for epoch in range(6):
        sampler.set_epoch(epoch)
        expected[epoch] = len(sampler)
    assert len(set(expected.values())) > 1  # the batch count really varies, so the test means something
    assert log.batches == expected


def test_diverging_loss_stops_naming_epoch_and_step(tmp_path, manifest):
    from _train_fakes import FakeClassify

    from emofuse.training.lit_module import TrainingDiverged

    class Diverging(FakeClassify):
        calls = 0

        def forward(self, batch):
            out = super().forward(batch)
            if self.training:
                Diverging.calls += 1
                if Diverging.calls > 8:  # epoch 1 (6 batches an epoch), as a huge learning rate does
                    out["loss"] = out["loss"] * float("nan")
            return out

    class Components(FakeComponents):
        def task(self, cfg, stage, model, classes, train):
            return Diverging(model)

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"seed0/train: the training loss became nan at epoch 1, step 8 \("):
        run_experiment(fake_config(manifest), out, components=Components(), progress=False)
    assert not (out / "seed0" / "seed0" / "DONE").exists()


def test_unresumable_last_ckpt_is_named_with_the_ways_forward(tmp_path, manifest):
    import torch

    from emofuse.training.callbacks import ResumeError

    cfg = fake_config(manifest, **{"trainer.max_epochs": 2})
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(cfg, tmp_path / "run", callbacks=[Recorder(crash_at=1)])
    ckpt = tmp_path / "run" / "seed0" / "seed0" / "train" / "last.ckpt"
    good = ckpt.read_bytes()
    for why, write in [
        ("truncated, or not a checkpoint", lambda: ckpt.write_bytes(good[: len(good) // 2])),
        ("not a Lightning training checkpoint", lambda: torch.save({"weights": torch.zeros(2)}, ckpt)),
    ]:
        write()
        with pytest.raises(
            ResumeError, match=rf"train/last\.ckpt: cannot resume this stage from it \({why}.*--overwrite"
        ):
            _run(cfg, tmp_path / "run")
    ckpt.unlink()  # the way forward it names: the stage trains again from its start
    assert _run(cfg, tmp_path / "run")["n_runs"] == 1


class MidEpochKill(L.Callback):
    """Raises once in the ``stage``-th fit at batch ``batch`` of epoch ``epoch``: nothing is saved (as kill -9)."""

    def __init__(self, stage, epoch, batch):
        self.stage, self.epoch, self.batch, self.fits, self.armed = stage, epoch, batch, 0, True

    def on_train_start(self, trainer, pl_module):
        self.fits += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.armed and (self.fits, trainer.current_epoch, batch_idx) == (self.stage, self.epoch, self.batch):
            self.armed = False
            raise RuntimeError("simulated kill -9")


@pytest.mark.parametrize("stage", [1])  # the finetune stage: the real kill -9 below
def test_a_run_killed_mid_epoch_resumes_to_identical_results(tmp_path, manifest, stage):
    sets = {"model.dropout": 0.3, "trainer.max_epochs": 3, "data.num_workers": 0}
    sets["stages"] = "[{name: distill, task: distill}, {name: finetune, task: classify}]"
    cfg = fake_config(manifest, **sets)
    _run(cfg, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated kill -9"):
        _run(cfg, tmp_path / "run", callbacks=[MidEpochKill(stage, epoch=1, batch=2)])
    _run(cfg, tmp_path / "run")
    ref, run = (tmp_path / x / "seed0" / "seed0" for x in ("ref", "run"))
    assert _json(run / "finetune" / "DONE")["resumed"] is (stage == 2)
    assert (run / "curves.csv").read_text() == (ref / "curves.csv").read_text()  # every epoch's losses
    assert _json(run / "metrics.json") == _json(ref / "metrics.json")
    assert (run / "predictions.jsonl").read_text() == (ref / "predictions.jsonl").read_text()


class CtrlC(L.Callback):
    """Sends this process SIGINT at batch ``batch`` of epoch ``epoch`` of the ``stage``-th fit; counts steps per fit."""

    def __init__(self, stage=None, epoch=None, batch=None):
        self.at, self.fits, self.steps = (stage, epoch, batch), 0, {}

    def on_train_start(self, trainer, pl_module):
        self.fits += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps[self.fits] = self.steps.get(self.fits, 0) + 1
        if self.at == (self.fits, trainer.current_epoch, batch_idx):
            self.at = None
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("stage", [1, 2])
def test_ctrl_c_mid_epoch_resumes_at_that_step_to_identical_results(tmp_path, manifest, stage):
    from emofuse.training.callbacks import TrainingInterrupted

    sets = {"model.dropout": 0.3, "trainer.max_epochs": 3, "data.num_workers": 0}
    sets["stages"] = "[{name: distill, task: distill}, {name: finetune, task: classify}]"
    cfg = fake_config(manifest, **sets)
    ref = CtrlC()
    _run(cfg, tmp_path / "ref", callbacks=[ref])
    first = CtrlC(stage, epoch=1, batch=2)
    with pytest.raises(TrainingInterrupted, match="Ctrl-C"):
        _run(cfg, tmp_path / "run", callbacks=[first])
    name = ("distill", "finetune")[stage - 1]
    stage_dir = tmp_path / "run" / "seed0" / "seed0" / name
    assert first.steps[stage] == ref.steps[1] // 3 + 3  # stopped right after the step it was asked in
    assert read_checkpoint_meta(stage_dir / "last.safetensors")["epoch"] == 0  # epoch 1 unfinished
    again = CtrlC()
    _run(cfg, tmp_path / "run", callbacks=[again])
    assert first.steps[stage] + again.steps[1] == ref.steps[stage]  # resumed at that step: no step done twice
    ref_dir, run_dir = (tmp_path / x / "seed0" / "seed0" for x in ("ref", "run"))
    assert (run_dir / "curves.csv").read_text() == (ref_dir / "curves.csv").read_text()
    assert _json(run_dir / "metrics.json") == _json(ref_dir / "metrics.json")
    assert (run_dir / "predictions.jsonl").read_text() == (ref_dir / "predictions.jsonl").read_text()


_KILLED_TRAINING = """
import sys, time
sys.path.insert(0, {fakes!r})
import lightning as L
import _train_fakes
from _train_fakes import FakeComponents, fake_config
from emofuse.training import run_experiment

_train_fakes.register()


class Hang(L.Callback):  # mid-epoch of the finetune stage: say so, then wait for the kill
    fits = 0

    def on_train_start(self, trainer, pl_module):
        Hang.fits += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (Hang.fits, trainer.current_epoch, batch_idx) == (2, 1, 3):
            print("MID-EPOCH", flush=True)
            time.sleep(120)


cfg = fake_config(sys.argv[1], **{sets!r})
run_experiment(cfg, sys.argv[2], components=FakeComponents(), progress=False, callbacks=[Hang()])
"""


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_results(tmp_path, manifest):
    sets = {"model.dropout": 0.3, "trainer.max_epochs": 3, "data.num_workers": 0}
    sets["stages"] = "[{name: distill, task: distill}, {name: finetune, task: classify}]"
    script = tmp_path / "train.py"
    script.write_text(_KILLED_TRAINING.format(fakes=str(Path(__file__).parent), sets=sets))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(manifest), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "MID-EPOCH"
        proc.send_signal(signal.SIGKILL)  # kill -9: nothing runs after this
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stage = tmp_path / "run" / "seed0" / "seed0" / "finetune"
    assert (stage / "last.ckpt").is_file() and not (stage / "DONE").exists()
    cfg = fake_config(manifest, **sets)
    _run(cfg, tmp_path / "ref")
    _run(cfg, tmp_path / "run")
    ref, run = (tmp_path / x / "seed0" / "seed0" for x in ("ref", "run"))
    assert _json(stage / "DONE")["resumed"] is True
    assert (run / "curves.csv").read_text() == (ref / "curves.csv").read_text()
    assert _json(run / "metrics.json") == _json(ref / "metrics.json")
    assert (run / "predictions.jsonl").read_text() == (ref / "predictions.jsonl").read_text()


def test_checkpoint_every_n_steps_resumes_a_killed_run_at_its_last_saved_step(tmp_path, manifest):
    sets = {"model.dropout": 0.3, "trainer.max_epochs": 3, "trainer.checkpoint_every_n_steps": 2}
    cfg = fake_config(manifest, **sets)
    ref = CtrlC()
    _run(cfg, tmp_path / "ref", callbacks=[ref])
    killed = CtrlC()
    with pytest.raises(RuntimeError, match="simulated kill -9"):  # at batch 4 of epoch 1
        _run(cfg, tmp_path / "run", callbacks=[killed, MidEpochKill(1, epoch=1, batch=4)])
    done = killed.steps[1] - 1  # the killed step never finished
    again = CtrlC()
    _run(cfg, tmp_path / "run", callbacks=[again])
    assert again.steps[1] == ref.steps[1] - (done - done % 2)  # resumed at the last step saved (every 2 steps)
    ref_dir, run_dir = (tmp_path / x / "seed0" / "seed0" for x in ("ref", "run"))
    assert (run_dir / "curves.csv").read_text() == (ref_dir / "curves.csv").read_text()
    assert _json(run_dir / "metrics.json") == _json(ref_dir / "metrics.json")
