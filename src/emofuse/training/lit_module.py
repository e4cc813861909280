"""The LightningModule around a :class:`~emofuse.tasks.base.Task`: steps, logging, metrics, optimiser, schedule.

The task computes the objective (``{"loss", <parts>, "logits"?, "probs"?, "labels"?}``); this module
only logs every scalar part as ``<split>/<part>``, collects predictions during validation and
testing, and turns them into ``<split>/wa``, ``ua``, ``macro_f1``, ``weighted_f1`` and ``mult_f1``
(CMD's MulT-style macro F1) at the end of the epoch, with :mod:`emofuse.metrics`. A regression task
(its output holds ``preds`` and ``targets``) is scored with ``<split>/pcc``, ``ccc``, ``mae``, ``uar`` and
``war`` (:func:`~emofuse.metrics.regression_metrics`, binarised at the task's ``threshold``). Under DDP the
predictions of all ranks are gathered (and de-duplicated by utterance id, since distributed samplers
repeat a few items) before scoring, so every rank logs the same numbers.

Learning-rate schedules are per epoch (spec ``cmd.md`` §3.4, A3):

* ``warmup_linear``: factor ``(e + 1) / W`` for epochs ``e < W``, then ``decay ** (e - W + 1)``
  (CMD: W = 10, decay = 0.9, peak 1e-4).
* ``warmup_cosine``: the same warm-up, then a half cosine from the peak to ``min_lr`` at the last epoch.
* ``plateau``: ``ReduceLROnPlateau`` on the monitored value.
* ``inverse_time`` (per optimiser step, not per epoch): ``lr / (1 + decay · step)``, the legacy Keras
  optimiser ``decay`` (ConflictNET: ``Adam(lr=0.01, decay=0.6)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import lightning as L
import torch
from torch import Tensor, nn

from emofuse.config.schema import OptimConfig
from emofuse.losses.classification import IGNORE_INDEX
from emofuse.metrics.scoring import scalar_summary, score_classes, score_values

__all__ = [
    "TaskModule",
    "TrainingDiverged",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "parameter_groups",
    "resolve_mode",
]

_OUTPUT_KEYS = ("logits", "probs", "labels", "preds", "targets")


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: training stops (the message names the epoch and step)."""


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """``min`` or ``max`` for a monitored name (``auto``: ``min`` for losses, else ``max``)."""
    if mode in ("min", "max"):
        return mode
    return "min" if "loss" in monitor.split("/")[-1] else "max"


def lr_factor(optim: OptimConfig, max_epochs: int) -> Callable[[int], float]:
    """The per-epoch learning-rate multiplier of the ``warmup_linear`` / ``warmup_cosine`` / ``none`` schedules.

    Example:
        >>> f = lr_factor(OptimConfig(scheduler="warmup_linear", warmup_epochs=2, decay=0.5), 10)
        >>> [f(e) for e in range(5)]
        [0.5, 1.0, 0.5, 0.25, 0.125]
    """
    warm = optim.warmup_epochs

    def warmup(epoch: int) -> float | None:
        return (epoch + 1) / warm if epoch < warm else None

    if optim.scheduler == "warmup_linear":
        return lambda e: w if (w := warmup(e)) is not None else optim.decay ** (e - warm + 1)
    if optim.scheduler == "warmup_cosine":
        floor = optim.min_lr / optim.lr
        span = max(max_epochs - warm - 1, 1)

        def cosine(e: int) -> float:
            w = warmup(e)
            if w is not None:
                return w
            t = min((e - warm) / span, 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        return cosine
    if optim.scheduler in ("none", "plateau", "inverse_time"):
        return lambda e: 1.0  # inverse_time is per step: build_scheduler
    raise ValueError(f"unknown scheduler {optim.scheduler!r}")


def parameter_groups(task: nn.Module, optim: OptimConfig) -> list[nn.Parameter] | list[dict[str, Any]]:
    """The task's trainable parameters, split into learning-rate groups when a fine-tuned encoder asks for it.

    With ``optim.encoder_lr`` or ``optim.layer_decay < 1``, the parameters the model declares as encoder layers
    (:meth:`~emofuse.models.base.EmotionModel.encoder_layer_ids`, depth ``d`` in ``0..L``) get
    ``encoder_lr · layer_decay^(L - d)`` (``encoder_lr`` defaults to ``lr``); everything else (the head) gets ``lr``.
    One group per learning rate: the head's first (the one the logged ``lr`` shows), then from the top block down.

    Example:
        >>> from torch import nn
        >>> class M(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb, self.block, self.head = nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)
        ...     def encoder_layer_ids(self):
        ...         return {"emb.weight": 0, "emb.bias": 0, "block.weight": 1, "block.bias": 1}
        >>> task = nn.Module(); task.model = M()
        >>> groups = parameter_groups(task, OptimConfig(lr=1e-3, encoder_lr=1e-4, layer_decay=0.5))
        >>> [(g["lr"], len(g["params"])) for g in groups]
        [(0.001, 2), (0.0001, 2), (5e-05, 2)]

    Raises:
        ValueError: ``encoder_lr`` / ``layer_decay`` are set for a model that declares no encoder layers.
    """
    params = [p for p in task.parameters() if p.requires_grad]
    if optim.encoder_lr is None and optim.layer_decay == 1.0:
        return params
    model = getattr(task, "model", task)
    layer_ids = getattr(model, "encoder_layer_ids", None)
    declared: dict[str, int] = layer_ids() if callable(layer_ids) else {}
    if not declared:
        raise ValueError(
            f"optim.encoder_lr / optim.layer_decay are set, but model {type(model).__name__} declares no encoder "
            "layers to fine-tune (use a fine-tuning model such as finetuned_encoder, or leave them unset)"
        )
    top = max(declared.values())
    depth = {id(p): declared[n] for n, p in model.named_parameters() if n in declared}
    base = optim.lr if optim.encoder_lr is None else optim.encoder_lr
    groups: dict[float, list[nn.Parameter]] = {optim.lr: []}
    for p in params:
        lr = optim.lr if id(p) not in depth else base * optim.layer_decay ** (top - depth[id(p)])
        groups.setdefault(lr, []).append(p)
    head = groups.pop(optim.lr)
    ordered = [(optim.lr, head)] + sorted(groups.items(), key=lambda kv: -kv[0])
    return [{"params": ps, "lr": lr} for lr, ps in ordered if ps]


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], optim: OptimConfig
) -> torch.optim.Optimizer:
    """Adam, AdamW, SGD or L-BFGS from an :class:`~emofuse.config.OptimConfig` (over parameters or groups)."""
    params = cast(list[Any], list(params))
    if not params:
        raise ValueError("the task has no trainable parameters")
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "lbfgs":  # full-batch convex probes; one parameter group, no weight decay (use task l2)
        if any(isinstance(p, dict) for p in params) or optim.weight_decay:
            raise ValueError("optim.name=lbfgs takes one learning rate and no weight_decay (use task_options.l2)")
        return torch.optim.LBFGS(params, lr=optim.lr, max_iter=20, history_size=10, line_search_fn="strong_wolfe")
    raise ValueError(f"unknown optimizer {optim.name!r}")


def no_validation_monitor(monitor: str, mode: str) -> tuple[str, str]:
    """The training value that stands in for ``monitor`` (a ``val/`` key) when a fold has no validation split.

    Losses have a training twin (``val/loss_audio`` → ``train/loss_audio``); prediction metrics (``val/ua``,
    ``val/ccc``, ...) are scored on validation and test data only, so they fall back to ``train/loss``.

    Example:
        >>> no_validation_monitor("val/ccc", "max"), no_validation_monitor("val/loss_text", "min")
        (('train/loss', 'min'), ('train/loss_text', 'min'))
    """
    name = monitor.removeprefix("val/")
    if name == "loss" or name.startswith("loss_"):
        return "train/" + name, mode
    return "train/loss", "min"


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, max_epochs: int, monitor: str, mode: str
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` dict for ``optim.scheduler`` (``None`` for ``none``)."""
    if optim.scheduler == "none":
        return None
    if optim.scheduler == "plateau":
        watch, watch_mode = monitor, mode
        if optim.plateau_monitor is not None:  # its own value (e.g. val/loss while stopping on val/wa)
            watch, watch_mode = optim.plateau_monitor, "auto"
            if monitor.startswith("train/") and watch.startswith("val/"):  # no validation split
                watch, watch_mode = no_validation_monitor(watch, watch_mode)
        direction: Literal["min", "max"] = "min" if resolve_mode(watch, watch_mode) == "min" else "max"
        sched: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=direction, factor=optim.plateau_factor, patience=optim.plateau_patience
        )
        return {"scheduler": sched, "interval": "epoch", "monitor": watch, "strict": True}
    if optim.scheduler == "inverse_time":
        decay = optim.decay
        step_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0 / (1.0 + decay * k))
        return {"scheduler": step_sched, "interval": "step"}
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, max_epochs))
    return {"scheduler": sched, "interval": "epoch"}


class TaskModule(L.LightningModule):
    """Train, validate and test a task.

    Args:
        task: The objective (holds the model as ``task.model``).
        optim: Optimiser and schedule settings.
        classes: Class names in label-index order (needed for prediction metrics).
        max_epochs: Epochs of the schedule (for ``warmup_cosine``).
        monitor: Value the ``plateau`` scheduler watches.
        monitor_mode: ``min``, ``max`` or ``auto``.
    """

    def __init__(
        self,
        task: nn.Module,
        optim: OptimConfig | None = None,
        classes: Sequence[str] | None = None,
        max_epochs: int = 1,
        monitor: str = "val/loss",
        monitor_mode: str = "auto",
    ) -> None:
        super().__init__()
        self.task = task
        self.optim = optim or OptimConfig()
        self.classes = list(classes) if classes is not None else None
        self.max_epochs = max_epochs
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        #: Predictions of the last finished validation / test epoch: ``{"ids", "labels", "probs"}``.
        self.predictions: dict[str, dict[str, Any]] = {}
        self._collect: dict[str, list[tuple[list[str], Tensor | None, Tensor]]] = {}
        # frozen teachers are rebuilt, not resumed: they are left out of Lightning checkpoints
        self.strict_loading = False
        #: Set once a regression output (``preds``) has been seen: predictions are scored as regression.
        self.regression = False
        #: ``part -> (sum of batch-size-weighted values, total batch size)`` of the training epoch so far.
        self._train_sums: dict[str, tuple[Tensor, int]] = {}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Run the task on one batch."""
        return self.task(batch)

    # ------------------------------------------------------------------------------------- steps

    def _step(self, batch: dict[str, Any], split: str) -> Tensor:
        out = self.task(batch)
        if "loss" not in out:
            raise ValueError(f"{type(self.task).__name__}.forward() returned no 'loss' (keys: {sorted(out)})")
        size = len(batch["ids"]) if "ids" in batch else None
        train = split == "train"
        for key, value in out.items():
            if key in _OUTPUT_KEYS or not isinstance(value, Tensor) or value.numel() != 1:
                continue
            if train:  # epoch means kept here, in the checkpoint: a run resumed mid-epoch logs the same means
                self._accumulate(key, value.detach().float().reshape(()), size or 1)
                continue
            self.log(
                f"{split}/{key}",
                value.detach().float(),
                on_step=False,
                on_epoch=True,
                prog_bar=key == "loss",
                batch_size=size,
                sync_dist=True,
            )
        if not train and "preds" in out and "ids" in batch:
            self.regression = True
            targets = out.get("targets")
            self._collect.setdefault(split, []).append(
                (
                    list(batch["ids"]),
                    None if targets is None else targets.detach().to("cpu").float(),
                    out["preds"].detach().to("cpu").float(),
                )
            )
        elif not train:
            scores = out.get("probs", out.get("logits"))
            if scores is not None and "ids" in batch:
                labels = out.get("labels", batch.get("labels"))
                self._collect.setdefault(split, []).append(
                    (
                        list(batch["ids"]),
                        None if labels is None else labels.detach().to("cpu").long(),
                        _as_probs(out).detach().to("cpu").float(),
                    )
                )
        return out["loss"]

    def _accumulate(self, key: str, value: Tensor, weight: int) -> None:
        total, count = self._train_sums.get(key, (torch.zeros((), device=value.device), 0))
        self._train_sums[key] = (total.to(value.device) + value * weight, count + weight)

    def on_train_epoch_start(self) -> None:  # noqa: D102 - not called when Lightning resumes mid-epoch
        self._train_sums = {}

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training losses (``train/<part>``), weighted by batch size."""
        for key, (total, count) in self._train_sums.items():
            self.log(f"train/{key}", total / count, on_epoch=True, prog_bar=key == "loss", sync_dist=True)
        self._train_sums = {}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Loss of one training batch.

        Raises:
            TrainingDiverged: The loss is NaN or infinite (on any rank); names the epoch and step.
        """
        loss = self._step(batch, "train")
        finite = bool(torch.isfinite(loss.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):  # every rank stops together
            raise TrainingDiverged(
                f"the training loss became {'NaN or infinite' if finite else float(loss.detach())} at epoch "
                f"{self.current_epoch}, step {self.global_step} (batch {batch_idx} of the epoch); lower optim.lr, "
                "or set trainer.gradient_clip_val"
            )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Loss (and predictions) of one validation batch."""
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Loss (and predictions) of one test batch."""
        return self._step(batch, "test")

    # ------------------------------------------------------------------------------ epoch ends

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self._collect["val"] = []

    def on_test_epoch_start(self) -> None:  # noqa: D102
        self._collect["test"] = []

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._finish("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._finish("test")

    def _finish(self, split: str) -> None:
        chunks = self._collect.pop(split, [])
        gathered = _gather(chunks)
        if gathered is None:
            return
        self.predictions[split] = gathered
        metrics = self.score(gathered)
        for key, value in metrics.items():
            self.log(f"{split}/{key}", value, on_step=False, on_epoch=True, sync_dist=False)

    def score(self, predictions: dict[str, Any]) -> dict[str, float]:
        """Scalar metrics of gathered predictions (empty without labels or class names).

        Computed by the same functions as the test split and ``emofuse evaluate`` (:mod:`emofuse.metrics.scoring`).
        """
        if self.regression:
            return self._score_regression(predictions)
        labels = predictions["labels"]
        if labels is None or self.classes is None:
            return {}
        keep = labels != IGNORE_INDEX
        names = [str(c) for c in self.classes]
        return scalar_summary(score_classes(labels[keep].tolist(), predictions["probs"][keep].numpy(), names))

    def _score_regression(self, predictions: dict[str, Any]) -> dict[str, float]:
        """PCC / CCC / MAE / UAR / WAR / weighted F1, the mean over the scored targets."""
        targets, preds = predictions["labels"], predictions["probs"]  # (N, K) each
        if targets is None:
            return {}
        threshold = float(getattr(self.task, "threshold", 0.0))  # RegressionTask options (other tasks: defaults)
        rescale = getattr(self.task, "rescale_to", None)
        rescale = rescale if isinstance(rescale, tuple) else None  # "train" is resolved for the test split only
        return scalar_summary(score_values(targets.numpy(), preds.numpy(), threshold, rescale))

    # ------------------------------------------------------------------------------ optimiser

    def configure_optimizers(self) -> Any:
        """Optimiser over the task's trainable parameters, with the configured per-epoch schedule."""
        optimizer = build_optimizer(parameter_groups(self.task, self.optim), self.optim)
        sched = build_scheduler(optimizer, self.optim, self.max_epochs, self.monitor, self.monitor_mode)
        if sched is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": sched}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave frozen parameters (teachers) out of the Lightning checkpoint; keep the epoch's running loss sums.

        The teachers are rebuilt on resume; the sums let a checkpoint written mid-epoch log the epoch's true means.
        """
        frozen = {f"task.{n}" for n, p in self.task.named_parameters() if not p.requires_grad}
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k in frozen]:
            del state[key]
        checkpoint["emofuse_train_sums"] = {k: [float(t), int(n)] for k, (t, n) in self._train_sums.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        sums = checkpoint.get("emofuse_train_sums") or {}
        self._train_sums = {k: (torch.tensor(t, dtype=torch.float32), int(n)) for k, (t, n) in sums.items()}


def _as_probs(out: dict[str, Tensor]) -> Tensor:
    """Class probabilities of a task output (``probs``, else ``softmax(logits)``)."""
    if out.get("probs") is not None:
        return out["probs"]
    return out["logits"].float().softmax(-1)


def _gather(chunks: list[tuple[list[str], Tensor | None, Tensor]]) -> dict[str, Any] | None:
    """Concatenate this rank's predictions, gather all ranks' under DDP, drop repeated ids."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everything: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everything, chunks)
        chunks = [c for part in everything for c in part]
    if not chunks:
        return None
    ids: list[str] = []
    rows: list[int] = []
    seen: set[str] = set()
    flat_ids = [i for c in chunks for i in c[0]]
    for row, utt in enumerate(flat_ids):
        if utt not in seen:
            seen.add(utt)
            ids.append(utt)
            rows.append(row)
    probs = torch.cat([c[2] for c in chunks])[rows]
    has_labels = all(c[1] is not None for c in chunks)
    labels = torch.cat([c[1] for c in chunks])[rows] if has_labels else None  # type: ignore[misc]
    order = sorted(range(len(ids)), key=ids.__getitem__)  # same order on every rank and every run
    return {
        "ids": [ids[i] for i in order],
        "labels": None if labels is None else labels[order],
        "probs": probs[order],
    }
