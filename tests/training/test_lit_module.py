"""TaskModule: steps log every loss part, epoch metrics from predictions, optimisers and schedules."""

import math

import lightning as L
import pytest
import torch
from _train_fakes import CLASSES, FakeClassify, FakeDataset, FakeDistill, FakeModel

from emofuse.config.schema import DataConfig, OptimConfig
from emofuse.data.manifest import Utterance
from emofuse.data.protocols import Fold
from emofuse.training import FoldDataModule, TaskModule, build_optimizer, build_scheduler, lr_factor
from emofuse.training.lit_module import _gather, resolve_mode


def _records(n=24):
    return [Utterance(id=f"u{i:02d}", label=CLASSES[i % 3]) for i in range(n)]


def _datamodule(records, batch_size=4):
    ids = [r.id for r in records]
    fold = Fold("f", ids[:12], ids[12:18], ids[18:], speaker_dependent=True)
    data = DataConfig(max_batch_samples=None, batch_size=batch_size)
    return FoldDataModule(records, fold, lambda recs, split: FakeDataset(recs, CLASSES), data, seed=0)


def _trainer(**kw):
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        **kw,
    )


def test_fast_dev_run_logs_every_part_and_prediction_metrics():
    records = _records()
    module = TaskModule(FakeClassify(FakeModel(num_classes=3)), OptimConfig(lr=0.01), CLASSES)
    trainer = _trainer(fast_dev_run=True)
    dm = _datamodule(records)
    trainer.fit(module, datamodule=dm)
    logged = set(trainer.callback_metrics)
    assert {"train/loss", "train/ce", "val/loss", "val/ce"} <= logged
    assert {"val/wa", "val/ua", "val/macro_f1", "val/weighted_f1", "val/mult_f1"} <= logged
    trainer.test(module, datamodule=dm)
    assert {"test/loss", "test/ua", "test/mult_f1"} <= set(trainer.callback_metrics)
    preds = module.predictions["test"]
    assert preds["ids"] == sorted(preds["ids"]) and preds["probs"].shape[1] == 3


def test_distillation_task_without_predictions_logs_parts_only():
    module = TaskModule(FakeDistill(FakeModel(with_head=False)), OptimConfig(lr=0.01), CLASSES)
    trainer = _trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2)
    trainer.fit(module, datamodule=_datamodule(_records()))
    assert {"train/loss", "train/loss_audio", "val/loss", "val/loss_audio"} <= set(trainer.callback_metrics)
    assert "val/ua" not in trainer.callback_metrics and "val" not in module.predictions
    # the frozen buffer "teacher" is not a parameter; the projection head is trained with the student
    assert any(n.startswith("proj.") for n, _ in module.task.named_parameters())


def test_score_ignores_unlabelled_items():
    module = TaskModule(FakeClassify(FakeModel()), classes=CLASSES)
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    m = module.score({"ids": ["a", "b", "c"], "labels": torch.tensor([0, 1, -100]), "probs": probs})
    assert m["wa"] == 1.0 and m["macro_f1"] == pytest.approx(2 / 3)  # class 2 never occurs: F1 0
    assert module.score({"ids": [], "labels": None, "probs": probs}) == {}


def test_gather_deduplicates_repeated_ids_and_sorts():
    chunks = [
        (["b", "a"], torch.tensor([1, 0]), torch.tensor([[0.1, 0.9], [0.8, 0.2]])),
        (["b"], torch.tensor([1]), torch.tensor([[0.1, 0.9]])),  # a padded, repeated batch under DDP
    ]
    out = _gather(chunks)
    assert out["ids"] == ["a", "b"] and out["labels"].tolist() == [0, 1]
    assert out["probs"][0].tolist() == pytest.approx([0.8, 0.2])


def test_warmup_linear_is_cmds_schedule():
    f = lr_factor(OptimConfig(lr=1e-4, scheduler="warmup_linear", warmup_epochs=10, decay=0.9), 50)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)  # linear warm-up to the peak
    assert f(10) == pytest.approx(0.9) and f(11) == pytest.approx(0.81)  # then x0.9 per epoch
    assert f(49) == pytest.approx(0.9**40)


def test_warmup_cosine_reaches_min_lr_at_the_last_epoch():
    f = lr_factor(OptimConfig(lr=1e-3, min_lr=1e-5, scheduler="warmup_cosine", warmup_epochs=2), 12)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1.0) and f(11) == pytest.approx(0.01)
    assert all(f(e) >= f(e + 1) for e in range(2, 11))


def test_scheduler_steps_the_optimizer_lr():
    p = [torch.nn.Parameter(torch.zeros(1))]
    cfg = OptimConfig(lr=1.0, scheduler="warmup_linear", warmup_epochs=2, decay=0.5)
    opt = build_optimizer(p, cfg)
    sched = build_scheduler(opt, cfg, 10, "val/loss", "auto")["scheduler"]
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 0.5, 0.25])
    plateau = build_scheduler(opt, OptimConfig(scheduler="plateau"), 10, "val/ua", "auto")
    assert plateau["monitor"] == "val/ua" and plateau["scheduler"].mode == "max"
    assert build_scheduler(opt, OptimConfig(), 10, "val/loss", "auto") is None


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizers(name, cls):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimConfig(name=name, lr=0.1, weight_decay=0.01))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1


def test_no_trainable_parameters_is_an_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([], OptimConfig())


def test_resolve_mode():
    assert resolve_mode("val/loss") == "min" and resolve_mode("val/macro_f1") == "max"
    assert resolve_mode("val/loss", "max") == "max" and resolve_mode("train/loss_audio") == "min"
    assert not math.isnan(lr_factor(OptimConfig(), 3)(2))


def test_encoder_learning_rates_decay_per_block_below_the_top():
    """Tiny BERT (embeddings = depth 0, 2 blocks): head 1e-2; block 2 1e-4; block 1 1e-4 * 0.5; embeddings * 0.25."""
    from emofuse.models import create_model
    from emofuse.tasks.classification import ClassificationTask
    from emofuse.training.lit_module import parameter_groups

    model = create_model("finetuned_encoder", encoder="tiny-bert", layer="weighted", num_classes=3)
    task = ClassificationTask(model, loss="ce")
    optim = OptimConfig(name="adamw", lr=1e-2, encoder_lr=1e-4, layer_decay=0.5)
    groups = parameter_groups(task, optim)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    expected = {"embeddings": 1e-4 * 0.25, "layer.0.": 1e-4 * 0.5, "layer.1.": 1e-4}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in lr_of
            continue
        if name.startswith("head") or name == "encoder.selector.weights":  # the layer weighting trains with the head
            want = 1e-2
        else:
            want = next(v for k, v in expected.items() if k in name)
        assert math.isclose(lr_of[id(p)], want), (name, lr_of[id(p)], want)
    assert groups[0]["lr"] == 1e-2  # the head's group first: the logged lr
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    opt = build_optimizer(groups, optim)
    assert sorted(g["lr"] for g in opt.param_groups) == sorted([1e-2, 1e-4, 5e-5, 2.5e-5])
    # without encoder_lr / layer_decay: one group, every parameter at lr (unchanged behaviour)
    assert isinstance(parameter_groups(task, OptimConfig(lr=1e-3))[0], torch.nn.Parameter)


def test_encoder_lr_for_a_model_without_an_encoder_is_an_error():
    from emofuse.training.lit_module import parameter_groups

    task = FakeClassify(FakeModel())
    with pytest.raises(ValueError, match="declares no encoder layers"):
        parameter_groups(task, OptimConfig(encoder_lr=1e-5))


def test_lbfgs_optimizer_for_convex_probes():
    import pytest
    import torch

    from emofuse.config.schema import OptimConfig
    from emofuse.training.lit_module import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(params, OptimConfig(name="lbfgs", lr=1.0))
    assert isinstance(opt, torch.optim.LBFGS) and opt.defaults["line_search_fn"] == "strong_wolfe"
    with pytest.raises(ValueError, match="no weight_decay"):
        build_optimizer(params, OptimConfig(name="lbfgs", weight_decay=0.1))
    with pytest.raises(ValueError, match="one learning rate"):
        build_optimizer([{"params": params, "lr": 1.0}], OptimConfig(name="lbfgs"))
