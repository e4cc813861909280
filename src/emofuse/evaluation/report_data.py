"""Reading run folders for ``emofuse report``: results, per-run curves, encoder provenance, analysis outputs.

A run folder is what ``emofuse train CONFIG --out RUN_DIR`` writes (layout in :mod:`emofuse.training.runner`):
``results.json`` (per fold × seed metrics and their aggregate) is required; each ``<fold>/seed<k>/`` adds
``curves.csv`` and ``env.json`` when present. Outputs of ``emofuse analyze`` (``dominance.json``,
``token_importance.json``) are picked up anywhere up to three folders below ``RUN_DIR`` (the convention is
``emofuse analyze RUN_DIR --out RUN_DIR/analysis``).

Bad input raises :class:`ReportError` with a one-line message naming the folder or file and the problem.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.runs import RunDir

__all__ = ["Analysis", "ExperimentRuns", "ReportError", "SeedRun", "load_experiment", "load_experiments"]

#: Files of ``emofuse analyze`` looked for in a run folder.
ANALYSIS_FILES = ("dominance.json", "token_importance.json")


class ReportError(ValueError):
    """A run folder cannot be reported: not a run folder, no results yet, or runs that cannot be compared."""


@dataclass
class SeedRun:
    """One fold × seed of an experiment.

    Attributes:
        fold: Fold name.
        seed: Seed.
        dir: Its ``<fold>/seed<k>`` folder (may be missing when only ``results.json`` was kept).
        metrics: Its test metrics (``classification_metrics`` + ``mult_f1``).
        curves: Rows of its ``curves.csv`` (strings as written; empty without the file).
        env: Its ``env.json`` (``None`` without the file).
    """

    fold: str
    seed: int
    dir: Path
    metrics: dict[str, Any]
    curves: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, Any] | None = None


@dataclass
class Analysis:
    """The outputs of one ``emofuse analyze`` call found in a run folder.

    Attributes:
        where: The folder holding them, relative to the run folder (``"."`` for the run folder itself).
        dominance: ``dominance.json`` (``None`` when absent).
        tokens: ``token_importance.json`` (``None`` when absent).
    """

    where: str
    dominance: dict[str, Any] | None
    tokens: dict[str, Any] | None


@dataclass
class ExperimentRuns:
    """One run folder: its ``results.json``, runs, provenance and analyses.

    Attributes:
        dir: The run folder.
        name: Display name (the experiment name, made unique across a report).
        doc: ``results.json``.
        classes: Class order of the report (the first run folder's order).
        runs: Scored fold × seed runs.
        encoders: Encoder provenance (``results.json`` ``encoders``, else the first ``env.json``).
        provenance_mismatch: Encoder keys whose weights fingerprint differs between runs (``env.json``).
        analyses: ``emofuse analyze`` outputs found below the folder.
    """

    dir: Path
    name: str
    doc: dict[str, Any]
    classes: list[str]
    runs: list[SeedRun]
    encoders: dict[str, Any]
    provenance_mismatch: list[str]
    analyses: list[Analysis]

    def confusion(self) -> np.ndarray:
        """Confusion matrix ``(C, C)`` summed over runs (rows: true class, columns: predicted; report order)."""
        total = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)
        for run in self.runs:
            labels = [str(c) for c in run.metrics.get("labels", self.classes)]
            cm = np.asarray(run.metrics["confusion"], dtype=np.int64)
            order = [labels.index(c) for c in self.classes]
            total += cm[np.ix_(order, order)]
        return total

    def values(self, key: str) -> list[float]:
        """A scalar test metric (``macro_f1``, ``wa``, ...) of every run."""
        return [float(r.metrics[key]) for r in self.runs if isinstance(r.metrics.get(key), (int, float))]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror})") from None


def _read_curves(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def _no_results(path: Path) -> ReportError:
    rd = RunDir(path)
    seeds = rd.runs()
    done = [s for s in seeds if s.done]
    if not seeds and not rd.is_run_folder():
        return ReportError(
            f"{path} is not an emofuse run folder (no results.json or config.yaml): "
            "pass the --out folder of 'emofuse train'"
        )
    return ReportError(
        f"{path} has no results yet (no results.json; {len(done)} of {len(seeds)} started run(s) finished): "
        "let 'emofuse train' finish first (it resumes)"
    )


def _analyses(path: Path) -> list[Analysis]:
    folders: list[Path] = []
    for depth in range(4):
        for name in ANALYSIS_FILES:
            for f in sorted(path.glob("/".join(["*"] * depth + [name]))):
                if f.parent not in folders:
                    folders.append(f.parent)
    out = []
    for folder in folders:
        dom, tok = (folder / ANALYSIS_FILES[0]), (folder / ANALYSIS_FILES[1])
        docs = {f: _read_json(f) if f.is_file() else None for f in (dom, tok)}
        for f, key in ((dom, "summary"), (tok, "items")):
            doc = docs[f]
            if doc is not None and not (isinstance(doc, Mapping) and key in doc):
                raise ReportError(f"{f} is not an 'emofuse analyze' output (no {key!r})")
        out.append(Analysis(where=folder.relative_to(path).as_posix(), dominance=docs[dom], tokens=docs[tok]))
    return out


def load_experiment(path: str | Path) -> ExperimentRuns:
    """Read one run folder.

    Args:
        path: ``RUN_DIR`` written by ``emofuse train``.

    Returns:
        Its runs (class order as in its ``results.json``).

    Raises:
        ReportError: ``path`` is missing or not a run folder, has no ``results.json`` yet, no scored run
            (a distillation-only experiment), or holds regression results.
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(f"run folder not found: {path}")
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder: pass a run folder written by 'emofuse train --out'")
    results = RunDir(path).results_file
    if not results.is_file():
        raise _no_results(path)
    doc = _read_json(results)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("runs"), list) or "classes" not in doc:
        raise ReportError(f"{results} is not an emofuse results file (no 'runs' / 'classes')")
    classes = [str(c) for c in doc["classes"]]
    runs = []
    for r in doc["runs"]:
        if not isinstance(r, Mapping) or "fold" not in r or "seed" not in r:
            raise ReportError(f"{results}: a run entry has no 'fold' / 'seed': {str(r)[:80]}")
        metrics = r.get("metrics") or {}
        if not metrics:
            continue
        if "confusion" not in metrics:
            raise ReportError(
                f"{results}: run {r.get('fold')}/seed{r.get('seed')} has no confusion matrix "
                "(regression results?): the report covers classification runs"
            )
        labels = [str(c) for c in metrics.get("labels", classes)]
        shape = np.shape(metrics["confusion"])
        if set(labels) != set(classes) or shape != (len(labels), len(labels)):
            raise ReportError(
                f"{results}: run {r['fold']}/seed{r['seed']} has a {shape} confusion matrix over {labels}, "
                f"not over the file's classes {classes}"
            )
        one = RunDir(path).run(str(r["fold"]), int(r["seed"]))
        env = one.env_file
        runs.append(
            SeedRun(
                fold=str(r["fold"]),
                seed=int(r["seed"]),
                dir=one.path,
                metrics=dict(metrics),
                curves=_read_curves(one.curves_file),
                env=_read_json(env) if env.is_file() else None,
            )
        )
    if not runs:
        raise ReportError(
            f"{path} has no test results yet ({results} lists no scored run; "
            "a config whose last stage distils has no test metrics)"
        )
    encoders = dict(doc.get("encoders") or {})
    prints: dict[str, set[str]] = {}
    for run in runs:
        for key, prov in ((run.env or {}).get("encoders") or {}).items():
            if isinstance(prov, Mapping):
                encoders.setdefault(key, dict(prov))
                prints.setdefault(key, set()).add(str(prov.get("fingerprint", "")))
    mismatch = sorted(k for k, v in prints.items() if len(v) > 1)
    return ExperimentRuns(
        dir=path,
        name=str(doc.get("name") or path.name),
        doc=dict(doc),
        classes=classes,
        runs=runs,
        encoders=encoders,
        provenance_mismatch=mismatch,
        analyses=_analyses(path),
    )


def load_experiments(paths: Sequence[str | Path]) -> list[ExperimentRuns]:
    """Read several run folders for one report: same label set, unique display names.

    Args:
        paths: Run folders (at least one, each once).

    Returns:
        One :class:`ExperimentRuns` per folder, all in the first folder's class order.

    Raises:
        ReportError: no folder, a folder given twice, a bad folder (see :func:`load_experiment`), or folders
            whose label sets differ (both sets named).
    """
    if not paths:
        raise ReportError("no run folder given")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise ReportError(f"run folder given twice: {p}")
        seen[key] = Path(p)
    exps = [load_experiment(p) for p in paths]
    first = exps[0]
    for exp in exps[1:]:
        if set(exp.classes) != set(first.classes):
            raise ReportError(
                f"runs have different label sets: {first.dir} has {sorted(first.classes)}, "
                f"{exp.dir} has {sorted(exp.classes)}; one report compares runs over the same classes"
            )
        exp.classes = list(first.classes)
    names = [e.name for e in exps]
    for exp in exps:
        if names.count(exp.name) > 1:
            exp.name = f"{exp.name} [{exp.dir.name}]"
    names = [e.name for e in exps]
    for i, exp in enumerate(exps):
        if names.count(exp.name) > 1:
            exp.name = f"{exp.name} #{i + 1}"
    return exps
