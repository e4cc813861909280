"""`emofuse train` / `emofuse evaluate` end to end: a tiny two-stage CMD run (distill, then fine-tune) on WAVs."""

import json

import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.manifest import write_manifest
from emofuse.models import list_models
from emofuse.models.checkpoint import load_checkpoint

runner = CliRunner()
CLASSES = ("neutral", "happy", "sad", "angry")

CONFIG = """
name: tiny-cmd
seeds: [0]
data:
  manifest: {manifest}
  protocol: random-stratified
  max_batch_samples: 40000
model:
  name: cmd_student
  audio_teacher: tiny-wav2vec2
  text_teacher: tiny-bert
  temperature: 0.05
encoders:
  allow_random: true
  cache_dir: {cache}
optim: {{lr: 0.001, scheduler: warmup_linear, warmup_epochs: 1, decay: 0.9}}
trainer: {{max_epochs: 2, accelerator: cpu, devices: 1}}
stages:
  - {{name: distill, task: distill, model: {{with_head: false}}, task_options: {{temperature: 0.05}}}}
  - {{name: finetune, task: classify}}
"""


@pytest.fixture
def corpus(tmp_path):
    from emofuse.testing.dummies import make_wav_corpus

    root = tmp_path / "corpus"
    records = make_wav_corpus(root, 16, seconds=0.4, labels=CLASSES)
    write_manifest(records, root / "manifest.jsonl")
    config = tmp_path / "cmd.yaml"
    config.write_text(CONFIG.format(manifest=root / "manifest.jsonl", cache=tmp_path / "cache"))
    return config, root / "manifest.jsonl"


@pytest.mark.slow
@pytest.mark.skipif("cmd_student" not in list_models(), reason="CMD student not registered")
def test_two_stage_cmd_train_resume_and_evaluate(tmp_path, corpus):
    config, manifest = corpus
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(config), "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "MulT macro-F1" in res.output and "results.md" in res.output
    seed = run / "seed0" / "seed0"
    for stage in ("distill", "finetune"):
        assert (seed / stage / "DONE").is_file() and (seed / stage / "best.safetensors").is_file()
    # the distilled student has no classifier; the fine-tuned one does, and rebuilds from its file alone
    distilled, d_meta = load_checkpoint(seed / "distill")
    model, meta = load_checkpoint(seed / "finetune")
    assert distilled.head is None and model.head is not None and meta["model_name"] == "cmd_student"
    assert meta["classes"] == sorted(CLASSES) and meta["encoders"]["audio"]["name"] == "tiny-wav2vec2"
    assert d_meta["task"]["name"] == "distill" and d_meta["monitor"] == "val/loss"
    results = json.loads((run / "results.json").read_text())
    assert results["n_runs"] == 1 and set(results["aggregate"]["mult_f1"]["per_class"]) == set(CLASSES)
    md = (run / "results.md").read_text()
    assert "| Experiment | Angry | Happy | Neutral | Sad | Macro-F1 |" in md and "RANDOM weights" in md
    done = (seed / "DONE").stat().st_mtime_ns

    # re-running resumes: nothing is trained again
    res = runner.invoke(app, ["train", str(config), "--out", str(run), "--quiet", "--devices", "1"])
    assert res.exit_code == 0, res.output
    assert (seed / "DONE").stat().st_mtime_ns == done

    # a different config is refused with the differing key named
    res = runner.invoke(app, ["train", str(config), "--out", str(run), "-q", "--set", "optim.lr=0.01"])
    assert res.exit_code == 2 and "optim.lr: 0.001 → 0.01" in res.output and "--overwrite" in res.output

    out = tmp_path / "metrics.json"
    res = runner.invoke(app, ["evaluate", str(run), "--manifest", str(manifest), "--out", str(out)])
    assert res.exit_code == 0, res.output
    scored = json.loads(out.read_text())
    assert scored["n_runs"] == 1 and sum(scored["runs"][0]["metrics"]["support"].values()) == 16


def test_train_and_evaluate_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "config file not found" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epoch: 3\n")
    res = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "did you mean 'trainer.max_epochs'" in res.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: x\n")
    res = runner.invoke(app, ["train", str(empty), "--out", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "data.manifest is not set" in res.output
    assert not (tmp_path / "run2").exists()  # bad input never creates the run folder
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "label": "sad"}\n')
    res = runner.invoke(
        app, ["evaluate", str(tmp_path), "--manifest", str(manifest), "--out", str(tmp_path / "o.json")]
    )
    assert res.exit_code == 2 and "not a training run folder" in res.output


def test_summary_table_shows_regression_metrics():
    from rich.console import Console

    from emofuse.cli.train import _summary_table

    agg = {k: {"mean": v, "std": 0.01} for k, v in {"pcc": 0.5, "ccc": 0.4, "mae": 0.3, "uar": 0.6, "war": 0.7}.items()}
    con = Console(width=80, record=True)
    con.print(_summary_table({"aggregate": agg, "classes": []}, "run"))
    text = con.export_text()
    for label in ("PCC", "CCC", "MAE", "UAR", "WAR"):
        assert label in text
    assert "0.4000" in text or "0.400" in text


def test_an_absent_accelerator_is_a_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{manifest: {tmp_path / 'm.jsonl'}}}\n")
    res = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--accelerator", "gpu"])
    assert res.exit_code == 2 and "Traceback" not in res.output and not (tmp_path / "run").exists()
    assert "trainer.accelerator=gpu, but this machine has no usable GPU" in res.output.replace("\n", " ")
    assert "--accelerator cpu" in res.output


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [
        ("sigterm", 143, "stopped: training stopped by SIGTERM; run the same command again to resume"),
        ("ctrl-c", 130, "stopped by Ctrl-C (SIGINT); run the same command again to resume"),
        ("in-fit", 143, "stopped: training stopped by SIGTERM in RUN/f/seed0/train"),
    ],
)
def test_signals_end_train_with_a_message_and_the_signal_exit_code(tmp_path, monkeypatch, stop, code, said):
    import os
    import signal

    import emofuse.training
    from emofuse.training import TrainingInterrupted

    def interrupted(*args, **kwargs):
        if stop == "sigterm":  # outside a fit (feature extraction, between runs)
            os.kill(os.getpid(), signal.SIGTERM)
        elif stop == "ctrl-c":
            raise KeyboardInterrupt
        raise TrainingInterrupted("training stopped by SIGTERM in RUN/f/seed0/train; ...", "SIGTERM")

    monkeypatch.setattr(emofuse.training, "run_experiment", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{manifest: {tmp_path / 'm.jsonl'}}}\n")
    res = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert res.exit_code == code and said in res.output.replace("\n", " ") and "Traceback" not in res.output
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is only there while it trains
