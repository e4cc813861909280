"""Dialogue batching: grouping by dialogue in turn order, padding + masks, flattened ids/labels, the real MELD dev
split, the feature cache, and `emofuse train` end to end with a CM-RoBERTa config."""

import csv
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.data.manifest import Utterance, write_manifest  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.pipeline.dataset import DatasetItemError  # noqa: E402
from emofuse.pipeline.dialogue import DialogueDataset, DialogueError, group_dialogues  # noqa: E402

MELD_DEV = Path("/work/shared/data/meld-csv/dev_sent_emo.csv")
CLASSES = ("neutral", "joy", "anger")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class DictStore:
    """A minimal feature store: ``get`` gives (T, D) frames; ``get_pooled`` is their mean."""

    def __init__(self, frames):
        self.frames = frames
        self.output_dim = next(iter(frames.values())).shape[-1]

    def __contains__(self, utt):
        return utt in self.frames

    def get(self, utt):
        return self.frames[utt]

    def get_pooled(self, utt):
        return self.frames[utt].mean(0)


def records(spec):
    """``spec``: (dialogue, turn, label) per record, ids ``<dialogue>_<turn>``."""
    return [Utterance(id=f"{d}_{t}", text="x", dialogue=d, turn=t, label=lab) for d, t, lab in spec]


def stores(recs, dims=(("audio", 3), ("text", 5)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: DictStore({r.id: torch.randn(2, d, generator=g) for r in recs}) for m, d in dims}


SPEC = [("b", 2, "joy"), ("a", 0, "neutral"), ("b", 0, "anger"), ("b", 1, None), ("a", 1, "joy"), ("c", 5, "joy")]


def test_group_dialogues_orders_turns_and_keeps_first_appearance():
    groups = group_dialogues(records(SPEC))
    assert [(d.id, [r.turn for r in d.records]) for d in groups] == [("b", [0, 1, 2]), ("a", [0, 1]), ("c", [5])]


@pytest.mark.parametrize(
    ("rec", "match"),
    [
        (Utterance(id="u", text="x", turn=0), "no dialogue"),
        (Utterance(id="u", text="x", dialogue="a"), "no turn"),
        (Utterance(id="u", text="x", dialogue="a", turn=1), "both turn 1"),
    ],
)
def test_group_dialogues_names_bad_records(rec, match):
    with pytest.raises(DialogueError, match=match):
        group_dialogues([Utterance(id="v", text="x", dialogue="a", turn=1), rec])


def test_collate_pads_masks_and_flattens_in_row_major_order():
    recs = records(SPEC)
    st = stores(recs)
    ds = DialogueDataset(recs, CLASSES, st)
    assert len(ds) == 3 and ds.num_utterances == 6
    batch = ds.collate([ds[0], ds[1], ds[2]])
    mask = batch["dialogue_mask"]
    assert mask.tolist() == [[True, True, True], [True, True, False], [True, False, False]]
    assert batch["ids"] == ["b_0", "b_1", "b_2", "a_0", "a_1", "c_5"] == ds.ids
    assert batch["labels"].tolist() == [2, -100, 1, 0, 1, 1]  # anger, unlabelled, joy | neutral, joy | joy
    assert batch["dialogue_labels"][1].tolist() == [0, 1, -100]
    assert batch["turns"].tolist() == [[0, 1, 2], [0, 1, -1], [5, -1, -1]]
    assert batch["dialogue_ids"] == ["b", "a", "c"]
    for m, d in (("audio", 3), ("text", 5)):
        x = batch["features"][m]
        assert x.shape == (3, 3, d) and torch.equal(batch["features"][f"{m}_mask"], mask)
        assert (x[~mask] == 0).all()
        flat = x[mask]  # rows line up with batch["ids"]
        for row, utt in zip(flat, batch["ids"], strict=True):
            assert torch.allclose(row, st[m].get_pooled(utt))


def test_regression_targets_follow_the_flattened_ids():
    recs = [r.model_copy(update={"extra": {"y": float(i)}}) for i, r in enumerate(records(SPEC)) if i != 3]
    recs.append(Utterance(id="b_1", text="x", dialogue="b", turn=1))  # no target: NaN, still in its dialogue
    ds = DialogueDataset(recs, None, stores(recs), target="extra.y")
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["ids"] == ["b_0", "b_1", "b_2", "a_0", "a_1", "c_5"]
    y = dict(zip(batch["ids"], batch["targets"].tolist(), strict=True))
    assert y["b_0"] == 2.0 and y["b_2"] == 0.0 and y["a_1"] == 4.0 and y["c_5"] == 5.0 and y["b_1"] != y["b_1"]
    assert batch["dialogue_targets"].shape == batch["dialogue_mask"].shape
    assert torch.isnan(batch["dialogue_targets"][~batch["dialogue_mask"]]).all()
    assert "labels" not in batch
    bad = [recs[0].model_copy(update={"extra": {"y": "high"}})]
    with pytest.raises(ValueError, match="not a finite number"):
        DialogueDataset(bad, None, stores(bad), target="extra.y")


def test_model_rows_line_up_with_the_flattened_ids():
    recs = records(SPEC)
    ds = DialogueDataset(recs, CLASSES, stores(recs))
    model = create_model("cm_roberta", audio_dim=3, text_dim=5, hidden=8, num_heads=2, num_classes=3).eval()
    batch = ds.collate([ds[i] for i in range(3)])
    out = model(batch)
    assert out.logits.shape == (len(batch["ids"]), 3)
    for i in range(3):  # each dialogue alone gives the rows of its utterances
        one = ds.collate([ds[i]])
        rows = [batch["ids"].index(u) for u in one["ids"]]
        assert torch.allclose(model(one).logits, out.logits[rows], atol=1e-5)


def test_missing_features_zero_drop_or_error():
    recs = records(SPEC)
    st = stores(recs)
    del st["text"].frames["b_1"]
    with pytest.warns(UserWarning, match="1 of 6 utterances .* zero vectors"):
        ds = DialogueDataset(recs, CLASSES, st)
    item = ds[0]
    assert item["ids"] == ["b_0", "b_1", "b_2"] and (item["features"]["text"][1] == 0).all()
    assert ds.missing == {"b_1": ["text"]}
    with pytest.warns(UserWarning, match="left out"):
        dropped = DialogueDataset(recs, CLASSES, st, missing="drop")
    assert dropped[0]["ids"] == ["b_0", "b_2"] and dropped.num_utterances == 5
    with pytest.raises(DatasetItemError, match="b_1"):
        DialogueDataset(recs, CLASSES, st, missing="error")
    with pytest.raises(ValueError, match="not one of the classes"):
        DialogueDataset(records([("a", 0, "fear")]), CLASSES, st)


def test_max_turns_splits_long_dialogues_in_order():
    recs = records([("a", t, "joy") for t in range(5)])
    ds = DialogueDataset(recs, CLASSES, stores(recs), max_turns=2)
    assert [(d.id, [r.turn for r in d.records]) for d in ds.dialogues] == [
        ("a#0", [0, 1]),
        ("a#1", [2, 3]),
        ("a#2", [4]),
    ]


@pytest.mark.slow  # builds a transformers model (import cost)
def test_reads_pooled_vectors_from_the_feature_cache(tmp_path):
    from emofuse.encoders import create_encoder
    from emofuse.features import FeatureStore, extract_features

    recs = [
        Utterance(id=f"d{d}_u{t}", text=f"turn {t} of dialogue {d}", dialogue=f"d{d}", turn=t, label="joy")
        for d in range(2)
        for t in range(3)
    ]
    enc = create_encoder("tiny-roberta-last2")
    store = extract_features(recs, enc, tmp_path / "cache", progress=False)
    assert isinstance(store, FeatureStore) and store.output_dim == 64
    assert store.get(recs[0].id).shape == (1, 64)  # one row per utterance, not per token
    ds = DialogueDataset(recs, CLASSES, {"text": store})
    batch = ds.collate([ds[0], ds[1]])
    expected = enc.encode([r.text for r in recs]).pooled
    got = batch["features"]["text"][batch["dialogue_mask"]]
    assert torch.allclose(got, expected, atol=2e-3)  # fp16 cache


def meld_dev_rows():
    with MELD_DEV.open(encoding="utf-8", errors="replace", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not MELD_DEV.is_file(), reason=f"real MELD dev CSV not found at {MELD_DEV}")
def test_real_meld_dev_split_groups_into_dialogues_in_turn_order(tmp_path):
    from emofuse.data.corpora.meld import prepare_meld

    (tmp_path / "meld").mkdir()
    (tmp_path / "meld" / "dev_sent_emo.csv").symlink_to(MELD_DEV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_meld(tmp_path / "meld", allow_missing_audio=True, progress=False, splits=("dev",))
    recs = [r for r in prepared.records if r.split == "dev"]
    assert len(recs) == 1109
    rows = meld_dev_rows()
    expected = {}
    for row in rows:  # the CSV itself, read independently of the recipe
        expected.setdefault(int(row["Dialogue_ID"]), []).append(int(row["Utterance_ID"]))
    assert len(expected) == 114  # official dev dialogue count (specs/cm-roberta.md §4)
    shuffled = recs[::-1]  # grouping must not rely on the manifest order
    dias = group_dialogues(shuffled)
    assert len(dias) == len(expected) == 114
    assert sum(len(d) for d in dias) == 1109
    for d in dias:
        turns = [r.turn for r in d.records]
        assert turns == sorted(turns) == sorted(expected[int(d.id.removeprefix("dev_dia"))])
    # batching 32 dialogues at a time serves every utterance exactly once, in dialogue/turn order
    st = {"text": DictStore({r.id: torch.zeros(1, 2) for r in recs})}
    ds = DialogueDataset(recs, ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"), st)
    served = []
    for k in range(0, len(ds), 32):
        batch = ds.collate([ds[i] for i in range(k, min(k + 32, len(ds)))])
        assert batch["dialogue_mask"].shape[0] <= 32 and len(batch["labels"]) == len(batch["ids"])
        served += batch["ids"]
    assert len(served) == len(set(served)) == 1109
    assert served == [r.id for d in group_dialogues(recs) for r in d.records]
    assert served[:2] == ["dev_dia0_utt0", "dev_dia0_utt1"]


CONFIG = """
name: tiny-cm-roberta
seeds: [0]
data:
  manifest: {manifest}
  protocol: official
  protocol_options: {{speaker_dependent: true}}
  batch_size: 2
  max_batch_samples: null
model:
  name: {model}
  audio_dim: null
  text_dim: null
  hidden: 8
  num_heads: 2
  ffn_dim: 16
  head_hidden: 8
encoders:
  audio: dummy-audio
  text: tiny-roberta-last2
  inputs: features
  cache_dir: {cache}
optim: {{name: adam, lr: 0.003, weight_decay: 0.0003}}
trainer: {{max_epochs: 3, early_stopping_patience: 15, accelerator: cpu, devices: 1, progress_bar: false}}
stages:
  - {{name: train, task: classify, task_options: {{loss: ce}}}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cm_roberta", "cm_roberta_text"])
def test_emofuse_train_runs_a_cm_roberta_config_end_to_end(tmp_path, monkeypatch, model):
    from typer.testing import CliRunner

    from emofuse.cli.main import app
    from emofuse.encoders import _registry
    from emofuse.models.checkpoint import load_checkpoint
    from emofuse.testing.dummies import DUMMY_SPECS, make_wav_corpus

    for spec in DUMMY_SPECS:
        monkeypatch.setitem(_registry._ENCODERS, spec.name, spec)
    root = tmp_path / "corpus"
    recs = make_wav_corpus(root, 24, seconds=0.2, labels=CLASSES)
    split = {0: "train", 1: "train", 2: "train", 3: "dev", 4: "test", 5: "test"}
    recs = [
        r.model_copy(update={"dialogue": f"d{i // 4}", "turn": i % 4, "split": split[i // 4]})
        for i, r in enumerate(recs)
    ]
    write_manifest(recs, root / "manifest.jsonl")
    config = tmp_path / "cmr.yaml"
    config.write_text(CONFIG.format(manifest=root / "manifest.jsonl", cache=tmp_path / "cache", model=model))
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    seed = run / "official" / "seed0"
    preds = [json.loads(line) for line in (seed / "predictions.jsonl").read_text().splitlines()]
    test_ids = sorted(r.id for r in recs if r.split == "test")
    assert [p["id"] for p in preds] == test_ids  # scored per utterance, every test turn once
    assert all(p["label"] == next(r.label for r in recs if r.id == p["id"]) for p in preds)
    metrics = json.loads((seed / "metrics.json").read_text())
    assert set(metrics["per_class_f1"]) == set(CLASSES) and 0.0 <= metrics["weighted_f1"] <= 1.0
    trained, meta = load_checkpoint(seed / "train")
    assert trained.model_name == model and trained.config["text_dim"] == 64  # read from the encoder
    if model == "cm_roberta":
        assert trained.config["audio_dim"] == 8 and meta["encoders"]["audio"]["name"] == "dummy-audio"
    assert meta["encoders"]["text"]["name"] == "tiny-roberta-last2"


@pytest.mark.slow
def test_data_dialogue_size_forms_pseudo_dialogues_for_a_corpus_of_single_utterances(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emofuse.cli.main import app
    from emofuse.encoders import _registry
    from emofuse.testing.dummies import DUMMY_SPECS, make_wav_corpus

    for spec in DUMMY_SPECS:
        monkeypatch.setitem(_registry._ENCODERS, spec.name, spec)
    root = tmp_path / "corpus"
    recs = make_wav_corpus(root, 18, seconds=0.2, labels=CLASSES)
    split = {0: "train", 1: "dev", 2: "test"}  # speaker s<k> = utterances 6k..6k+5, no dialogue, no turn
    recs = [r.model_copy(update={"speaker": f"s{i // 6}", "split": split[i // 6]}) for i, r in enumerate(recs)]
    assert all(r.dialogue is None for r in recs)
    write_manifest(recs, root / "manifest.jsonl")
    config = tmp_path / "cmr.yaml"
    config.write_text(CONFIG.format(manifest=root / "manifest.jsonl", cache=tmp_path / "cache", model="cm_roberta"))
    args = ["train", str(config), "--quiet", "--set", "trainer.max_epochs=1"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert res.exit_code != 0 and "data.dialogue_size" in res.output  # without the switch: nothing to batch
    run = tmp_path / "run"
    res = CliRunner().invoke(app, [*args, "--out", str(run), "--set", "data.dialogue_size=4"])
    assert res.exit_code == 0, res.output
    preds = [json.loads(line) for line in (run / "official" / "seed0" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == sorted(r.id for r in recs if r.split == "test")  # 6 turns, 2 dialogues


def test_form_dialogues_from_consecutive_utterances_of_one_speaker():
    from emofuse.pipeline.dialogue import form_dialogues

    recs = [Utterance(id=f"u{i}", text="x", speaker="AB"[i // 5], label="joy") for i in range(10)]
    recs.append(Utterance(id="kept", text="x", speaker="A", dialogue="real", turn=3))
    formed = form_dialogues(recs, size=3)
    assert [r.id for r in formed] == [r.id for r in recs]
    assert [(r.dialogue, r.turn) for r in formed[:5]] == [
        ("A-d0", 0),
        ("A-d0", 1),
        ("A-d0", 2),
        ("A-d1", 0),
        ("A-d1", 1),
    ]
    assert formed[5].dialogue == "B-d0" and (formed[-1].dialogue, formed[-1].turn) == ("real", 3)
    dias = group_dialogues(formed)
    assert [len(d) for d in dias] == [3, 2, 3, 2, 1]
    assert all(len({r.speaker for r in d.records}) == 1 for d in dias)
    with pytest.raises(ValueError, match="size"):
        form_dialogues(recs, size=0)


def test_iemocap_dialogues_follow_the_time_order(tmp_path):
    """IEMOCAP manifests (dialogue = dialog name, turn = rank by start time) batch the same way as MELD."""
    import importlib.util

    from emofuse.data.corpora.iemocap import prepare_iemocap

    path = Path(__file__).resolve().parents[1] / "data" / "corpora" / "test_iemocap.py"
    spec = importlib.util.spec_from_file_location("_iemocap_miniature", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the miniature release writer of the recipe's tests
    root = module.write_iemocap(tmp_path / "IEMOCAP_full_release")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = prepare_iemocap(root, progress=False).records
    dias = group_dialogues(recs[::-1])
    assert {d.id for d in dias} == {r.dialogue for r in recs} and sum(len(d) for d in dias) == len(recs)
    for d in dias:
        starts = [r.extra["dialog_start"] for r in d.records]
        assert starts == sorted(starts)
    impro = next(d for d in dias if d.id == "Ses01F_impro01")
    # 6.29 s, 10.0 s, 12.0 s; M001 (8.5 s, frustration) is not in the 4-class set, so turn 1 is a gap
    assert [(r.id[-4:], r.turn) for r in impro.records][:3] == [("F000", 0), ("M000", 2), ("F001", 3)]
    ds = DialogueDataset(recs, sorted({r.label for r in recs}), stores(recs))
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert sorted(batch["ids"]) == sorted(r.id for r in recs) and batch["labels"].min() >= 0
