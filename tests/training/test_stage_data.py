"""stages[].data in the runner: distilling on unlabelled speech, fine-tuning on the labelled split, leaks, cache."""

from __future__ import annotations

import pytest
from _train_fakes import CLASSES, FakeComponents, FakeDataset, _vector, fake_config, write_fake_manifest

from emofuse.data.manifest import Utterance, read_manifest, write_manifest
from emofuse.data.protocols import ProtocolError
from emofuse.training import run_experiment

STAGES = (
    "[{{name: distill, task: distill, model: {{with_head: false}}, trainer: {{max_epochs: 1}}, data: {data}}},"
    " {{name: finetune, task: classify, trainer: {{max_epochs: 1}}}}]"
)


class _AnyLabel(FakeDataset):
    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        y = 0 if r.label is None else self.classes.index(r.label)
        return {"id": r.id, "x": _vector(r.id, y), "label": y}


class Recording(FakeComponents):
    """Records what each stage's datasets hold and what the feature caches were prepared for."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], list[Utterance]] = {}
        self.prepared: list[str] = []

    def prepare(self, cfg, records) -> None:
        self.prepared = [r.id for r in records]

    def dataset(self, cfg, stage, model, records, classes, split):
        self.seen[(stage.name, split)] = list(records)
        return _AnyLabel(records, classes)


@pytest.fixture
def data(tmp_path):
    """Main manifest (6 labelled speakers + 3 unlabelled clips of speaker s3), an unlabelled extra manifest."""
    main = tmp_path / "data" / "manifest.jsonl"
    write_fake_manifest(main)
    recs = read_manifest(main) + [Utterance(id=f"v{i}", text="hm", speaker="s3") for i in range(3)]
    write_manifest(recs, main, overwrite=True)
    extra = tmp_path / "other" / "unlabelled.jsonl"
    write_manifest([Utterance(id=f"x{i}", text=f"x {i}", speaker="other", audio=f"w/x{i}.wav") for i in range(5)],
                   extra)  # fmt: skip
    return main, extra


def _cfg(main, data_yaml: str):
    return fake_config(
        main,
        **{"data.protocol": "speaker-out", "data.folds": "[s0]", "stages": STAGES.format(data=data_yaml)},
    )


def test_distill_reads_unlabelled_speech_while_finetuning_sees_only_the_labelled_training_split(tmp_path, data):
    main, extra = data
    comp = Recording()
    doc = run_experiment(
        _cfg(main, f"{{manifests: [{extra}], main: train_speakers}}"), tmp_path / "run", components=comp, progress=False
    )
    assert doc is not None and doc["n_runs"] == 1
    labelled = [r for r in read_manifest(main) if r.label is not None]
    train = sorted(r.id for r in labelled if r.speaker not in ("s0", "s1"))  # fold s0: test s0, validation s1
    distill = comp.seen[("distill", "train")]
    assert sorted(r.id for r in distill) == sorted(train + ["v0", "v1", "v2"] + [f"x{i}" for i in range(5)])
    assert all(r.label is None for r in distill if r.id[0] in "vx")
    assert {r.audio for r in distill if r.id == "x0"} == {str(extra.parent / "w" / "x0.wav")}  # own folder
    finetune = comp.seen[("finetune", "train")]
    assert sorted(r.id for r in finetune) == train and all(r.label is not None for r in finetune)
    val = comp.seen[("distill", "val")]  # both stages validate on the fold's own split
    assert val == comp.seen[("finetune", "val")] and {r.speaker for r in val} == {"s1"}
    assert {r.speaker for r in comp.seen[("finetune", "test")]} == {"s0"}
    assert {"v0", "x4"} <= set(comp.prepared)  # teacher states cached up front with the main records
    assert len(comp.prepared) == len(set(comp.prepared))


def test_distill_data_with_a_test_speaker_is_refused_before_any_training(tmp_path, data):
    main, extra = data
    write_manifest([Utterance(id="x9", text="x", speaker="s0")], extra, overwrite=True)  # s0: the test speaker
    with pytest.raises(ProtocolError, match=rf"{extra}: fold 's0': 1 distillation record\(s\) of test speaker\(s\) s0"):
        run_experiment(
            _cfg(main, f"{{manifests: [{extra}]}}"), tmp_path / "run", components=Recording(), progress=False
        )
    assert not (tmp_path / "run" / "s0").exists()


def test_stage_data_is_for_distill_stages_only(tmp_path, data):
    main, extra = data
    bad = f"[{{name: finetune, task: classify, data: {{manifests: [{extra}]}}}}]"
    with pytest.raises(ValueError, match="data is for distill stages only"):
        fake_config(main, stages=bad)


def test_distill_data_teacher_states_are_cached_with_the_main_ones_and_reused(tmp_path):
    from emofuse.config import load_config
    from emofuse.features import FeatureStore
    from emofuse.testing.dummies import make_wav_corpus

    recs = make_wav_corpus(tmp_path / "main", 12, seconds=0.3, labels=CLASSES)
    main = tmp_path / "main" / "manifest.jsonl"
    write_manifest([r.model_copy(update={"speaker": f"s{i % 3}"}) for i, r in enumerate(recs)], main)
    other = make_wav_corpus(tmp_path / "other", 4, seconds=0.3, seed=1)  # relative paths, other folder
    extra = tmp_path / "other" / "unlabelled.jsonl"
    write_manifest([r.model_copy(update={"id": f"x{i}", "label": None, "speaker": "x"}) for i, r in enumerate(other)],
                   extra)  # fmt: skip
    sets = [
        f"data.manifest={main}", "data.protocol=speaker-out", "data.folds=[s0]", "data.max_batch_samples=null",
        "data.batch_size=4", "model.name=cmd_student_audio", "model.audio_teacher=tiny-wav2vec2",
        f"encoders.cache_dir={tmp_path / 'cache'}", "trainer.accelerator=cpu", "trainer.progress_bar=false",
        "trainer.logger=none", "stages=" + STAGES.format(data=f"{{manifests: [{extra}]}}"),
    ]  # fmt: skip
    cfg = load_config(None, sets)
    run_experiment(cfg, tmp_path / "run1", progress=False)
    (cache,) = (tmp_path / "cache").iterdir()  # one teacher cache, shared by the main and the extra manifest
    store = FeatureStore(cache)
    assert {f"x{i}" for i in range(4)} | {r.id for r in recs} <= set(store.ids)
    shards = sorted(p.stat().st_mtime_ns for p in cache.glob("*.safetensors"))
    run_experiment(cfg, tmp_path / "run2", progress=False)  # another run folder: nothing is extracted again
    assert sorted(p.stat().st_mtime_ns for p in cache.glob("*.safetensors")) == shards
    assert FeatureStore(cache).meta["counts"]["computed"] == 16
