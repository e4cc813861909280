"""`emofuse quickstart` end to end with tiny encoders on a 12-utterance synthetic corpus, then again from the cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.training.quickstart import VARIANTS, quickstart_config

runner = CliRunner()

TINY = [
    "--audio-teacher",
    "tiny-wav2vec2",
    "--text-teacher",
    "tiny-bert",
    "--speakers",
    "3",
    "--per-class",
    "1",
    "--folds",
    "group1",
    "--distill-epochs",
    "1",
    "--finetune-epochs",
    "1",
    "--no-transcribe",
    "--set",
    "trainer.logger=none",
]


def _mtimes(root: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob(pattern))}


@pytest.mark.slow
def test_quickstart_end_to_end_then_from_cache(tmp_path):
    pytest.importorskip("espeakng_loader")
    out = tmp_path / "qs"
    res = runner.invoke(app, ["quickstart", "--out", str(out), *TINY, "--quiet"])
    assert res.exit_code == 0, res.output

    # files: corpus + manifest, one feature cache per teacher, three run folders, the report, summary.json
    records = [json.loads(line) for line in (out / "corpus" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 4 * 1 and {r["speaker"] for r in records} == {"spk0", "spk1", "spk2"}
    # the default corpus: one channel neutral in a conflict (fusion can help), not contradictory
    params = json.loads((out / "corpus" / "synthetic.json").read_text())["params"]
    assert params["conflict_mode"] == "neutral" and params["conflict_rate"] == 0.8
    tested = set()
    caches = sorted(p.name for p in (out / "features").iterdir())
    assert len(caches) == 2 and caches[0].startswith("tiny-bert") and caches[1].startswith("tiny-wav2vec2")
    report = out / "report"
    assert (report / "report.md").is_file() and (report / "report.html").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["cmd", "audio", "text"]
    for variant, (model_name, _) in VARIANTS.items():
        run = out / "runs" / variant
        cfg = (run / "config.yaml").read_text()
        assert f"name: {model_name}" in cfg and "protocol: speaker-out" in cfg
        seed = run / "group1" / "seed0"
        assert (seed / "distill" / "DONE").is_file() and (seed / "finetune" / "best.safetensors").is_file()
        # the summary row is the run's own results.json aggregate, not a recomputation
        agg = json.loads((run / "results.json").read_text())["aggregate"]
        row = next(r for r in summary["rows"] if r["variant"] == variant)
        assert row["n_runs"] == 1 and row["wa"][0] == pytest.approx(agg["wa"]["mean"])
        assert row["mult_f1"][0] == pytest.approx(agg["mult_f1"]["macro"]["mean"])
        # speaker-independent: fold group1 (3 speakers in 3 groups) tests on one speaker, the same for every variant
        preds = [json.loads(line) for line in (seed / "predictions.jsonl").read_text().splitlines()]
        tested |= {p["id"].split("_")[0] for p in preds}
        assert len(preds) == 4 and len(tested) == 1

    # summary table (all three variants) and the two predictions on held-out utterances
    for text in ("MulT macro-F1", "CMD (audio + text)", "audio only", "text only", "report.html"):
        assert text in res.output
    by_id = {r["id"]: r for r in records}
    assert len(summary["predictions"]) == 2
    assert len({p["label"] for p in summary["predictions"]}) == 2  # two different classes
    for p in summary["predictions"]:
        assert p["id"].split("_")[0] in tested and Path(p["audio"]).name in res.output
        assert math.isclose(sum(p["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert p["pred"] == max(p["probabilities"], key=p["probabilities"].get)
        assert p["transcript"] == by_id[p["id"]]["text"] and p["transcribed"] is False  # --no-transcribe
    assert summary["checkpoint"].endswith("runs/cmd/group1/seed0/finetune/best.safetensors")
    assert summary["reused"] == {"corpus": False, "features": False, "train": False}

    # second run: nothing synthesised, extracted or trained again; report and predictions remade
    wavs, shards, done = _mtimes(out, "*.wav"), _mtimes(out / "features", "*.safetensors"), _mtimes(out, "DONE")
    assert wavs and shards and len(done) == 3 * 3  # per variant: the run and its two stages
    res2 = runner.invoke(app, ["quickstart", "--out", str(out), *TINY, "--json"])
    assert res2.exit_code == 0, res2.output
    again = json.loads(res2.stdout)
    assert again["reused"] == {"corpus": True, "features": True, "train": True}
    assert (wavs, shards, done) == (
        _mtimes(out, "*.wav"),
        _mtimes(out / "features", "*.safetensors"),
        _mtimes(out, "DONE"),
    )
    assert again["rows"] == summary["rows"] and [p["probabilities"] for p in again["predictions"]] == [
        p["probabilities"] for p in summary["predictions"]
    ]

    # other settings in the same folder are refused (naming the key) unless --overwrite
    changed = list(TINY)
    changed[changed.index("--finetune-epochs") + 1] = "2"
    res3 = runner.invoke(app, ["quickstart", "--out", str(out), *changed, "--quiet"])
    assert res3.exit_code == 2 and "max_epochs" in res3.output and "--overwrite" in res3.output


def test_quickstart_configs_follow_the_packaged_yaml(tmp_path):
    cfgs = {
        v: quickstart_config(v, tmp_path / "m.jsonl", tmp_path / "cache", distill_epochs=4, seeds=[1, 2])
        for v in VARIANTS
    }
    assert [c.model.name for c in cfgs.values()] == ["cmd_student", "cmd_student_audio", "cmd_student_text"]
    for c in cfgs.values():
        assert c.data.protocol == "speaker-out" and c.data.labels == "synthetic4" and c.seeds == [1, 2]
        assert [s.name for s in c.stages] == ["distill", "finetune"]
        assert c.stages[0].trainer["max_epochs"] == 4 and c.stages[1].trainer["max_epochs"] == 8  # packaged
        assert c.data.protocol_options == {"groups": 3}  # 3 speaker-independent folds
        assert c.model.options["temperature"] == 1.0  # the classifier's kappa (chosen on validation)
        assert c.stages[1].resolve(c.optim, c.trainer)[1].monitor == "val/macro_f1"
        assert c.model.options["audio_teacher"] == "openai/whisper-tiny.en"
        assert c.model.options["text_teacher"] == "all-MiniLM-L6-v2"
        assert c.encoders.cache_dir == tmp_path / "cache"
        # fixed batches (validation runs every epoch) and frozen copied embeddings (the CPU budget)
        assert c.data.max_batch_samples is None and c.data.batch_size == 8
        assert c.model.options["freeze_embedding"] is True and c.model.options["allow_random"] is False
    with pytest.raises(ValueError, match="unknown quickstart variant 'video'"):
        quickstart_config("video", tmp_path / "m.jsonl", tmp_path / "cache")
    with pytest.raises(ValueError, match="did you mean 'trainer.max_epochs'"):
        quickstart_config("cmd", tmp_path / "m.jsonl", tmp_path / "c", overrides=["trainer.max_epoch=3"])


def test_quickstart_bad_options_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--seeds", "0,x"])
    assert res.exit_code == 2 and "--seeds must be comma-separated integers" in res.output
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--speakers", "2"])
    assert res.exit_code == 2 and "--speakers" in res.output
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--set", "optim.lr=-1"])
    assert res.exit_code == 2 and "optim.lr" in res.output
    assert not (tmp_path / "q" / "runs").exists()  # nothing trained on bad input
