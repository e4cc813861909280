"""The runner's feature caches: a cache extracted for fewer utterances is extended, not a mid-run error."""

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.training.components import DefaultComponents


def _recs(n: int) -> list[Utterance]:
    words = ["happy", "sad", "day", "night"]
    return [Utterance(id=f"u{i}", text=f"{words[i % 4]} {words[(i + 1) % 4]}", label="happy") for i in range(n)]


def test_a_grown_manifest_extends_the_cache_and_reuses_what_is_stored(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("happy 1 0 0\nsad 0 1 0\nday 0 0 1\nnight 1 1 1\n")
    manifest = tmp_path / "m.jsonl"
    write_manifest(_recs(6), manifest)
    cfg = load_config(
        None, [f"data.manifest={manifest}", "encoders.text=glove", f"encoders.text_options={{path: {glove}}}"]
    )

    c = DefaultComponents(progress=False)
    small = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(2))  # e.g. extracted for two speakers first
    assert len(small) == 2 and "u5" not in small

    c = DefaultComponents(progress=False)  # a later experiment on the whole manifest, same cache folder
    big = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(6))
    assert big.path == small.path and len(big) == 6
    assert big.meta["counts"]["reused"] == 2 and big.meta["counts"]["computed"] == 4
    assert big.get("u5").tolist() == [[0.0, 1, 0], [0, 0, 1]]  # "sad day"

    c = DefaultComponents(progress=False)  # nothing missing: the cache is opened as it is, not rewritten
    again = c.store(cfg, c.encoder(cfg, "text", "glove"), _recs(3))
    assert len(again) == 6 and again.meta["counts"]["computed"] == 4


def test_utterances_whose_audio_cannot_be_read_are_left_out_of_every_split(tmp_path, monkeypatch):
    import json

    import pytest

    from emofuse.encoders import _registry
    from emofuse.testing.dummies import DUMMY_SPECS, make_wav_corpus
    from emofuse.training import run_experiment

    for spec in DUMMY_SPECS:
        monkeypatch.setitem(_registry._ENCODERS, spec.name, spec)
    recs = make_wav_corpus(tmp_path, 24, seconds=0.2)
    for bad in ("u003", "u010"):
        (tmp_path / "wav" / f"{bad}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    manifest = write_manifest(recs, tmp_path / "manifest.jsonl")
    sets = [f"data.manifest={manifest}", "data.protocol=random-stratified", "data.max_batch_samples=null"]
    sets += ["model.name=probe", "model.modality=audio", "model.input_dim=8", "encoders.inputs=features"]
    sets += ["encoders.audio=dummy-audio", "trainer.max_epochs=1", "trainer.accelerator=cpu"]
    sets += ["trainer.progress_bar=false", "trainer.logger=[]", "seeds=[0]"]
    with pytest.warns(UserWarning, match=r"2 of 24 utterance\(s\) are left out of training and testing: .*u003"):
        doc = run_experiment(load_config(None, sets), tmp_path / "run", progress=False)
    assert doc["n_runs"] == 1
    preds = (tmp_path / "run" / "seed0" / "seed0" / "predictions.jsonl").read_text().splitlines()
    assert not {json.loads(p)["id"] for p in preds} & {"u003", "u010"}


def test_launched_ranks_come_from_torchrun_or_slurm(monkeypatch):
    from emofuse.training.components import _launched_ranks

    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert _launched_ranks() == (0, 1)  # one process, or Lightning's launcher before it starts the others
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert _launched_ranks() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _launched_ranks() == (1, 2)  # torchrun's variables win
