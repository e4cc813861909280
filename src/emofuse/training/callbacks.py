"""Training callbacks: safetensors checkpoints + curves, crash resume, early stopping, progress, loggers.

Every epoch :class:`SafetensorsCheckpoint` writes, into the stage folder and always atomically:

* ``last.safetensors``, and ``best.safetensors`` when the monitored value improved, plus ``model.json``
  (registered model name, model config, classes, encoder provenance, task settings): enough to
  rebuild the model without the YAML (:func:`emofuse.models.checkpoint.load_checkpoint`);
* ``last.ckpt``: Lightning's full state (optimiser, scheduler, loops, callbacks), for an exact resume;
* ``curves.csv``: one row per epoch (learning rate and every logged epoch value).

Ctrl-C during a fit asks :class:`SafetensorsCheckpoint` to stop at the next optimiser step: it writes
``last.ckpt`` there (with the position in the epoch and the epoch's running loss sums) and the run later resumes
at that step, the epoch's trained batches skipped; a second Ctrl-C stops at once.

:class:`CrashResume` passes ``last.ckpt`` to ``Trainer.fit`` when it exists, so a run killed
mid-way (SIGTERM, kill -9, a crash) continues from its last finished epoch, exactly: ``last.ckpt``
holds the optimiser, scheduler and loop state and the random generators' states at the end of that epoch
(restored at the first step after the resume), and the data order and loader seeds come from
``(seed, epoch)``, so an interrupted run ends with the metrics of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import signal
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from emofuse.models.base import EmotionModel
from emofuse.models.checkpoint import save_checkpoint
from emofuse.training.lit_module import resolve_mode
from emofuse.utils.io import atomic_write
from emofuse.utils.optional import MissingDependencyError, is_available

__all__ = [
    "CrashResume",
    "ResumeError",
    "SafetensorsCheckpoint",
    "TrainingInterrupted",
    "early_stopping",
    "make_loggers",
    "progress_bar",
    "rng_state",
    "set_rng_state",
    "task_model",
    "write_curves",
]

LAST_CKPT = "last.ckpt"


class ResumeError(ValueError):
    """A stage's ``last.ckpt`` cannot be resumed (truncated or foreign). Names the file and the ways forward."""


class TrainingInterrupted(RuntimeError):
    """Training stopped before it finished (Ctrl-C or a signal); ``last.ckpt`` lets it resume.

    Args:
        message: What stopped where, and how to resume.
        signal_name: ``SIGINT`` or ``SIGTERM`` (``None``: unknown).
    """

    def __init__(self, message: str, signal_name: str | None = None) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """The shell's code for the signal: 130 for SIGINT, 143 for SIGTERM (1 otherwise)."""
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.signal_name or "", 1)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global random generators, as plain types.

    Plain lists and tensors only, so a checkpoint holding them loads with ``torch.load(weights_only=True)``.
    """
    np_state = cast(tuple[Any, ...], np.random.get_state())
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [str(np_state[0]), np_state[1].tolist(), *(getattr(x, "item", lambda x=x: x)() for x in np_state[2:])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators :func:`rng_state` recorded (a CUDA state only where this machine has the devices)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def task_model(task: Any) -> EmotionModel:
    """The model a task trains (``task.model``)."""
    model = getattr(task, "model", None)
    if not isinstance(model, EmotionModel):
        raise TypeError(f"{type(task).__name__} has no .model EmotionModel to checkpoint")
    return model


def write_curves(path: str | Path, rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ("epoch", "lr")) -> None:
    """Write epoch rows as CSV atomically (columns: ``first``, then the rest sorted)."""
    keys: list[str] = [k for k in first if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in keys})
    atomic_write(path, buf.getvalue())


class SafetensorsCheckpoint(Checkpoint):
    """Best / last safetensors checkpoints, ``last.ckpt`` and ``curves.csv`` for one stage.

    Args:
        dirpath: The stage folder.
        monitor: Logged value to select the best epoch on (e.g. ``val/loss``).
        mode: ``min``, ``max`` or ``auto``.
        meta: Static fields for ``model.json`` (classes, encoders, task, stage).
        get_model: Returns the model to save from the LightningModule (default: ``module.task.model``).
        save_ckpt: Also write Lightning's ``last.ckpt`` (exact resume).
        every_n_steps: Also write ``last.ckpt`` every this many optimiser steps within an epoch (``None``: no).
    """

    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = "val/loss",
        mode: str = "auto",
        meta: Mapping[str, Any] | None = None,
        get_model: Callable[[L.LightningModule], EmotionModel] | None = None,
        save_ckpt: bool = True,
        every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.meta = dict(meta or {})
        self.get_model = get_model or (lambda module: task_model(module.task))
        self.save_ckpt = save_ckpt
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self._lr: float | None = None
        self._rng: dict[str, Any] | None = None  # from last.ckpt: applied at the first step after a resume
        self._position: tuple[int, int] | None = None  # (epoch, batches done) of a checkpoint written mid-epoch
        self._stop = False
        #: The global step ``last.ckpt`` was written at after a stop request mid-epoch (``None``: not stopped so).
        self.saved_at_step: int | None = None

    @property
    def state_key(self) -> str:  # noqa: D102
        return f"SafetensorsCheckpoint[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        """What ``last.ckpt`` keeps of this callback: best score and epoch, curves, learning rate, RNG states.

        Also the position in the epoch of a checkpoint written mid-epoch (``None`` at an epoch's end).
        """
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "lr": self._lr,
            "position": list(self._position) if self._position else None,
            "rng": rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the bookkeeping; the random generators and the data position are restored when training starts."""
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")
        self.history = list(state_dict.get("history", []))
        self._lr = state_dict.get("lr")
        position = state_dict.get("position")
        self._position = (int(position[0]), int(position[1])) if position else None
        self._rng = state_dict.get("rng")

    def request_stop(self) -> None:
        """Stop at the next step boundary, after writing ``last.ckpt`` there (what Ctrl-C asks for)."""
        self._stop = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A checkpoint written mid-epoch: the data module skips the batches that epoch already trained on."""
        resume_at = getattr(getattr(trainer, "datamodule", None), "resume_at", None)
        if self._position is not None and resume_at is not None:
            resume_at(*self._position)
        self._position = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        """On the first step after a resume, put the random generators where the interrupted run had them."""
        if self._rng is not None:
            set_rng_state(self._rng)
            self._rng = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Write ``last.ckpt`` at this step every ``every_n_steps`` steps, or after a stop request (then stop).

        The epoch's last step is saved by the epoch end instead.
        """
        if (idx + 1) % trainer.accumulate_grad_batches:  # mid-accumulation: stop after the optimiser step
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # the epoch's end saves
        stop = trainer.strategy.reduce_boolean_decision(self._stop, all=False)  # every rank stops at the same step
        due = bool(self.every_n_steps) and trainer.global_step % int(self.every_n_steps or 1) == 0
        if (stop or due) and self.save_ckpt:
            progress = cast(Any, trainer.fit_loop.epoch_loop.batch_progress.current)
            self._position = (trainer.current_epoch, int(progress.processed))
            self._save_ckpt(trainer)
            self._position = None
            self.saved_at_step = trainer.global_step if stop else None
        if stop:
            raise KeyboardInterrupt

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        """A stop request during validation stops now; the stage resumes from its last finished epoch."""
        if not trainer.sanity_checking and trainer.strategy.reduce_boolean_decision(self._stop, all=False):
            raise KeyboardInterrupt

    def _save_ckpt(self, trainer: L.Trainer) -> None:
        tmp = self.dirpath / f".{LAST_CKPT}.tmp"
        self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)  # every rank calls it; the strategy writes on rank 0
        if trainer.is_global_zero:
            os.replace(tmp, self.dirpath / LAST_CKPT)

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_score is None:
            return True
        return value < self.best_score if self.mode == "min" else value > self.best_score

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Note the learning rate this epoch trains with (epoch schedulers step before the epoch ends)."""
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch's row, then save the checkpoints (rank 0 writes; all ranks wait)."""
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        epoch = trainer.current_epoch
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        row: dict[str, Any] = {"epoch": epoch}
        if self._lr is not None:
            row["lr"] = self._lr
        row.update(metrics)
        self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
        if self.monitor not in metrics:
            raise ValueError(
                f"checkpoint monitor {self.monitor!r} was not logged in epoch {epoch}; logged values: "
                f"{', '.join(sorted(metrics)) or 'none'} (set trainer.monitor to one of them)"
            )
        value = metrics[self.monitor]
        improved = self._improved(value)
        if improved:
            self.best_score, self.best_epoch = value, epoch
        self.dirpath.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            model = self.get_model(pl_module)
            info = {**self.meta, "monitor": self.monitor, "global_step": trainer.global_step}
            save_checkpoint(model, self.dirpath / "last.safetensors", {**info, "epoch": epoch, "score": value})
            if improved:
                save_checkpoint(model, self.dirpath / "best.safetensors", {**info, "epoch": epoch, "score": value})
            write_curves(self.dirpath / "curves.csv", self.history)
        if self.save_ckpt:
            self._save_ckpt(trainer)
        trainer.strategy.barrier("emofuse.checkpoint")
        if trainer.strategy.reduce_boolean_decision(self._stop, all=False):
            raise KeyboardInterrupt  # a stop asked for in the epoch's last step: stop at its end, saved


@contextlib.contextmanager
def _stop_at_step_on_ctrl_c(trainer: L.Trainer) -> Iterator[None]:
    """The first Ctrl-C asks the checkpoint callbacks to stop at the next step, saved there; a second one stops now."""
    savers = [c for c in trainer.callbacks if isinstance(c, SafetensorsCheckpoint)]  # type: ignore[attr-defined]
    if not savers or threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum: int, frame: Any) -> None:
        for c in savers:
            c.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) in (first, signal.default_int_handler):
            signal.signal(signal.SIGINT, previous)


class CrashResume:
    """Fit from the stage folder's ``last.ckpt`` when a previous attempt left one.

    Args:
        dirpath: The stage folder.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    @property
    def ckpt_path(self) -> Path | None:
        """``last.ckpt`` if present."""
        path = self.dirpath / LAST_CKPT
        return path if path.is_file() else None

    def check(self) -> None:
        """Refuse a ``last.ckpt`` that cannot be resumed (truncated, or not written by Lightning), naming it.

        Raises:
            ResumeError: The file is not a complete Lightning checkpoint; the message says how to proceed.
        """
        path = self.ckpt_path
        if path is None:
            return
        why = None
        if not zipfile.is_zipfile(path):
            why = "truncated, or not a checkpoint at all"
        else:
            try:
                doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - torch raises many types for damaged or foreign files
                why = f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            else:
                if not isinstance(doc, dict) or not {"pytorch-lightning_version", "loops"} <= set(doc):
                    why = "not a Lightning training checkpoint"
        if why is not None:
            raise ResumeError(
                f"{path}: cannot resume this stage from it ({why}); delete it to train the stage again from its "
                "start (finished stages are kept), or run with --overwrite to start the whole run over"
            )

    def fit(self, trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> bool:
        """``trainer.fit``, resuming when possible.

        Returns:
            Whether the fit resumed from ``last.ckpt``.

        Raises:
            ResumeError: ``last.ckpt`` is truncated or foreign (named).
            TrainingInterrupted: The fit was interrupted (Lightning swallows Ctrl-C and returns).
        """
        self.check()
        ckpt = self.ckpt_path
        try:
            with _stop_at_step_on_ctrl_c(trainer):
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
        except SystemExit as e:  # Lightning ends Ctrl-C with sys.exit(1) and SIGTERM with SIGTERMException
            if not trainer.interrupted:
                raise
            name = "SIGTERM" if isinstance(e, SIGTERMException) else "SIGINT"
            if name == "SIGINT" and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C
            raise TrainingInterrupted(self._stopped(name, trainer), name) from None
        if trainer.interrupted:
            raise TrainingInterrupted(self._stopped(None, trainer))
        return ckpt is not None

    def _stopped(self, name: str | None, trainer: L.Trainer | None = None) -> str:
        steps = [c.saved_at_step for c in getattr(trainer, "callbacks", []) if isinstance(c, SafetensorsCheckpoint)]
        step = next((s for s in steps if s is not None), None)
        saved = "its last finished epoch is saved" if self.ckpt_path else "no epoch had finished"
        if step is not None:
            saved = f"its progress up to step {step} is saved"
        by = {"SIGINT": "Ctrl-C (SIGINT)", "SIGTERM": "SIGTERM"}.get(name or "", "an interruption")
        return f"training stopped by {by} in {self.dirpath}; {saved}: run the same command again to resume"


def early_stopping(monitor: str, patience: int | None, mode: str = "auto") -> EarlyStopping | None:
    """Lightning's early stopping on ``monitor`` (``None`` when ``patience`` is ``None``)."""
    if patience is None:
        return None
    return EarlyStopping(monitor=monitor, patience=patience, mode=resolve_mode(monitor, mode), check_finite=True)


def progress_bar() -> RichProgressBar:
    """A rich progress bar (kept on screen after each epoch)."""
    return RichProgressBar(leave=False)


_LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}


def make_loggers(names: Sequence[str], save_dir: str | Path, run_name: str = "run") -> list[Any]:
    """Build Lightning loggers by name (``csv``, ``tensorboard``, ``mlflow``) writing under ``save_dir``.

    Raises:
        MissingDependencyError: A requested logger's package is not installed (the message names it).
    """
    from lightning.pytorch import loggers

    save_dir = Path(save_dir)
    out: list[Any] = []
    for name in names:
        for pkg in _LOGGER_PACKAGES.get(name, ()):
            if is_available(pkg):
                break
        else:
            if name in _LOGGER_PACKAGES:
                wanted = " or ".join(_LOGGER_PACKAGES[name])
                raise MissingDependencyError(
                    f"trainer.logger {name!r} needs the {wanted!r} package, which is not installed: "
                    f"pip install {_LOGGER_PACKAGES[name][0]}"
                )
        if name == "csv":
            out.append(loggers.CSVLogger(save_dir, name="logs"))  # version_<n> per attempt: resumes keep old logs
        elif name == "tensorboard":
            out.append(loggers.TensorBoardLogger(save_dir, name="tensorboard"))
        elif name == "mlflow":
            uri = (save_dir / "mlruns").resolve().as_uri()
            out.append(loggers.MLFlowLogger(experiment_name="emofuse", run_name=run_name, tracking_uri=uri))
        else:
            raise ValueError(f"unknown logger {name!r}; use csv, tensorboard or mlflow")
    return out
