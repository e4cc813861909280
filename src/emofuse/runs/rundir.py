"""The run folder of ``emofuse train`` (``RUN_DIR``): the one owner of its layout. No Lightning, no training code.

Layout::

    config.yaml                      the resolved config (a different config is refused by :func:`claim_run_dir`)
    results.json  results.md         per-run metrics + mean (std) aggregate; paper-format table
    <fold>/seed<k>/                  one run (:class:`Run`)
        config.yaml  env.json        this run's resolved config; versions, devices, encoder provenance
        <stage>/                     one folder per stage (``train`` when the config has no stages)
            best.safetensors  last.safetensors  model.json   rebuildable without the YAML
            last.ckpt  curves.csv  logs/
            DONE                     {"epochs", "best_epoch", "best_score", "monitor", ...}
        metrics.json                 test metrics
        predictions.jsonl            per-utterance predictions
        curves.csv                   all stages' epochs
        DONE                         {"checkpoint": "<stage>/best.safetensors", "finished": ...}

Writers (the runner) and readers (``evaluate``, ``predict``, ``analyze``, ``report``, ``quickstart``, ``serve``) all
ask :class:`RunDir` / :class:`Run` for paths; no other module globs run folders. :func:`resolve_checkpoint` turns
anything a user may point at (a file, a stage folder, a run, a ``RUN_DIR``) into one checkpoint, choosing among runs
by their *validation* score.

Example:
    >>> import tempfile
    >>> rd = RunDir(tempfile.mkdtemp())
    >>> run = rd.run("fold1", 0)
    >>> run.path.relative_to(rd.path).as_posix(), run.done
    ('fold1/seed0', False)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emofuse.config import ConfigError, dump_config, load_config
from emofuse.config.schema import ExperimentConfig
from emofuse.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

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

CONFIG = "config.yaml"
DONE = "DONE"
RESULTS = "results.json"
BEST = "best.safetensors"

#: Keys that do not change what is computed: they may differ when resuming a run folder.
RUNTIME_KEYS = (
    "name",
    "description",
    "seeds",
    "data.folds",
    "data.num_workers",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.progress_bar",
    "trainer.logger",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "eval.digits",
)


class RunDirError(ValueError):
    """``RUN_DIR`` holds something this run must not overwrite. The message says what and how to proceed."""


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; ``None`` when missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class Run:
    """One fold × seed of a ``RUN_DIR``: ``<fold>/seed<k>/``.

    Args:
        path: The ``seed<k>`` folder (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def fold(self) -> str:
        """The fold name (the parent folder's name)."""
        return self.path.parent.name

    @property
    def seed(self) -> int:
        """The seed (from the ``seed<k>`` folder name; ``-1`` when the name is not of that form)."""
        try:
            return int(self.path.name.removeprefix("seed"))
        except ValueError:
            return -1

    # ------------------------------------------------------------------------------------------------ files

    @property
    def config_file(self) -> Path:
        """This run's resolved config."""
        return self.path / CONFIG

    @property
    def env_file(self) -> Path:
        """Versions, devices, encoder provenance."""
        return self.path / "env.json"

    @property
    def metrics_file(self) -> Path:
        """Test metrics."""
        return self.path / "metrics.json"

    @property
    def predictions_file(self) -> Path:
        """Per-utterance test predictions."""
        return self.path / "predictions.jsonl"

    @property
    def curves_file(self) -> Path:
        """All stages' epochs."""
        return self.path / "curves.csv"

    @property
    def done_file(self) -> Path:
        """The run's finish marker."""
        return self.path / DONE

    def stage_dir(self, stage: str) -> Path:
        """The folder of one stage."""
        return self.path / stage

    def stage_curves_file(self, stage: str) -> Path:
        """One stage's per-epoch values."""
        return self.stage_dir(stage) / "curves.csv"

    # ------------------------------------------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        """Whether the run finished (its ``DONE`` exists)."""
        return self.done_file.is_file()

    def done_info(self) -> dict[str, Any] | None:
        """The run's ``DONE`` document (``{"checkpoint", "finished"}``), or ``None``."""
        return _read_json(self.done_file)

    def stage_done(self, stage: str) -> bool:
        """Whether ``stage`` finished training."""
        return (self.stage_dir(stage) / DONE).is_file()

    def stage_info(self, stage: str | Path) -> dict[str, Any] | None:
        """The stage's ``DONE`` document (epochs, best score, monitor), or ``None``."""
        folder = stage if isinstance(stage, Path) else self.stage_dir(stage)
        return _read_json(folder / DONE)

    def mark_stage_done(self, stage: str, info: dict[str, Any]) -> None:
        """Write the stage's ``DONE``."""
        atomic_write_json(self.stage_dir(stage) / DONE, info)

    def mark_done(self, checkpoint: Path) -> None:
        """Write the run's ``DONE`` naming the tested ``checkpoint`` (a file inside the run)."""
        rel = Path(checkpoint).relative_to(self.path).as_posix()
        atomic_write_json(self.done_file, {"checkpoint": rel, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def metrics(self) -> dict[str, Any]:
        """The test metrics of a finished run.

        Raises:
            FileNotFoundError: No ``metrics.json`` (names the file).
        """
        if not self.metrics_file.is_file():
            raise FileNotFoundError(f"{self.metrics_file}: not found (the run's DONE exists without its metrics)")
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def write_config(self, cfg: ExperimentConfig) -> None:
        """Write this run's resolved config."""
        dump_config(cfg, self.config_file)

    def config_doc(self) -> dict[str, Any]:
        """This run's config as plain YAML data (``{}`` when missing or unreadable; no validation)."""
        import yaml

        try:
            doc = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return {}
        return doc if isinstance(doc, dict) else {}

    # ------------------------------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> Path | None:
        """The checkpoint the run's ``DONE`` names (its tested checkpoint), when that file exists."""
        rel = (self.done_info() or {}).get("checkpoint")
        if isinstance(rel, str) and (self.path / rel).is_file():
            return self.path / rel
        return None

    def stages(self) -> list[Path]:
        """Stage folders with a best checkpoint, in the order of the run's config (else by name)."""
        stages = sorted(p for p in self.path.iterdir() if (p / BEST).is_file()) if self.path.is_dir() else []
        names = [s.get("name") for s in self.config_doc().get("stages") or [] if isinstance(s, dict)]
        rank = {n: i for i, n in enumerate(names)}
        return sorted(stages, key=lambda p: rank.get(p.name, -1))

    def final_checkpoint(self) -> tuple[Path, str] | None:
        """The checkpoint to use for this run and why: its ``DONE``'s, else the last stage's best (unfinished)."""
        done = self.checkpoint()
        if done is not None:
            return done, "the checkpoint the run's DONE file names (its final stage's best)"
        stages = self.stages()
        if stages:
            return stages[-1] / BEST, f"best checkpoint of the last stage ({stages[-1].name}); run unfinished"
        return None

    def selection(self) -> dict[str, Any] | None:
        """How the tested checkpoint was chosen: ``{"stage", "monitor", "score", "epoch"}`` (its validation score).

        Hyperparameters are compared on this score, never on test metrics. ``None`` when the checkpoint does not
        say (older runs).
        """
        from emofuse.models.checkpoint import CheckpointError, read_checkpoint_meta

        ckpt = self.checkpoint()
        if ckpt is None:
            return None
        try:
            meta = read_checkpoint_meta(ckpt)
        except CheckpointError:
            return None
        if not isinstance(meta.get("score"), (int, float)) or "monitor" not in meta:
            return None
        stage = (meta.get("task") or {}).get("stage")
        return {"stage": stage, "monitor": meta["monitor"], "score": float(meta["score"]), "epoch": meta.get("epoch")}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def validation_score(checkpoint: Path) -> tuple[float, str] | None:
    """``(lower-is-better score, monitor)`` of the stage a checkpoint belongs to (its ``DONE``), or ``None``."""
    doc = _read_json(checkpoint.parent / DONE) or {}
    try:
        score, monitor = float(doc["best_score"]), str(doc.get("monitor", ""))
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(score):
        return None
    return (score if "loss" in monitor else -score), monitor


class RunDir:
    """A ``RUN_DIR`` written by ``emofuse train`` (layout in the module docstring).

    Args:
        path: The folder (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_file(self) -> Path:
        """The experiment's resolved config."""
        return self.path / CONFIG

    @property
    def results_file(self) -> Path:
        """``results.json`` (per-run metrics and their aggregate)."""
        return self.path / RESULTS

    def is_run_folder(self) -> bool:
        """Whether the folder holds an experiment config (``config.yaml``)."""
        return self.config_file.is_file()

    def config(self) -> ExperimentConfig:
        """The experiment's resolved config.

        Raises:
            FileNotFoundError: No ``config.yaml``.
        """
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.path} is not a training run folder (no {CONFIG})")
        return load_config(self.config_file)

    def run(self, fold: str, seed: int) -> Run:
        """One fold × seed (the folder need not exist)."""
        return Run(self.path / fold / f"seed{seed}")

    def runs(self) -> list[Run]:
        """Every started run (``<fold>/seed<k>`` folders), sorted."""
        return [Run(p) for p in sorted(self.path.glob("*/seed*/")) if p.is_dir()]

    def finished(self) -> list[Run]:
        """The runs with a ``DONE`` marker, sorted."""
        return [r for r in self.runs() if r.done]

    def open(self) -> tuple[ExperimentConfig, list[Run]]:
        """The resolved config and the finished runs.

        Raises:
            FileNotFoundError: No ``config.yaml`` or no finished runs.
        """
        cfg = self.config()
        runs = self.finished()
        if not runs:
            raise FileNotFoundError(f"{self.path} has no finished runs (no <fold>/seed<k>/DONE); train first")
        return cfg, runs

    def results(self) -> dict[str, Any] | None:
        """``results.json``, or ``None`` when missing or unreadable."""
        return _read_json(self.results_file)

    def complete(self, seeds: Sequence[int]) -> bool:
        """Whether ``results.json`` covers every fold × ``seeds`` and each of those runs finished."""
        doc = self.results()
        if doc is None:
            return False
        folds = [str(f) for f in doc.get("folds", [])]
        return int(doc.get("n_runs", 0)) == len(folds) * len(seeds) and all(
            self.run(f, s).done for f in folds for s in seeds
        )

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


# -------------------------------------------------------------------------------------------- config of a run dir


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ (``key: old → new``), ignoring :data:`RUNTIME_KEYS`."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == r or key.startswith(r + ".") for r in RUNTIME_KEYS):
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} → {b.get(key)!r}")
    return out


def claim_run_dir(cfg: ExperimentConfig, out_dir: Path, overwrite: bool) -> None:
    """Check ``out_dir`` belongs to this config (or is new / empty), then write ``config.yaml``.

    Raises:
        RunDirError: ``out_dir`` holds runs of another config (without ``overwrite``) or other files.
    """
    cfg_file = RunDir(out_dir).config_file
    if cfg_file.is_file():
        try:
            old: ExperimentConfig = load_config(cfg_file)
            diffs = config_differences(old, cfg)
        except ConfigError as e:
            diffs = [f"(the stored config no longer loads: {e})"]
        if diffs and not overwrite and _holds_training(out_dir):
            shown = "\n  ".join(diffs[:20]) + ("\n  ..." if len(diffs) > 20 else "")
            raise RunDirError(
                f"{out_dir} holds runs of a different config; differing keys:\n  {shown}\n"
                "use --overwrite to replace them, or choose another --out"
            )
        if diffs and not overwrite:  # a failed start (nothing trained yet): the new config takes the folder
            shown = "; ".join(diffs[:5]) + ("; ..." if len(diffs) > 5 else "")
            logger.warning("%s: nothing was trained there yet, so its config is replaced (%s)", out_dir, shown)
            for run in RunDir(out_dir).runs():
                shutil.rmtree(run.path)
        if overwrite:
            shutil.rmtree(out_dir)
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise RunDirError(
            f"{out_dir} is not empty and is not an emofuse run folder (no {CONFIG}); choose another --out"
        )
    dump_config(cfg, cfg_file)


def _holds_training(out_dir: Path) -> bool:
    """Whether any run in ``out_dir`` finished a stage or saved a checkpoint (work ``--overwrite`` would lose)."""
    patterns = (f"*/seed*/**/{DONE}", "*/seed*/**/*.ckpt", "*/seed*/**/*.safetensors")
    return any(p.is_file() for pattern in patterns for p in out_dir.glob(pattern))


def find_config(checkpoint: Path, levels: int = 2) -> Path | None:
    """The run config nearest above a checkpoint (its folder, the stage's run, ... ``levels`` folders up)."""
    folder = checkpoint.parent
    for _ in range(levels + 1):
        if (folder / CONFIG).is_file():
            return folder / CONFIG
        folder = folder.parent
    return None


# ---------------------------------------------------------------------------------------- checkpoint resolution


def _runs_under(path: Path) -> list[Run]:
    """Run folders at any depth under ``path``: finished ones naming a checkpoint and any holding a stage's best."""
    finished = {p.parent for p in path.rglob(DONE) if Run(p.parent).checkpoint() is not None}
    started = {p.parent.parent for p in path.rglob(BEST)}
    return [Run(p) for p in sorted(finished | started)]


def resolve_checkpoint(path: str | Path) -> tuple[Path, str]:
    """The checkpoint file to use, and why it was chosen.

    * a file: that file;
    * a stage folder (``best.safetensors`` inside): its best checkpoint;
    * a run folder (``<fold>/seed<k>``): the checkpoint its ``DONE`` names, else the last stage's best;
    * a ``RUN_DIR`` (or any folder above runs): of all runs, the one whose final stage scored best on its
      *validation* monitor (lowest loss, highest otherwise), ties broken by folder order.

    Raises:
        CheckpointError: Nothing usable at ``path`` (the message names it).
    """
    from emofuse.models.checkpoint import CheckpointError

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        return path, "the file given"
    if (path / BEST).is_file():
        return path / BEST, "best checkpoint of the stage folder given"
    own = Run(path).final_checkpoint()
    if own is not None:
        return own
    candidates = [(r, c) for r in _runs_under(path) if (c := r.final_checkpoint()) is not None]
    if not candidates:
        raise CheckpointError(
            f"{path}: no checkpoint found (expected a .safetensors file, a stage folder with best.safetensors, a "
            "seed run folder or a training run folder)"
        )
    if len(candidates) == 1:
        run, (ckpt, _) = candidates[0]
        return ckpt, f"the only run in the run folder ({run.path.relative_to(path)})"
    scored = [(s, i, r, c) for i, (r, (c, _)) in enumerate(candidates) if (s := validation_score(c)) is not None]
    if not scored:
        run, (ckpt, _) = candidates[0]
        return ckpt, f"first of {len(candidates)} runs ({run.path.relative_to(path)}); no validation scores recorded"
    (value, monitor), _, run, ckpt = min(scored, key=lambda t: (t[0][0], t[1]))
    shown = value if "loss" in monitor else -value
    return (
        ckpt,
        f"best {monitor or 'validation score'} ({shown:.4g}) of {len(candidates)} runs: {run.path.relative_to(path)}",
    )
