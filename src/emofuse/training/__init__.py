"""Training engine on PyTorch Lightning: the only package that imports ``lightning`` (STYLE.md §2).

* :class:`TaskModule` wraps a :class:`~emofuse.tasks.base.Task` (steps, logging, metrics, optimiser, schedule);
* :class:`FoldDataModule` serves one fold with DDP-aware dynamic or fixed batches;
* :class:`SafetensorsCheckpoint` / :class:`CrashResume`: rebuildable best / last checkpoints and resume;
* :func:`run_experiment`: folds × seeds × stages into a resumable run folder with paper-format results;
* :func:`evaluate_run`: score a trained run on another manifest.
"""

from emofuse.training.callbacks import CrashResume, SafetensorsCheckpoint, TrainingInterrupted, make_loggers
from emofuse.training.components import Components, DefaultComponents
from emofuse.training.datamodule import FoldDataModule, make_loader
from emofuse.training.evaluate import evaluate_run, predict, score
from emofuse.training.lit_module import TaskModule, build_optimizer, build_scheduler, lr_factor
from emofuse.training.runner import RunDirError, config_differences, run_experiment

__all__ = [
    "Components",
    "CrashResume",
    "DefaultComponents",
    "FoldDataModule",
    "RunDirError",
    "SafetensorsCheckpoint",
    "TaskModule",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "config_differences",
    "evaluate_run",
    "lr_factor",
    "make_loader",
    "make_loggers",
    "predict",
    "run_experiment",
    "score",
]
