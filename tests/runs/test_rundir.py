"""RunDir / Run: the one owner of the run-folder layout (no training needed: folders are built by hand)."""

from __future__ import annotations

import json

import pytest

from emofuse.models.checkpoint import CheckpointError, save_checkpoint
from emofuse.models.probe import LinearProbe
from emofuse.runs import Run, RunDir, find_config, resolve_checkpoint


def _probe() -> LinearProbe:
    m = LinearProbe(modality="text", input_dim=3, num_classes=2)
    m.model_name = "probe"
    return m


def _finish(rd: RunDir, fold: str, seed: int, score: float, monitor: str = "val/loss") -> Run:
    """A finished run with one stage ``train`` whose best checkpoint scored ``score`` on ``monitor``."""
    run = rd.run(fold, seed)
    ckpt = save_checkpoint(
        _probe(),
        run.stage_dir("train") / "best.safetensors",
        {"classes": ["a", "b"], "monitor": monitor, "score": score, "epoch": 3, "task": {"stage": "train"}},
    )
    run.mark_stage_done("train", {"best_score": score, "monitor": monitor, "epochs": 4})
    run.metrics_file.write_text(json.dumps({"wa": 0.5}), encoding="utf-8")
    run.mark_done(ckpt)
    return run


def test_layout_paths_and_markers(tmp_path):
    rd = RunDir(tmp_path)
    run = rd.run("Session1", 2)
    assert (run.fold, run.seed) == ("Session1", 2)
    assert run.path == tmp_path / "Session1" / "seed2"
    assert run.stage_dir("distill") == run.path / "distill"
    assert not run.done and not run.stage_done("train") and run.checkpoint() is None
    assert rd.runs() == [] and rd.results() is None and not rd.is_run_folder()
    done = _finish(rd, "Session1", 2, 0.7)
    assert done.done and done.stage_done("train")
    assert done.checkpoint() == done.stage_dir("train") / "best.safetensors"
    assert json.loads(done.done_file.read_text())["checkpoint"] == "train/best.safetensors"
    assert done.metrics() == {"wa": 0.5}
    assert done.selection() == {"stage": "train", "monitor": "val/loss", "score": 0.7, "epoch": 3}


def test_finished_runs_and_open(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        rd.open()
    (tmp_path / "config.yaml").write_text("name: x\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        rd.open()
    _finish(rd, "f2", 0, 0.5)
    _finish(rd, "f1", 1, 0.5)
    rd.run("f3", 0).stage_dir("train").mkdir(parents=True)  # started, not finished
    assert [(r.fold, r.seed) for r in rd.runs()] == [("f1", 1), ("f2", 0), ("f3", 0)]
    cfg, runs = rd.open()
    assert cfg.name == "x" and [(r.fold, r.seed) for r in runs] == [("f1", 1), ("f2", 0)]


def test_complete_needs_every_fold_and_seed(tmp_path):
    rd = RunDir(tmp_path)
    _finish(rd, "f1", 0, 0.5)
    rd.results_file.write_text(json.dumps({"folds": ["f1", "f2"], "n_runs": 2}), encoding="utf-8")
    assert not rd.complete([0])
    _finish(rd, "f2", 0, 0.5)
    assert rd.complete([0]) and not rd.complete([0, 1])


def test_resolve_picks_the_best_validation_score(tmp_path):
    rd = RunDir(tmp_path / "exp")
    _finish(rd, "f1", 0, 0.9)
    best = _finish(rd, "f2", 0, 0.4)
    ckpt, why = resolve_checkpoint(rd.path)
    assert ckpt == best.checkpoint() and "val/loss (0.4)" in why and "2 runs" in why
    # a higher-is-better monitor picks the largest value
    rd2 = RunDir(tmp_path / "acc")
    top = _finish(rd2, "f1", 0, 0.8, "val/ua")
    _finish(rd2, "f2", 0, 0.6, "val/ua")
    assert resolve_checkpoint(rd2.path)[0] == top.checkpoint()
    # a run folder, a stage folder, a file
    assert resolve_checkpoint(best.path)[0] == best.checkpoint()
    assert resolve_checkpoint(best.stage_dir("train"))[0] == best.checkpoint()
    assert resolve_checkpoint(best.checkpoint())[1] == "the file given"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path / "empty")


def test_unfinished_run_falls_back_to_last_stage_in_config_order(tmp_path):
    run = RunDir(tmp_path).run("f", 0)
    for stage in ("b_first", "a_second"):
        save_checkpoint(_probe(), run.stage_dir(stage) / "best.safetensors", {"classes": ["a", "b"]})
    run.config_file.write_text("stages:\n- {name: b_first}\n- {name: a_second}\n", encoding="utf-8")
    ckpt, why = run.final_checkpoint()
    assert ckpt.parent.name == "a_second" and "unfinished" in why


def test_find_config_walks_up(tmp_path):
    run = RunDir(tmp_path).run("f", 0)
    ckpt = save_checkpoint(_probe(), run.stage_dir("train") / "best.safetensors", {"classes": ["a", "b"]})
    assert find_config(ckpt) is None
    run.config_file.write_text("name: x\n", encoding="utf-8")
    assert find_config(ckpt) == run.config_file


def test_a_failed_start_can_be_restarted_with_another_config(tmp_path, caplog):
    from emofuse.config import load_config
    from emofuse.runs import RunDirError, claim_run_dir

    out = tmp_path / "run"
    first, second = load_config(None, ["optim.lr=0.1"]), load_config(None, ["optim.lr=0.2"])
    claim_run_dir(first, out, overwrite=False)  # then the start failed: a run folder with only its env.json
    (out / "fold1" / "seed0").mkdir(parents=True)
    (out / "fold1" / "seed0" / "env.json").write_text("{}")
    claim_run_dir(second, out, overwrite=False)
    assert "nothing was trained there yet, so its config is replaced (optim.lr: 0.1 → 0.2)" in caplog.text
    assert RunDir(out).config().optim.lr == 0.2 and not (out / "fold1" / "seed0").exists()
    (out / "fold1" / "seed0" / "train").mkdir(parents=True)  # an interrupted stage: its checkpoint is kept
    (out / "fold1" / "seed0" / "train" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"(?s)holds runs of a different config.*optim\.lr: 0\.2 → 0\.1"):
        claim_run_dir(first, out, overwrite=False)
    assert (out / "fold1" / "seed0" / "train" / "last.ckpt").is_file()
