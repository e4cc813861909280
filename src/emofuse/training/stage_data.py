"""The runner's side of ``stages[].data``: read the extra manifests once, check every fold before training.

:class:`StageData` resolves, per distillation stage with ``data`` and per fold, the records the stage trains on
(:func:`emofuse.data.stage_data.distill_records`: leak-checked, labels outside the training split dropped), and
the union of them all, whose teacher states the runner caches before the first run (same cache folder and keying
as the main manifest's). Validation and test splits stay the fold's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from emofuse.config.schema import ExperimentConfig, StageConfig
from emofuse.data.manifest import Utterance, read_manifest
from emofuse.data.protocols import Fold
from emofuse.data.stage_data import absolute_audio, distill_records
from emofuse.training.rundir import text_inputs

__all__ = ["StageData"]

logger = logging.getLogger(__name__)


class StageData:
    """Distillation records per (stage, fold) for the stages that name ``data``.

    Args:
        cfg: The experiment (its manifest and stage paths absolute).
        main: Every record of the main manifest, transcripts chosen by ``data.text_field`` (before the label
            scheme drops any).
        folds: The folds that will run; every (stage, fold) is resolved and leak-checked here, so a bad setup
            fails before any training.

    Raises:
        ProtocolError: A leak, an id clash, or a stage without records (named).
        FileNotFoundError: An extra manifest does not exist.
    """

    def __init__(self, cfg: ExperimentConfig, main: Sequence[Utterance], folds: Sequence[Fold]) -> None:
        self.main = list(main)
        self.main_root = Path(cfg.data.manifest).parent if cfg.data.manifest is not None else None
        self.extra: dict[Path, list[Utterance]] = {}
        self._records: dict[tuple[str, str], list[Utterance]] = {}
        for stage in cfg.resolved_stages():
            if stage.data is None:
                continue
            for path in stage.data.manifests:
                if path not in self.extra:
                    if not Path(path).is_file():
                        raise FileNotFoundError(f"stages[{stage.name}].data.manifests: manifest not found: {path}")
                    records = text_inputs(read_manifest(path), cfg.data, path)
                    self.extra[path] = absolute_audio(records, Path(path).parent)
            for fold in folds:
                self._records[(stage.name, fold.name)] = distill_records(
                    fold,
                    self.main,
                    [(str(p), self.extra[p]) for p in stage.data.manifests],
                    stage.data.main,
                    main_root=self.main_root,
                )

    def records(self, stage: StageConfig, fold: Fold) -> list[Utterance] | None:
        """The records ``stage`` trains on in ``fold`` (``None``: the stage has no ``data``, use the training split)."""
        return self._records.get((stage.name, fold.name))

    def fold_view(self, stage: StageConfig, fold: Fold, records: Sequence[Utterance]) -> tuple[list[Utterance], Fold]:
        """``records`` and ``fold`` as the stage's data module sees them: training split = its distillation records.

        Args:
            stage: The stage.
            fold: The fold.
            records: The experiment's records (the fold's validation and test ids resolve there).
        """
        train = self.records(stage, fold)
        if train is None:
            return list(records), fold
        view = Fold(fold.name, [r.id for r in train], list(fold.val), list(fold.test), fold.speaker_dependent)
        return [*records, *train], view  # the distillation versions come last, so they win on shared ids

    def with_records(self, records: Sequence[Utterance]) -> list[Utterance]:
        """``records`` plus every distillation record of every stage and fold not among them (unlabelled), once.

        What the runner caches teacher states for before the first run.
        """
        out = {r.id: r for r in records}
        for chosen in self._records.values():
            for r in chosen:
                if r.id not in out:
                    out[r.id] = r.model_copy(update={"label": None}) if r.label is not None else r
        return list(out.values())

    def describe(self, stage: StageConfig, fold: Fold) -> str | None:
        """One line on what ``stage`` distils on in ``fold`` (``None`` without ``data``)."""
        train = self.records(stage, fold)
        if train is None:
            return None
        in_split = len(set(fold.train) & {r.id for r in train})
        unlabelled = sum(r.label is None for r in train)
        return (
            f"distilling on {len(train)} utterances ({in_split} of the fold's training split, "
            f"{len(train) - in_split} more, {unlabelled} without a label)"
        )
