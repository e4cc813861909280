import math

import pytest
import torch

from emofuse.losses import prob_average_ce
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.tasks.base import TaskError
from emofuse.tasks.classification import ClassificationTask


class ProbsOnly(EmotionModel):
    def forward(self, batch):
        return ModelOutput(probs=batch["p"])


def test_prob_average_ce_task_matches_hand_computation(make_batch, fake_student):
    torch.manual_seed(0)
    model = fake_student(classify=True, temperature=0.5)
    task = ClassificationTask(model)
    batch = make_batch()
    out = task(batch)
    assert set(out) == {"loss", "logits", "probs", "labels"}
    mo = model(batch)
    p = sum(torch.softmax(mo.modality_logits[m] / 0.5, -1) for m in ("audio", "text")) / 2
    expected = -sum(math.log(p[i, y].item()) for i, y in enumerate(batch["labels"].tolist())) / 3
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(out["probs"], p, atol=1e-6)
    assert not out["probs"].requires_grad and not out["logits"].requires_grad
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert task.stage == "finetune" and task.monitor == "val/loss" and task.monitor_mode == "min"


def test_small_temperature_keeps_gradient(make_batch, fake_student):
    torch.manual_seed(0)
    model = fake_student(classify=True, temperature=0.001)
    out = ClassificationTask(model)(make_batch())
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.head[0].weight.grad.abs().sum() > 0


def test_probs_only_model_and_ce():
    p = torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.15, 0.15, 0.175, 0.525]])
    labels = torch.tensor([0, 3])
    out = ClassificationTask(ProbsOnly())({"p": p, "labels": labels})
    assert out["loss"].item() == pytest.approx(-(math.log(0.6) + math.log(0.525)) / 2, rel=1e-6)
    assert torch.allclose(out["logits"].exp(), p)
    with pytest.raises(TaskError, match="needs logits"):
        ClassificationTask(ProbsOnly(), loss="ce")({"p": p, "labels": labels})


def test_ce_equals_prob_average_ce_under_the_contract(make_batch, fake_student):
    torch.manual_seed(1)
    model = fake_student(classify=True, temperature=0.5)
    batch = make_batch()
    a = ClassificationTask(model, loss="prob_average_ce")(batch)["loss"]
    b = ClassificationTask(model, loss="ce")(batch)["loss"]
    c = prob_average_ce(model(batch).probs, batch["labels"])
    assert a.item() == pytest.approx(b.item(), rel=1e-5) and a.item() == pytest.approx(c.item(), rel=1e-5)


def test_class_weights_ignore_index_and_errors():
    p = torch.softmax(torch.randn(4, 3), -1)
    labels = torch.tensor([0, 1, -100, 2])
    task = ClassificationTask(ProbsOnly(), class_weights=[1.0, 2.0, 3.0])
    assert task.class_weights.tolist() == [1.0, 2.0, 3.0]
    got = task({"p": p, "labels": labels})["loss"]
    w = torch.tensor([1.0, 2.0, 3.0])
    keep = labels != -100
    expected = (-(p[keep].log().gather(1, labels[keep, None]).squeeze(1)) * w[labels[keep]]).sum() / w[
        labels[keep]
    ].sum()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(TaskError, match="labels"):
        task({"p": p})
    with pytest.raises(TaskError, match="class_weights has 3 entries for 4 classes"):
        task({"p": torch.softmax(torch.randn(4, 4), -1), "labels": labels})
    with pytest.raises(ValueError, match="loss"):
        ClassificationTask(ProbsOnly(), loss="focal")


def test_predict_returns_model_output(make_batch, fake_student):
    torch.manual_seed(0)
    model = fake_student(classify=True)
    out = ClassificationTask(model).predict(make_batch())
    assert isinstance(out, ModelOutput) and out.probs.shape == (3, 4)


class Saturated(EmotionModel):
    """Like the CMD student: probs = mean softmax(l/kappa), logits = log(clamp(probs)) (no gradient at 0)."""

    temperature = 0.01

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, batch):
        mod = {"audio": self.scale * batch["a"], "text": self.scale * batch["t"]}
        probs = torch.stack([(v / self.temperature).softmax(-1) for v in mod.values()]).mean(0)
        logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        return ModelOutput(logits=logits, probs=probs, modality_logits=mod)


def test_saturated_softmax_uses_modality_logits():
    model = Saturated()
    wrong = torch.tensor([[2.0, 0.0]])  # both modalities confidently predict class 0; the label is 1
    batch = {"a": wrong, "t": wrong, "labels": torch.tensor([1])}
    assert model(batch).probs[0, 1] == 0.0  # float32 underflow
    out = ClassificationTask(model)(batch)
    assert out["loss"].item() == pytest.approx(200.0, rel=1e-4)  # exact: (2 - 0) / 0.01
    out["loss"].backward()
    assert model.scale.grad.item() > 0


class Mismatch(Saturated):
    temperature = 1.0  # but probs are computed at 0.5: modality_logits do not reproduce probs

    def forward(self, batch):
        mod = {"audio": batch["a"], "text": batch["t"]}
        probs = torch.stack([(v / 0.5).softmax(-1) for v in mod.values()]).mean(0)
        return ModelOutput(probs=probs, modality_logits=mod)


def test_inconsistent_modality_logits_fall_back_to_probs():
    a, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.5]])
    out = ClassificationTask(Mismatch())({"a": a, "t": t, "labels": torch.tensor([1])})
    p = ((a / 0.5).softmax(-1) + (t / 0.5).softmax(-1)) / 2
    assert out["loss"].item() == pytest.approx(-math.log(p[0, 1].item()), rel=1e-6)


def test_l2_penalty_is_half_lambda_times_squared_weight_matrices_only():
    from emofuse.models import create_model

    model = create_model("probe", modality="audio", input_dim=3, num_classes=2)
    feats = torch.randn(4, 2, 3)
    batch = {
        "features": {"audio": feats, "audio_mask": torch.ones(4, 2, dtype=torch.bool)},
        "labels": torch.tensor([0, 1, 1, 0]),
    }
    plain = ClassificationTask(model, loss="ce")(batch)["loss"]
    ridge = ClassificationTask(model, loss="ce", l2=0.5)(batch)["loss"]
    expected = plain + 0.5 * 0.5 * model.head.weight.pow(2).sum()  # the bias is not penalised
    assert torch.allclose(ridge, expected)
    with pytest.raises(ValueError, match="l2 must be"):
        ClassificationTask(model, loss="ce", l2=-1.0)
