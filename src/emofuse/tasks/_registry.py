"""Task registry: each stage objective declares what it needs and yields; the training engine asks it.

A :class:`TaskSpec` says how to build the task around a model (``build``) and what the stage needs from the data
pipeline and the runner — cached teacher states (``teacher_states``), raw inputs even in a features run
(``raw_inputs``), whether ModDrop applies to its training split, how its checkpoint is selected by default
(``default_monitor``) — and what it yields to score (``target``: class probabilities, continuous values, or
nothing, as for a distillation stage). Task modules register their specs with :func:`register_task`; the runner and
the components call :func:`get_task` instead of comparing task names.

Example:
    >>> spec = get_task("regress")
    >>> spec.target, spec.teacher_states
    ('regression', False)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

__all__ = ["TaskSpec", "get_task", "list_tasks", "register_task"]

#: ``build(model, options, train_dataset, stage_name) -> task``.
TaskBuilder = Callable[[Any, dict[str, Any], Any, str], nn.Module]
_TASKS: dict[str, TaskSpec] = {}


@dataclass(frozen=True)
class TaskSpec:
    """What a stage objective needs and yields.

    Attributes:
        name: The ``stages[].task`` value.
        build: Builds the task: ``build(model, task_options, train_dataset, stage_name)``.
        target: What the stage's outputs are scored as: ``"classification"`` (probabilities over the classes),
            ``"regression"`` (values against ``data.target``) or ``"none"`` (nothing to score: distillation).
        teacher_states: The batches carry the cached teacher states (``batch["teacher"]``).
        raw_inputs: The model reads raw inputs (encoders' ``preprocess``) even when ``encoders.inputs`` is features.
        moddrop: ``data.moddrop`` applies to the stage's training split.
        default_monitor: ``(metric, mode)`` that selects the checkpoint unless the stage sets ``trainer.monitor``.
        global_monitor_wins: A top-level ``trainer.monitor`` also overrides :attr:`default_monitor`.
    """

    name: str
    build: TaskBuilder
    target: Literal["classification", "regression", "none"] = "classification"
    teacher_states: bool = False
    raw_inputs: bool = False
    moddrop: bool = True
    default_monitor: tuple[str, str] | None = None
    global_monitor_wins: bool = False

    def monitor(self, stage_trainer: dict[str, Any], global_set: set[str], monitor: str, mode: str) -> tuple[str, str]:
        """The ``(monitor, mode)`` a stage selects its checkpoint on, given what its config sets."""
        if self.default_monitor is None or "monitor" in stage_trainer:
            return monitor, mode
        if self.global_monitor_wins and "monitor" in global_set:
            return monitor, mode
        return self.default_monitor


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a task spec under its name (a second spec of the same name from another module is an error)."""
    old = _TASKS.get(spec.name)
    if old is not None and old.build.__module__ != spec.build.__module__:
        raise ValueError(f"task {spec.name!r} is already registered (by {old.build.__module__})")
    _TASKS[spec.name] = spec
    return spec


def _load_all() -> None:
    import emofuse.tasks  # noqa: F401  (task modules register their specs on import)


def list_tasks(target: str | None = None) -> list[str]:
    """Registered task names, sorted; ``target`` keeps those that yield that kind of output."""
    _load_all()
    return sorted(n for n, s in _TASKS.items() if target is None or s.target == target)


def get_task(name: str, stage: str | None = None) -> TaskSpec:
    """The spec of task ``name``.

    Raises:
        ValueError: Unknown task (names the stage, the closest known task and every known one).
    """
    _load_all()
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"stage {stage!r}: " if stage else ""
        raise ValueError(f"{where}unknown task {name!r}{hint}; use {', '.join(sorted(_TASKS))}") from None
