"""Training objectives: a Task wraps a model (and frozen teachers / projection heads) and owns its losses."""

from emofuse.tasks._registry import TaskSpec, get_task, list_tasks, register_task
from emofuse.tasks.base import Task, TaskError
from emofuse.tasks.classification import ClassificationTask
from emofuse.tasks.distillation import DistillationTask
from emofuse.tasks.mgcma import MGCMATask
from emofuse.tasks.regression import RegressionTask
from emofuse.tasks.sew import SeqSEWTask, SEWTask

__all__ = [
    "ClassificationTask",
    "DistillationTask",
    "MGCMATask",
    "RegressionTask",
    "SEWTask",
    "SeqSEWTask",
    "Task",
    "TaskError",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "register_task",
]
