"""Text-only manifests (``audio: null``, as ``prepare --allow-missing-audio`` writes them) train text-only configs."""

import pytest

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.training import run_experiment

WORDS = {"happy": "glad joy", "sad": "tears gloom", "angry": "rage fury", "neutral": "table chair"}


def _text_only(tmp_path):
    recs = [
        Utterance(id=f"{lab}{i}", audio=None, text=WORDS[lab], label=lab, speaker=f"s{i % 3}")
        for lab in WORDS
        for i in range(6)
    ]
    manifest = tmp_path / "m.jsonl"
    write_manifest(recs, manifest)
    glove = tmp_path / "glove.txt"
    glove.write_text(
        "".join(f"{w} {i % 3} {i // 3 % 3} {i % 2}\n" for i, w in enumerate(" ".join(WORDS.values()).split()))
    )
    return manifest, glove


def _cfg(manifest, glove, model, *extra):
    return load_config(
        None,
        [
            f"data.manifest={manifest}",
            "data.protocol=random-stratified",
            "data.max_batch_samples=null",
            "data.batch_size=8",
            f"model.name={model}",
            "model.dim=8",
            "model.num_heads=2",
            "model.num_layers=1",
            "encoders.inputs=features",
            "encoders.text=glove",
            f"encoders.text_options={{path: {glove}}}",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "trainer.logger=none",
            *extra,
        ],
    )


def test_a_text_only_config_trains_on_a_text_only_manifest(tmp_path):
    manifest, glove = _text_only(tmp_path)
    cfg = _cfg(manifest, glove, "mult_text", "model.text_dim=null")
    doc = run_experiment(cfg, tmp_path / "run", progress=False, echo=lambda _: None)
    assert doc is not None and doc["n_runs"] == 1 and "macro_f1" in doc["aggregate"]


def test_an_audio_config_on_a_text_only_manifest_is_refused_up_front(tmp_path):
    manifest, glove = _text_only(tmp_path)
    cfg = _cfg(manifest, glove, "mult_audio", "encoders.audio=mfcc", "model.audio_dim=null")
    with pytest.raises(ValueError, match=r"a text-only manifest \(all 24 records have audio: null\).*'mfcc'"):
        run_experiment(cfg, tmp_path / "run", progress=False, echo=lambda _: None)
