"""`emofuse analyze` end to end on checkpoints saved from a tiny CMD student (no training)."""

import json
import shutil
import warnings
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.manifest import write_manifest

checkpoint = pytest.importorskip("emofuse.models.checkpoint", reason="emofuse.models.checkpoint not available yet")

runner = CliRunner()
CLASSES = ("neutral", "happy", "sad", "angry")

CONFIG = """
name: tiny-cmd
seeds: [0]
data:
  manifest: {manifest}
  protocol: random-stratified
model:
  name: cmd_student
  audio_teacher: tiny-wav2vec2
  text_teacher: tiny-bert
encoders:
  allow_random: true
"""


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import torch

    from emofuse.models import create_model
    from emofuse.testing.dummies import make_wav_corpus

    tmp = tmp_path_factory.mktemp("analyze")
    root = tmp / "corpus"
    records = make_wav_corpus(root, 16, seconds=0.25, labels=CLASSES)
    write_manifest(records, root / "manifest.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = create_model("cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert")
    path = checkpoint.save_checkpoint(model, tmp / "ckpt" / "best.safetensors", {"classes": sorted(CLASSES)})
    return path, root / "manifest.jsonl", records


def _outputs(out):
    dom = json.loads((out / "dominance.json").read_text())
    tok = json.loads((out / "token_importance.json").read_text())
    page = (out / "token_importance.html").read_text()
    HTMLParser().feed(page)
    return dom, tok, page, (out / "dominance.md").read_text()


def test_analyze_a_checkpoint(tmp_path, tiny_ckpt):
    ckpt, manifest, records = tiny_ckpt
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "analyze",
            str(ckpt),
            "-m",
            str(manifest),
            "-o",
            str(out),
            "--max-utterances",
            "6",
            "--batch-size",
            "4",
            "--html-per-class",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    dom, tok, page, md = _outputs(out)
    assert dom["split"] == "all" and dom["summary"]["n"] == 6 and len(dom["records"]) == 6
    assert [r["id"] for r in dom["records"]] == [r.id for r in records[:6]]
    assert {r["label"] for r in dom["records"]} <= set(CLASSES) and sum(dom["summary"]["share"].values()) == 1.0
    assert all(r["words"] == 4 and r["text_tokens"] > 0 for r in dom["records"])
    assert "| Dominant modality | Selection ratio | μ(±σ) raw text-token length |" in md and "Audio" in res.output
    assert len(tok["items"]) == 6 and tok["method"] == "grad_x_input"
    assert all(max(it["scores"]) == 1.0 for it in tok["items"])
    assert page.count('class="utt"') == 4  # one per class
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind

    res = runner.invoke(app, ["analyze", str(ckpt), "-o", str(out)])
    assert res.exit_code == 2 and "--manifest" in res.output


def test_analyze_a_run_folder_uses_its_fold_test_split(tmp_path, tiny_ckpt):
    pytest.importorskip("emofuse.training.evaluate", reason="emofuse.training not available yet")
    from emofuse.data.protocols import make_folds

    ckpt, manifest, records = tiny_ckpt
    run = tmp_path / "run"
    folds = make_folds(records, "random-stratified")
    fold = folds[0].name
    seed_dir = run / fold / "seed0"
    (seed_dir / "finetune").mkdir(parents=True)
    shutil.copy(ckpt, seed_dir / "finetune" / "best.safetensors")
    (run / "config.yaml").write_text(CONFIG.format(manifest=manifest))
    (seed_dir / "config.yaml").write_text(CONFIG.format(manifest=manifest))
    (seed_dir / "DONE").write_text(json.dumps({"checkpoint": "finetune/best.safetensors"}))
    out = tmp_path / "out"
    res = runner.invoke(app, ["analyze", str(run), "-o", str(out), "--seed", "0", "-q"])
    assert res.exit_code == 0, res.output
    dom, tok, _, md = _outputs(out)
    assert dom["split"] == "test" and {r["id"] for r in dom["records"]} == set(folds[0].test)
    assert {it["id"] for it in tok["items"]} == set(folds[0].test) and "| tiny-cmd | Audio |" in md

    res = runner.invoke(app, ["analyze", str(run), "-o", str(out), "--seed", "3"])
    assert res.exit_code == 2 and "no finished run" in res.output
