"""SEW / SeqSEW models and tasks (Rajan thesis Ch. 5): unimodal testing, freezing, losses by hand, learning."""

import pytest
import torch
from torch.nn import functional as F

from emofuse.layers.alignment import resample_steps
from emofuse.layers.pooling import masked_mean
from emofuse.losses.dcca import dcca_correlation
from emofuse.models import create_model
from emofuse.models.sew import SEW, SeqSEW, mlp
from emofuse.tasks import SeqSEWTask, SEWTask, TaskError


def _batch(b=6, t_w=5, t_s=5, d_w=8, d_s=12, seed=0, aligned=True):
    g = torch.Generator().manual_seed(seed)
    mask_w = torch.arange(t_w)[None] < torch.randint(2, t_w + 1, (b,), generator=g)[:, None]
    mask_s = mask_w.clone() if aligned else torch.ones(b, t_s, dtype=torch.bool)
    feats = {
        "audio": torch.randn(b, t_w, d_w, generator=g),
        "audio_mask": mask_w,
        "text": torch.randn(b, t_s, d_s, generator=g),
        "text_mask": mask_s,
    }
    return {"features": feats, "targets": torch.rand(b, generator=g) * 2 - 1}


def test_sew_layout_matches_the_thesis_table():
    enc = mlp([632, 512, 256, 128])
    assert [type(m).__name__ for m in enc] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    m = SEW(weak="video", strong="audio", weak_dim=632, strong_dim=88, weak_hidden=(512, 256), strong_hidden=(108,))
    assert [lay.out_features for lay in m.weak_encoder if isinstance(lay, torch.nn.Linear)] == [512, 256, 128]
    assert [lay.out_features for lay in m.strong_decoder if isinstance(lay, torch.nn.Linear)] == [108, 88]
    assert m.regressor.num_layers == 4 and m.regressor.hidden_size == 120


def test_sew_predicts_from_the_weaker_modality_only():
    model = create_model("sew", weak_dim=8, strong_dim=12, weak_hidden=(6,), strong_hidden=(10,), latent=4).eval()
    batch = _batch()
    full = model(batch)
    alone = model({"features": {k: v for k, v in batch["features"].items() if k.startswith("audio")}})
    assert torch.equal(full.values, alone.values) and "m_ss" not in alone.extras
    assert full.values.shape == (6, 1) and full.extras["reconstruction"].shape == (6, 12)


def test_sew_task_is_the_sum_of_its_terms_and_skips_absent_rows():
    torch.manual_seed(0)
    model = SEW(weak_dim=8, strong_dim=12, weak_hidden=(6,), strong_hidden=(10,), latent=4)
    batch = _batch()
    batch["present"] = {"text": torch.tensor([True, True, True, True, False, True])}
    out = SEWTask(model, k=3)(batch)
    ex = model(batch).extras
    rows = batch["present"]["text"]
    xs = masked_mean(batch["features"]["text"], batch["features"]["text_mask"])[rows]
    pred = F.mse_loss(model(batch).values[:, 0], batch["targets"])
    tr = F.mse_loss(ex["translation"][rows], xs)
    ae = F.mse_loss(ex["reconstruction"][rows], xs)
    corr = dcca_correlation(ex["m_ss"][rows], ex["m_sw"][rows], k=3)
    assert float(out["loss"]) == pytest.approx(float(pred + tr + ae - corr), rel=1e-5)
    assert float(out["corr"]) == pytest.approx(float(corr), rel=1e-5)
    ablated = SEWTask(model, alpha=0.0, gamma=0.0)(batch)  # Table 5.2: -(CCA & S_D1)
    assert "corr" not in ablated and float(ablated["loss"]) == pytest.approx(float(pred + ae), rel=1e-5)


def test_seqsew_phases_freeze_the_other_branch():
    kw = dict(weak_dim=8, strong_dim=12, dim=8, ffn_dim=16, head_hidden=8, decoder_units=6)
    teacher = SeqSEW(phase="teacher", **kw)
    assert not any(p.requires_grad for p in teacher.student.parameters())
    assert all(p.requires_grad for p in teacher.teacher.parameters())
    student = SeqSEW(phase="student", **kw)
    student.load_state_dict(teacher.state_dict())  # stage 2 starts from stage 1 (init: previous)
    student.train()
    assert not student.teacher.training and student.student.training
    assert not any(p.requires_grad for p in student.teacher.parameters())
    student.eval()
    batch = _batch(aligned=False, t_s=7)
    with torch.no_grad():
        full = student(batch)
        alone = student({"features": {k: v for k, v in batch["features"].items() if k.startswith("audio")}})
    assert torch.allclose(full.values, alone.values)  # multimodal-trained, unimodal-tested
    assert full.extras["m_ss"].shape == (6, 7, 8) and full.extras["translation"].shape == (6, 5, 12)
    teacher.eval()
    with torch.no_grad():  # the teacher phase reads the stronger modality only
        text_only = {"features": {k: v for k, v in batch["features"].items() if k.startswith("text")}}
        assert torch.allclose(teacher(batch).values, teacher(text_only).values)


def test_seqsew_task_aligned_and_pooled_terms():
    torch.manual_seed(0)
    kw = dict(weak_dim=8, strong_dim=12, dim=8, ffn_dim=16, head_hidden=8, decoder_units=6, dropout=0.0)
    model = SeqSEW(phase="student", head_dropout=0.0, **kw).eval()
    batch = _batch()
    out = SeqSEWTask(model, alpha=0.5, beta=0.2)(batch)
    ex = model(batch).extras
    valid = ex["mask_w"]
    mae = F.l1_loss(ex["translation"][valid], batch["features"]["text"][valid])
    corr = dcca_correlation(ex["m_ss"][valid], ex["m_sw"][valid])
    pred = F.mse_loss(model(batch).values[:, 0], batch["targets"])
    assert float(out["loss"]) == pytest.approx(float(pred + 0.2 * mae - 0.5 * corr), rel=1e-4)
    unaligned = _batch(aligned=False, t_s=7)
    pooled = SeqSEWTask(model)(unaligned)  # audio frames vs text tokens: time-averaged terms
    assert torch.isfinite(pooled["loss"]) and "corr" in pooled
    with pytest.raises(TaskError, match="step-aligned"):
        SeqSEWTask(model, align="steps")(unaligned)
    resampled = SeqSEWTask(model, alpha=0.5, beta=0.2, align="resample")(unaligned)  # teacher on student steps
    ex = model(unaligned).extras
    valid = ex["mask_w"]
    x_s = resample_steps(unaligned["features"]["text"], ex["mask_s"], valid)
    mae = F.l1_loss(ex["translation"][valid], x_s[valid])
    corr = dcca_correlation(resample_steps(ex["m_ss"], ex["mask_s"], valid)[valid], ex["m_sw"][valid])
    pred = F.mse_loss(model(unaligned).values[:, 0], unaligned["targets"])
    assert float(resampled["loss"]) == pytest.approx(float(pred + 0.2 * mae - 0.5 * corr), rel=1e-4)
    assert valid.sum() > unaligned["targets"].numel()  # one DCCA row per student step, not per utterance
    with pytest.raises(TaskError, match="phase='student'"):
        SeqSEWTask(SeqSEW(phase="teacher", **kw))


@pytest.mark.slow
def test_sew_learns_a_target_carried_by_the_weak_modality():
    torch.manual_seed(0)
    n = 128
    z = torch.randn(n, 2)
    weak = torch.cat([z, torch.randn(n, 4)], 1) + 0.3 * torch.randn(n, 6)
    strong = torch.cat([z, torch.randn(n, 6)], 1)
    y = torch.tanh(z[:, 0] - 0.5 * z[:, 1])
    batch = {"features": {"audio": weak[:, None], "text": strong[:, None]}, "targets": y}
    model = SEW(weak_dim=6, strong_dim=8, weak_hidden=(16,), strong_hidden=(16,), latent=8, regressor_hidden=16)
    task = SEWTask(model, k=2)
    opt = torch.optim.Adam(task.parameters(), lr=0.03)
    for _ in range(50):
        opt.zero_grad()
        out = task(batch)
        out["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model({"features": {"audio": weak[:, None]}}).values[:, 0]
    assert float(torch.corrcoef(torch.stack([pred, y]))[0, 1]) > 0.9


def _dialogues(b=3, n=4, d_w=5, d_s=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(n)[None] < torch.tensor([n, 2, 3][:b])[:, None]  # (B, N) utterances per dialogue
    feats = {"audio": torch.randn(b, n, d_w, generator=g), "text": torch.randn(b, n, d_s, generator=g)}
    feats.update(audio_mask=mask, text_mask=mask)
    return {
        "features": feats,
        "dialogue_mask": mask,
        "targets": (torch.rand(int(mask.sum()), generator=g) > 0.5).float(),
    }


def test_dialogue_level_seqsew_predicts_every_utterance_and_aligns_per_utterance():
    torch.manual_seed(0)
    kw = dict(weak_dim=5, strong_dim=7, dim=8, ffn_dim=16, head_hidden=8, decoder_units=6, dropout=0.0)
    batch = _dialogues()
    mask = batch["dialogue_mask"]
    student = SeqSEW(phase="student", sequence="dialogue", activation="sigmoid", head_dropout=0.0, **kw).eval()
    assert student.dialogue_level and not SeqSEW(**kw).dialogue_level
    out = student(batch)
    assert out.values.shape == (int(mask.sum()), 1)  # (U, 1): one sigmoid output per valid utterance
    assert torch.equal(out.values, out.extras["step_values"][mask])
    assert ((out.values > 0) & (out.values < 1)).all()
    res = SeqSEWTask(student, alpha=0.5, beta=0.2, loss="bce", threshold=0.5)(batch)  # auto: steps (shared mask)
    ex = out.extras
    bce = F.binary_cross_entropy(out.values[:, 0], batch["targets"])
    mae = F.l1_loss(ex["translation"][mask], batch["features"]["text"][mask])
    corr = dcca_correlation(ex["m_ss"][mask], ex["m_sw"][mask])
    assert float(res["loss"]) == pytest.approx(float(bce + 0.2 * mae - 0.5 * corr), rel=1e-4)
    uni = create_model("seqsew_unimodal", modality="audio", input_dim=5, sequence="dialogue", dim=8, ffn_dim=16)
    assert uni.dialogue_level and uni.eval()(batch).values.shape == (int(mask.sum()), 1)
    with pytest.raises(ValueError, match="sequence must be one of"):
        SeqSEW(sequence="video", **kw)


def test_seq_branch_without_gru_or_transformer_is_the_plain_classifier():
    from emofuse.models.sew import SeqBranch

    classifier = SeqBranch(73, gru_layers=0, num_layers=0)
    assert classifier.gru is None and len(classifier.blocks) == 0
    assert sum(p.numel() for p in classifier.parameters()) == (73 * 100 + 100) + (100 * 300 + 300) + (300 + 1)
    m, steps, pooled = classifier(torch.randn(2, 4, 73), torch.ones(2, 4, dtype=torch.bool))
    assert m.shape == (2, 4, 100) and steps.shape == (2, 4, 1) and pooled.shape == (2, 1)
    with pytest.raises(ValueError, match=">= 0"):
        SeqBranch(73, gru_layers=-1)


def test_bce_prediction_loss_needs_binary_targets():
    from emofuse.tasks.regression import RegressionTask

    model = SeqSEW(phase="student", weak_dim=5, strong_dim=7, dim=8, ffn_dim=16, activation="sigmoid")
    task = RegressionTask(model, loss="bce", threshold=0.5)
    p, t = torch.tensor([[0.9], [0.2]]), torch.tensor([[1.0], [0.0]])
    assert float(task.prediction_loss(p, t)) == pytest.approx(
        -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.8))).item() / 2
    )
    with pytest.raises(TaskError, match="0/1 targets"):
        task.prediction_loss(p, torch.tensor([[0.5], [1.0]]))


def test_student_starts_from_the_unimodal_baselines_weights_under_one_seed():
    kw = dict(dim=8, ffn_dim=16, head_hidden=8)
    torch.manual_seed(3)
    sew = SeqSEW(weak="audio", strong="text", weak_dim=5, strong_dim=7, weak_gru_layers=1, decoder_units=4, **kw)
    torch.manual_seed(3)
    uni = create_model("seqsew_unimodal", modality="audio", input_dim=5, gru_layers=1, **kw)
    a, b = sew.student.state_dict(), uni.branch.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
