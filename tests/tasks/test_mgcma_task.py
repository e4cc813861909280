"""MGCMA objective: L_DA + L_IA + L_CE from the model's extras, module-dependent parts, and a learning test."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from emofuse.config.schema import ExperimentConfig, StageConfig  # noqa: E402
from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.losses.alignment import distribution_contrastive_loss, instance_contrastive_loss  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models.base import EmotionModel, ModelOutput  # noqa: E402
from emofuse.tasks.base import TaskError  # noqa: E402
from emofuse.tasks.mgcma import MGCMATask  # noqa: E402

TINY = dict(audio_encoder="tiny-wav2vec2", text_encoder="tiny-bert", num_heads=2, tam_layers=2)


class FixedOutputs(EmotionModel):
    """Returns given logits and extras; ``order`` in its config like MGCMA."""

    def __init__(self, logits, extras, order=("dam", "tam", "iam"), dim=3):
        super().__init__()
        self.config = {"order": list(order)}
        self.dim = dim
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.logits, self.extras = logits, extras

    def forward(self, batch):
        ex = {
            k: {m: v * self.scale for m, v in d.items()} if isinstance(d, dict) else d for k, d in self.extras.items()
        }
        return ModelOutput(logits=self.logits * self.scale, probs=self.logits.softmax(-1), extras=ex)


def _extras(seed=0, n=4, d=3):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g)

    return {
        "dist_mu": {"audio": r(n, d), "text": r(n, d)},
        "dist_sigma": {"audio": r(n, d).exp(), "text": r(n, d).exp()},
        "iam": {"audio": r(n, d), "text": r(n, d)},
    }


def test_total_is_the_sum_of_the_three_losses():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 3])
    ex = _extras()
    out = MGCMATask(FixedOutputs(logits, ex))({"labels": labels})
    ce = F.cross_entropy(logits, labels)
    da = distribution_contrastive_loss(
        ex["dist_mu"]["audio"], ex["dist_sigma"]["audio"], ex["dist_mu"]["text"], ex["dist_sigma"]["text"]
    )
    ia = instance_contrastive_loss(ex["iam"]["audio"], ex["iam"]["text"])
    assert float(out["ce"]) == pytest.approx(float(ce), rel=1e-6)
    assert float(out["da"]) == pytest.approx(float(da), rel=1e-6)
    assert float(out["ia"]) == pytest.approx(float(ia), rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(float(ce + da + ia), rel=1e-6)
    assert out["logits"].shape == (4, 4) and not out["logits"].requires_grad
    assert torch.equal(out["labels"], labels)


def test_weights_and_missing_modules():
    logits, labels = torch.zeros(4, 4), torch.tensor([0, 1, 2, 3])
    ex = _extras()
    no_dam = {k: v for k, v in ex.items() if k != "iam"} | {"iam": ex["iam"]}
    del no_dam["dist_mu"], no_dam["dist_sigma"]
    out = MGCMATask(FixedOutputs(logits, no_dam, order=("tam", "iam")))({"labels": labels})  # S1: w/o DAM
    assert "da" not in out and "ia" in out
    assert float(out["loss"].detach()) == pytest.approx(float(out["ce"] + out["ia"]), rel=1e-6)
    out = MGCMATask(FixedOutputs(logits, {}, order=()))({"labels": labels})  # S4: CE only
    assert set(out) == {"loss", "ce", "logits", "probs", "labels"}
    assert float(out["loss"].detach()) == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=1e-6)
    weighted = MGCMATask(FixedOutputs(logits, ex), da_weight=0.5, ia_weight=0.0, ce_weight=2.0)({"labels": labels})
    assert float(weighted["loss"].detach()) == pytest.approx(float(2 * weighted["ce"] + 0.5 * weighted["da"]), rel=1e-6)


def test_errors_name_the_cause():
    model = FixedOutputs(torch.zeros(4, 4), {"iam": {"audio": torch.zeros(4, 3)}}, order=("iam",))
    with pytest.raises(TaskError, match="labels"):
        MGCMATask(model)({})
    with pytest.raises(TaskError, match=r"extras\['iam'\] lacks modality \['text'\]"):
        MGCMATask(model)({"labels": torch.zeros(4, dtype=torch.long)})
    with pytest.raises(ValueError, match="da_weight"):
        MGCMATask(model, da_weight=-1)


def test_projection_head_and_learned_settings_get_gradients():
    task = MGCMATask(FixedOutputs(torch.zeros(4, 4), _extras()), iam_projection=True, learn_temperature=True)
    assert task.iam_proj is not None and task.iam_proj["audio"].in_features == 3
    task({"labels": torch.tensor([0, 1, 2, 3])})["loss"].backward()
    missing = [n for n, p in task.named_parameters() if p.grad is None]
    assert not missing
    assert task.config["temperature"] == 0.07 and task.config["p"] == 1 / 200 and task.config["q"] == 4.0


def test_components_build_the_task_by_name():
    from emofuse.training.components import DefaultComponents

    model = FixedOutputs(torch.zeros(4, 4), _extras())
    cfg = ExperimentConfig()
    stage = StageConfig(task="mgcma", task_options={"ia_weight": 0.5})
    task = DefaultComponents(progress=False).task(cfg, stage, model, ["a", "b", "c", "d"], None)
    assert isinstance(task, MGCMATask) and task.ia_weight == 0.5


@pytest.fixture(scope="module")
def encoders():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_encoder("tiny-wav2vec2"), create_encoder("tiny-bert")


def test_real_model_every_parameter_reached(encoders):
    torch.manual_seed(0)
    audio, text = encoders
    model = create_model("mgcma", **TINY)
    g = torch.Generator().manual_seed(0)
    batch = {
        "audio": audio.preprocess([0.1 * torch.randn(n, generator=g) for n in (5000, 7000, 6000)]),
        "text": text.preprocess(["good", "bad news", "fine"]),
        "labels": torch.tensor([1, 3, 0]),
    }
    out = MGCMATask(model)(batch)
    assert {"loss", "ce", "da", "ia"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]  # the sigma branch is reached through L_DA


# ---------------------------------------------------------------------------------- learning test

WORDS = {0: "calm plain", 1: "joy great", 2: "tears loss", 3: "rage furious"}
FREQ = {0: 150.0, 1: 300.0, 2: 100.0, 3: 450.0}


def _corpus(n_per_class, seed):
    """Sine-tone speech whose pitch depends on the class, transcripts with class words plus filler."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for c in range(4):
        for _ in range(n_per_class):
            n = int(torch.randint(4000, 8000, (1,), generator=g))
            t = torch.arange(n) / 16000
            f = FREQ[c] * (1 + 0.05 * torch.randn((), generator=g))
            wave = 0.3 * torch.sin(2 * torch.pi * f * t) + 0.05 * torch.randn(n, generator=g)
            filler = ["it is", "so", "well"][int(torch.randint(3, (1,), generator=g))]
            items.append((wave, f"{filler} {WORDS[c]}", c))
    order = torch.randperm(len(items), generator=g).tolist()
    return [items[i] for i in order]


def _batches(items, encoders, size):
    audio, text = encoders
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        yield {
            "audio": audio.preprocess([w for w, _, _ in chunk]),
            "text": text.preprocess([s for _, s, _ in chunk]),
            "labels": torch.tensor([c for _, _, c in chunk]),
        }


@pytest.mark.slow
def test_learns_a_synthetic_corpus(encoders):
    torch.manual_seed(0)
    train, test = _corpus(8, seed=1), _corpus(4, seed=2)
    task = MGCMATask(create_model("mgcma", **TINY))
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    train_batches = list(_batches(train, encoders, 4))  # the paper's batch size
    for _ in range(6):
        task.train()
        for batch in train_batches:
            opt.zero_grad()
            out = task(batch)
            out["loss"].backward()
            opt.step()
    task.eval()
    correct = 0
    with torch.no_grad():
        for batch in _batches(test, encoders, 8):
            correct += int((task(batch)["logits"].argmax(-1) == batch["labels"]).sum())
    accuracy = correct / len(test)
    assert accuracy >= 0.75, f"accuracy {accuracy:.2f} (chance 0.25)"
