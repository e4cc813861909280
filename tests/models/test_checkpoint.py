"""Self-describing checkpoints: rebuild from the file alone; clear errors that name the file."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from emofuse.models import _registry
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.models.checkpoint import (
    MODEL_JSON,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    read_checkpoint_meta,
    save_checkpoint,
)
from emofuse.models.probe import LinearProbe

NAME = "_ckpt_test_mlp"


class TinyMLP(EmotionModel):
    def __init__(self, in_dim=4, hidden=5, num_classes=3, tied=False):
        super().__init__()
        self.config = {"in_dim": in_dim, "hidden": hidden, "num_classes": num_classes, "tied": tied}
        self.a = nn.Linear(in_dim, hidden)
        self.b = nn.Linear(hidden, num_classes)
        if tied:
            self.c = self.a  # shared weights: safetensors refuses shared tensors unless cloned
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, batch):
        logits = self.b(torch.relu(self.a(batch["x"]))) * self.scale
        return ModelOutput(logits=logits, probs=logits.softmax(-1))


@pytest.fixture(autouse=True)
def _register(monkeypatch):
    def factory(**kw):
        return TinyMLP(**kw)

    factory.__name__ = NAME
    monkeypatch.setitem(_registry._MODELS, NAME, factory)


def _model(**kw):
    model = _registry.create_model(NAME, **kw)
    with torch.no_grad():
        model.scale.fill_(3.0)
    return model


def test_round_trip_rebuilds_without_config(tmp_path):
    model = _model(hidden=7)
    meta = {"classes": ["a", "b", "c"], "encoders": {"audio": {"name": "x"}}, "epoch": 4, "score": 0.5}
    path = save_checkpoint(model, tmp_path / "best.safetensors", meta)
    side = json.loads((tmp_path / MODEL_JSON).read_text())
    assert side["model_name"] == NAME and side["model_config"]["hidden"] == 7 and side["classes"] == ["a", "b", "c"]
    assert "epoch" not in side and "score" not in side  # per-file fields stay in the file header
    loaded, doc = load_checkpoint(tmp_path)  # a folder means its best.safetensors
    assert doc["epoch"] == 4 and doc["model_name"] == NAME and not loaded.training
    x = {"x": torch.randn(2, 4)}
    assert torch.equal(loaded(x).logits, model.eval()(x).logits)
    assert float(loaded.scale) == 3.0 and loaded.model_name == NAME
    assert read_checkpoint_meta(path)["encoders"] == {"audio": {"name": "x"}}


def test_tied_weights_and_from_config_models(tmp_path):
    model = _model(tied=True)
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "t.safetensors"))
    assert torch.equal(loaded.c.weight, model.a.weight)
    probe = LinearProbe(modality="audio", input_dim=3, num_classes=2)
    probe.model_name = "probe"
    loaded, doc = load_checkpoint(save_checkpoint(probe, tmp_path / "p" / "best.safetensors"))
    assert isinstance(loaded, LinearProbe) and doc["model_class"].endswith("LinearProbe")
    assert torch.equal(loaded.head.weight, probe.head.weight)


def test_missing_file_and_folder_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    save_checkpoint(_model(), tmp_path / "last.safetensors")
    with pytest.raises(CheckpointError, match=r"no best\.safetensors in .* \(it has: last\.safetensors\)"):
        find_checkpoint(tmp_path)


def test_corrupt_file_is_named(tmp_path):
    path = save_checkpoint(_model(), tmp_path / "best.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"best\.safetensors: not a readable safetensors checkpoint"):
        load_checkpoint(path)
    other = tmp_path / "x.safetensors"
    other.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"x\.safetensors"):
        load_checkpoint(other)


def test_header_less_file_falls_back_to_model_json(tmp_path):
    model = _model()
    save_checkpoint(model, tmp_path / "best.safetensors")
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    loaded, doc = load_checkpoint(bare)
    assert doc["model_name"] == NAME and torch.equal(loaded.a.weight, model.a.weight)
    (tmp_path / MODEL_JSON).unlink()
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: no model metadata"):
        load_checkpoint(bare)


def test_mismatched_weights_and_unknown_model_are_clear(tmp_path):
    path = save_checkpoint(_model(hidden=5), tmp_path / "best.safetensors")
    expected = r"best\.safetensors: weights do not fit the model; shape mismatch for \[a\.bias: checkpoint \(5,\) vs"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(_model(hidden=6), path)
    extra = _model(tied=True)
    with pytest.raises(CheckpointError, match=r"missing keys \[c\.bias, c\.weight\]"):
        load_weights(extra, path)
    assert load_weights(extra, path, strict=False) == {"missing": ["c.bias", "c.weight"], "unexpected": []}
    doc = read_checkpoint_meta(path)
    bad = tmp_path / "bad.safetensors"
    state = {k: v.contiguous() for k, v in _model().state_dict().items()}
    save_file(state, str(bad), metadata={"emofuse": json.dumps({**doc, "model_name": "no_such_model"})})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: cannot rebuild model 'no_such_model'"):
        load_checkpoint(bad)


def test_non_finite_weights_are_refused_by_name(tmp_path):
    model = _model()
    with torch.no_grad():  # what a diverged run leaves in last.safetensors
        model.a.weight[0, 0] = float("nan")
        model.b.bias.fill_(float("inf"))
    path = save_checkpoint(model, tmp_path / "last.safetensors")
    expected = r"last\.safetensors: non-finite weights \(NaN or inf\) in \[a\.weight, b\.bias\]; the run .* diverged"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=expected):
        load_weights(_model(), path, strict=False)  # a stage initialised from it is refused too
