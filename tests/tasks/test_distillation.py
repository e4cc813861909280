import pytest
import torch

from emofuse.encoders.base import Encoder, EncoderOutput, Provenance
from emofuse.losses import nt_xent_flat, nt_xent_per_step
from emofuse.tasks.base import TaskError
from emofuse.tasks.distillation import DistillationTask

DIMS = {"audio": 12, "text": 12}


def test_loss_is_sum_of_per_modality_nt_xent(student, make_batch):
    task = DistillationTask(student, DIMS, proj_dim=5, temperature=0.1, student_dims=8)
    batch = make_batch()
    out = task(batch)
    assert set(out) == {"loss", "loss_audio", "loss_text"}
    assert out["loss"].item() == pytest.approx(out["loss_audio"].item() + out["loss_text"].item(), rel=1e-6)
    hidden = student(batch).hidden
    for m in ("audio", "text"):
        z_t = task.teacher_proj[m](batch["teacher"][m])
        z_s = task.student_proj[m](hidden[m])
        expected = nt_xent_per_step(z_t, z_s, batch["teacher"][f"{m}_mask"], 0.1)
        assert out[f"loss_{m}"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_flat_switch(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8, time_axis="flat", temperature=0.05)
    batch = make_batch()
    out = task(batch)
    m = "audio"
    z_t = task.teacher_proj[m](batch["teacher"][m])
    z_s = task.student_proj[m](student(batch).hidden[m])
    assert out["loss_audio"].item() == pytest.approx(
        nt_xent_flat(z_t, z_s, batch["teacher"]["audio_mask"], 0.05).item(), rel=1e-5
    )


def test_gradients_reach_student_and_all_four_heads(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8)
    batch = make_batch()
    task(batch)["loss"].backward()
    assert len(task.teacher_proj) == 2 and len(task.student_proj) == 2
    assert task.teacher_proj["audio"].weight.shape == (32, 12)
    assert task.student_proj["text"].weight.shape == (32, 8)
    for name, p in task.named_parameters():
        if name.startswith("model.head."):  # the stage-2 classifier is unused in stage 1
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_reduces_loss(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8, temperature=0.1)
    batch = make_batch(lengths_a=(6, 6, 5, 4, 6), lengths_t=(3, 4, 4, 2, 4))
    opt = torch.optim.Adam(task.parameters(), lr=1e-2)
    first = task(batch)["loss"].item()
    for _ in range(40):
        opt.zero_grad()
        loss = task(batch)["loss"]
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_padded_teacher_longer_than_student_is_cropped(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8)
    batch = make_batch(seed=1)
    ref = task(batch)["loss"]
    for m in ("audio", "text"):  # same valid values, 3 more padded (garbage) steps
        t, mask = batch["teacher"][m], batch["teacher"][f"{m}_mask"]
        batch["teacher"][m] = torch.cat([t, 100 * torch.randn(t.shape[0], 3, t.shape[2])], 1)
        batch["teacher"][f"{m}_mask"] = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=torch.bool)], 1)
    padded = batch
    assert task(padded)["loss"].item() == pytest.approx(ref.item(), rel=1e-6)


def test_misaligned_lengths_raise_naming_modality_and_lengths(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8)
    batch = make_batch()
    batch["teacher"]["text_mask"][1, 2] = True  # teacher says utt1 has 3 tokens, student 2
    with pytest.raises(TaskError, match=r"text: .*'utt1': teacher 3 vs student 2"):
        task(batch)
    batch = make_batch()
    del batch["teacher"]["audio_mask"]
    batch["teacher"]["audio"] = batch["teacher"]["audio"][:, :4]  # no mask: every sample has 4 frames
    with pytest.raises(TaskError, match="audio: teacher and student sequence lengths differ"):
        task(batch)


def test_missing_inputs_and_bad_config(student, make_batch):
    task = DistillationTask(student, DIMS, student_dims=8)
    batch = make_batch()
    del batch["teacher"]["text"]
    with pytest.raises(TaskError, match="no teacher states for modality 'text'"):
        task(batch)
    batch = make_batch()
    batch["teacher"]["audio"] = batch["teacher"]["audio"][..., :6]
    with pytest.raises(TaskError, match="teacher states have size 6"):
        task(batch)
    with pytest.raises(ValueError, match="teacher_dims"):
        DistillationTask(student, {"audio": 12}, modalities=("audio", "text"))
    with pytest.raises(ValueError, match="time_axis"):
        DistillationTask(student, DIMS, time_axis="mean")


def test_unimodal(student, make_batch):
    task = DistillationTask(student, {"audio": 12}, student_dims=8)
    out = task(make_batch())
    assert set(out) == {"loss", "loss_audio"} and task.stage == "distill" and task.monitor == "val/loss"


class LinearTeacher(Encoder):
    modality = "audio"

    def __init__(self, in_dim=6, dim=12):
        super().__init__("linear-teacher", dim, Provenance("linear-teacher", "random", "test"))
        self.proj = torch.nn.Linear(in_dim, dim)

    def preprocess(self, inputs):
        raise NotImplementedError

    def forward(self, x, mask):
        h = self.proj(x)
        return EncoderOutput(hidden=h, mask=mask, pooled=h.mean(1))


def test_online_teacher_is_frozen_and_not_checkpointed(student, make_batch, fake_student):
    teacher = LinearTeacher()
    task = DistillationTask(student, {"audio": 12}, student_dims=8, teachers={"audio": teacher})
    batch = make_batch()
    del batch["teacher"]
    out = task(batch)
    out["loss"].backward()
    assert teacher.proj.weight.grad is None and not teacher.proj.weight.requires_grad
    task.train()
    assert not teacher.training
    sd = task.state_dict()
    assert not any(k.startswith("teachers.") for k in sd) and "teacher_proj.audio.weight" in sd
    before = teacher.proj.weight.clone()
    task2 = DistillationTask(fake_student(), {"audio": 12}, student_dims=8, teachers={"audio": LinearTeacher()})
    task2.load_state_dict(sd)  # strict: teacher keys missing from the checkpoint are fine
    assert torch.equal(task2.model.enc["audio"].weight, task.model.enc["audio"].weight)
    assert torch.equal(teacher.proj.weight, before)
    # cached states take precedence over the encoder
    cached = make_batch()
    assert task(cached)["loss"].item() != pytest.approx(out["loss"].item())


def test_utterance_axis_contrasts_pooled_utterances_against_a_one_vector_teacher(student, make_batch):
    task = DistillationTask(student, {"audio": 6}, student_dims=8, time_axis="utterance", temperature=0.1)
    batch = make_batch()
    n = batch["teacher"]["audio"].shape[0]
    batch["teacher"] = {"audio": torch.randn(n, 1, 6)}  # one vector per utterance (e.g. per-layer statistics)
    out = task(batch)
    hidden, mask = student(batch).hidden["audio"], student(batch).masks["audio"]
    pooled = torch.stack([hidden[i][mask[i]].mean(0) for i in range(n)])  # by hand, valid steps only
    z_t = task.teacher_proj["audio"](batch["teacher"]["audio"][:, 0])
    z_s = task.student_proj["audio"](pooled)
    zt, zs = torch.nn.functional.normalize(z_t, dim=-1), torch.nn.functional.normalize(z_s, dim=-1)
    z = torch.cat([zt, zs])
    sim = (z @ z.T / 0.1).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    expected = torch.nn.functional.cross_entropy(sim, pos)
    assert out["loss_audio"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()
    assert task.teacher_proj["audio"].weight.grad is not None
    with pytest.raises(ValueError, match="'per_step', 'flat' or 'utterance'"):
        DistillationTask(student, DIMS, student_dims=8, time_axis="pooled")
