"""``optim.plateau_monitor``: the plateau scheduler can watch its own value (thesis Ch. 4: val loss vs val accuracy)."""

import torch

from emofuse.config.schema import OptimConfig
from emofuse.training.lit_module import build_scheduler


def test_plateau_watches_its_own_value():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    same = build_scheduler(opt, OptimConfig(scheduler="plateau"), 10, "val/wa", "max")
    assert same["monitor"] == "val/wa" and same["scheduler"].mode == "max"
    own = build_scheduler(opt, OptimConfig(scheduler="plateau", plateau_monitor="val/loss"), 10, "val/wa", "max")
    assert own["monitor"] == "val/loss" and own["scheduler"].mode == "min"
    # a fold without validation data selects on train/ values: the scheduler follows
    no_val = build_scheduler(opt, OptimConfig(scheduler="plateau", plateau_monitor="val/loss"), 10, "train/wa", "max")
    assert no_val["monitor"] == "train/loss"


def test_without_validation_a_metric_falls_back_to_the_training_loss():
    from emofuse.training.lit_module import no_validation_monitor

    assert no_validation_monitor("val/loss", "min") == ("train/loss", "min")
    assert no_validation_monitor("val/loss_audio", "auto") == ("train/loss_audio", "auto")
    assert no_validation_monitor("val/ua", "max") == ("train/loss", "min")  # not logged in training
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, OptimConfig(scheduler="plateau", plateau_monitor="val/ccc"), 10, "train/loss", "min")
    assert sched["monitor"] == "train/loss" and sched["scheduler"].mode == "min"
