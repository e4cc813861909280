"""A tiny CMD-like student for task tests (the real CMD student lives in emofuse.models.cmd_student)."""

import pytest
import torch
from torch import nn

from emofuse.layers.pooling import masked_mean
from emofuse.models.base import EmotionModel, ModelOutput


class FakeStudent(EmotionModel):
    """Per-modality Linear(in -> d) on batch[m]["x"] (B, T, in) with batch[m]["mask"]; a shared F head."""

    modalities = ("audio", "text")

    def __init__(self, in_dim=6, dim=8, num_classes=4, temperature=0.05, classify=False):
        super().__init__()
        self.enc = nn.ModuleDict({m: nn.Linear(in_dim, dim) for m in self.modalities})
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_classes))
        self.temperature = temperature
        self.classify = classify

    def forward(self, batch):
        hidden = {m: self.enc[m](batch[m]["x"]) for m in self.modalities}
        masks = {m: batch[m]["mask"] for m in self.modalities}
        out = ModelOutput(hidden=hidden, masks=masks)
        if self.classify:
            pooled = {m: masked_mean(hidden[m], masks[m]) for m in self.modalities}
            mod_logits = {m: self.head(pooled[m]) for m in self.modalities}
            log_p = torch.stack([torch.log_softmax(v / self.temperature, -1) for v in mod_logits.values()])
            log_avg = torch.logsumexp(log_p, 0) - torch.log(torch.tensor(2.0))
            out.pooled, out.modality_logits = pooled, mod_logits
            out.logits, out.probs = log_avg, log_avg.exp()
        return out


def _make_batch(lengths_a=(5, 3, 4), lengths_t=(4, 2, 3), in_dim=6, teacher_dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"ids": [f"utt{i}" for i in range(len(lengths_a))], "teacher": {}}
    for m, lens in (("audio", lengths_a), ("text", lengths_t)):
        b, t = len(lens), max(lens)
        mask = torch.arange(t)[None] < torch.tensor(lens)[:, None]
        batch[m] = {"x": torch.randn(b, t, in_dim, generator=g), "mask": mask}
        batch["teacher"][m] = torch.randn(b, t, teacher_dim, generator=g)
        batch["teacher"][f"{m}_mask"] = mask.clone()
    batch["labels"] = torch.arange(len(lengths_a)) % 4
    return batch


@pytest.fixture
def make_batch():
    """Factory of batches: per-modality inputs {"x", "mask"}, cached teacher states with masks, labels."""
    return _make_batch


@pytest.fixture
def fake_student():
    """The FakeStudent class."""
    return FakeStudent


@pytest.fixture
def student():
    torch.manual_seed(0)
    return FakeStudent()
