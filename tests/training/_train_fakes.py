"""Tiny fake model / tasks / dataset for the training-engine tests (no audio, no encoders)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from emofuse.config.schema import ExperimentConfig, StageConfig
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.training.components import Components

FAKE_MODEL = "_fake_linear"
DIM = 8


class FakeModel(EmotionModel):
    """Linear classifier on an 8-d feature vector; ``hidden`` for the fake distillation."""

    modalities = ("audio",)

    def __init__(
        self, in_dim: int = DIM, hidden: int = 6, num_classes: int = 3, with_head: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.config = {"in_dim": in_dim, "hidden": hidden, "num_classes": num_classes, "with_head": with_head}
        if dropout:
            self.config["dropout"] = dropout
        self.body = nn.Linear(in_dim, hidden)
        self.drop = nn.Dropout(dropout)  # random in training: an exact resume must restore the RNG
        self.head = nn.Linear(hidden, num_classes) if with_head else None

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        h = self.drop(torch.tanh(self.body(batch["features"]["x"])))  # (B, H)
        out = ModelOutput(hidden={"audio": h[:, None]}, pooled={"audio": h})
        if self.head is not None:
            out.logits = self.head(h)
            out.probs = out.logits.softmax(-1)
        return out


def fake_model_factory(**kw: Any) -> FakeModel:
    return FakeModel(**kw)


fake_model_factory.__name__ = FAKE_MODEL


def register(monkeypatch=None) -> None:
    """Put the fake model in the registry (with monkeypatch in-process tests, permanently in subprocesses)."""
    from emofuse.models import _registry

    if monkeypatch is not None:
        monkeypatch.setitem(_registry._MODELS, FAKE_MODEL, fake_model_factory)
    else:
        _registry._MODELS[FAKE_MODEL] = fake_model_factory


class FakeClassify(nn.Module):
    stage = "finetune"

    def __init__(self, model: EmotionModel) -> None:
        super().__init__()
        self.model = model
        self.config: dict[str, Any] = {}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        loss = nn.functional.cross_entropy(out.logits, batch["labels"])
        return {"loss": loss, "ce": loss.detach(), "logits": out.logits.detach(), "labels": batch["labels"]}

    def predict(self, batch: dict[str, Any]) -> ModelOutput:
        return self.model(batch)


class FakeDistill(nn.Module):
    """Regress a fixed projection of the input ("teacher") from the student's hidden state."""

    stage = "distill"

    def __init__(self, model: EmotionModel) -> None:
        super().__init__()
        self.model = model
        self.proj = nn.Linear(model.config["hidden"], 4)
        g = torch.Generator().manual_seed(123)
        self.register_buffer("teacher", torch.randn(DIM, 4, generator=g))
        self.config: dict[str, Any] = {}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        target = batch["features"]["x"] @ self.teacher
        loss = nn.functional.mse_loss(self.proj(out.pooled["audio"]), target)
        return {"loss": loss, "loss_audio": loss.detach()}


def _vector(utt: str, label_index: int) -> torch.Tensor:
    seed = int(hashlib.sha1(utt.encode()).hexdigest()[:8], 16)
    x = torch.randn(DIM, generator=torch.Generator().manual_seed(seed)) * 0.8
    x[label_index] += 2.0
    return x


class FakeDataset(Dataset):
    def __init__(self, records: Sequence[Utterance], classes: Sequence[str]) -> None:
        self.records = list(records)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        y = self.classes.index(r.label)
        return {"id": r.id, "x": _vector(r.id, y), "label": y}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "ids": [it["id"] for it in items],
            "labels": torch.tensor([it["label"] for it in items]),
            "features": {"x": torch.stack([it["x"] for it in items])},
            "num_samples": torch.full((len(items),), 16000),
        }

    def lengths(self) -> list[int]:
        return [16000 + 1000 * (i % 5) for i in range(len(self.records))]


class FakeComponents(Components):
    def model(self, cfg: ExperimentConfig, stage: StageConfig, classes: Sequence[str]) -> EmotionModel:
        from emofuse.models import create_model

        return create_model(cfg.model.name, **{"num_classes": len(classes), **cfg.model.options, **stage.model})

    def dataset(self, cfg, stage, model, records, classes, split):
        return FakeDataset(records, classes)

    def task(self, cfg, stage, model, classes, train):
        return FakeDistill(model) if stage.task == "distill" else FakeClassify(model)

    def provenance(self) -> dict[str, Any]:
        return {"audio": {"name": "fake", "resolved": "handcrafted", "source": "test"}}


CLASSES = ("neutral", "happy", "sad")


def write_fake_manifest(path, n: int = 60) -> None:
    recs = [Utterance(id=f"u{i:03d}", text=f"t{i}", label=CLASSES[i % 3], speaker=f"s{i % 6}") for i in range(n)]
    write_manifest(recs, path)


def fake_config(manifest, **extra: Any) -> ExperimentConfig:
    from emofuse.config import load_config

    sets = [
        f"data.manifest={manifest}",
        "data.protocol=random-stratified",
        "data.max_batch_samples=null",
        "data.batch_size=8",
        f"model.name={FAKE_MODEL}",
        "optim.lr=0.05",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.progress_bar=false",
        "trainer.deterministic=true",
        "seeds=[0]",
    ]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, sets)
