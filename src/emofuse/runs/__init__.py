"""Run folders of ``emofuse train``: their layout, finished runs, checkpoint choice (Lightning-free).

Layer L4: imports ``config`` and ``utils`` (``models.checkpoint`` on use, so reading results needs no torch).
``training``, ``inference``, ``evaluation`` and ``cli`` read and write run folders only through it.
"""

from emofuse.runs.rundir import (
    RUNTIME_KEYS,
    Run,
    RunDir,
    RunDirError,
    claim_run_dir,
    config_differences,
    find_config,
    resolve_checkpoint,
    validation_score,
)

__all__ = [
    "RUNTIME_KEYS",
    "Run",
    "RunDir",
    "RunDirError",
    "claim_run_dir",
    "config_differences",
    "find_config",
    "resolve_checkpoint",
    "validation_score",
]
