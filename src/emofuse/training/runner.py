"""Experiment runner: folds × seeds × stages, resumable, with paper-format results.

Layout of ``RUN_DIR`` (owned by :class:`emofuse.runs.RunDir`; every path here comes from it)::

    config.yaml                      the resolved config (a different config is refused, see below)
    results.json  results.md         per-run metrics + mean (std) aggregate; paper-format table
    <fold>/seed<k>/
        config.yaml  env.json        this run's resolved config; versions, devices, encoder provenance
        <stage>/                     one folder per stage (``train`` when the config has no stages)
            best.safetensors  last.safetensors  model.json   rebuildable without the YAML
            last.ckpt                Lightning state for an exact resume
            curves.csv  logs/        per-epoch values; logger output
            DONE
        metrics.json                 test metrics (classification_metrics + mult_f1)
        predictions.jsonl            id, label, pred, probs (class order of metrics.json "labels")
        curves.csv                   all stages' epochs (column ``stage``)
        DONE                         {"checkpoint": "<stage>/best.safetensors", ...}

Resume: a run with ``DONE`` is skipped; a stage with ``DONE`` is not trained again; an unfinished stage
restarts from its ``last.ckpt``. A stage after the first starts from the previous stage's best checkpoint
(``init: previous``). Under DDP every rank runs this loop (Lightning relaunches the command), but only
rank 0 writes files and scores the test split.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from emofuse.config.schema import ExperimentConfig, StageConfig
from emofuse.data.manifest import Utterance, read_manifest
from emofuse.data.protocols import Fold
from emofuse.metrics.tables import f1_conventions, headline_metric
from emofuse.models.checkpoint import find_checkpoint, load_checkpoint, load_weights
from emofuse.runs import RunDir, RunDirError, claim_run_dir, config_differences
from emofuse.tasks import get_task
from emofuse.training.callbacks import (
    CrashResume,
    SafetensorsCheckpoint,
    early_stopping,
    make_loggers,
    progress_bar,
    write_curves,
)
from emofuse.training.components import Components, DefaultComponents, is_launcher_rank_zero
from emofuse.training.datamodule import FoldDataModule
from emofuse.training.evaluate import (
    predict,
    predict_values,
    resolve_rescale,
    score,
    score_regression,
    write_predictions,
    write_regression_predictions,
)
from emofuse.training.lit_module import TaskModule, TrainingDiverged, no_validation_monitor
from emofuse.training.report import results_document, write_results
from emofuse.training.rundir import (
    resolve_classes,
    resolve_folds,
    run_env,
    text_inputs,
)
from emofuse.training.stage_data import StageData
from emofuse.utils.io import atomic_write_json
from emofuse.utils.seed import seed_everything

__all__ = ["RunDirError", "config_differences", "run_experiment"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Silence Lightning's chatter (tips, banners without progress, harmless warnings); restore global torch state."""
    names = ["lightning.pytorch.trainer.connectors"] + ([] if progress else ["lightning.pytorch", "lightning.fabric"])
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tips.addFilter(_no_tips)
    det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with warnings.catch_warnings():
            for pattern in _HARMLESS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        tips.removeFilter(_no_tips)
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])  # deterministic mode is per run


def _no_tips(record: logging.LogRecord) -> bool:
    """Drop Lightning's advertising tips."""
    return "Tip:" not in str(record.msg)


_HARMLESS = (
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r".*LeafSpec.*",
    r".*The number of training batches.*",
    r".*module\(s\) in eval mode at the start of training.*",  # frozen teachers / embeddings stay in eval mode
)


def _strategy(strategy: str, find_unused: bool) -> Any:
    return DDPStrategy(find_unused_parameters=find_unused) if strategy == "ddp" else strategy


class _Run:
    """One fold × seed: its stages, then the test split."""

    def __init__(self, exp: _Experiment, fold: Fold, seed: int) -> None:
        self.exp, self.fold, self.seed = exp, fold, seed
        self.rd = RunDir(exp.out_dir).run(fold.name, seed)
        self.dir = self.rd.path
        self.zero = is_launcher_rank_zero()

    def feature_stats(self, model: Any) -> dict[str, Any]:
        """``encoders.standardize`` statistics of this fold's training split (fitted once per fold)."""
        cache = self.exp.feature_stats
        if self.fold.name not in cache:
            train = [self.exp.by_id[i] for i in self.fold.train]
            cache[self.fold.name] = self.exp.components.feature_stats(self.exp.cfg, model, train)
        return cache[self.fold.name]

    def stage(self, index: int, stage: StageConfig, prev: Path | None) -> Path:
        exp, cfg = self.exp, self.exp.cfg
        sdir = self.rd.stage_dir(stage.name)
        if self.rd.stage_done(stage.name):
            return sdir
        if exp.progress and self.zero and len(exp.cfg.resolved_stages()) > 1:
            resume = " (resuming from last.ckpt)" if (sdir / "last.ckpt").is_file() else ""
            exp.say(f"  stage {stage.name} ({stage.task}){resume}")
        optim, tcfg = stage.resolve(cfg.optim, cfg.trainer)
        seed_everything(self.seed, deterministic=tcfg.deterministic)
        L.seed_everything(self.seed, workers=True, verbose=False)
        model = exp.components.model(cfg, stage, exp.classes)
        if cfg.encoders.standardize:  # fitted on this fold's training utterances only, kept in its checkpoints
            model.feature_stats = self.feature_stats(model)
        init = None
        if index > 0 and stage.init == "previous" and prev is not None:
            init = find_checkpoint(prev, "best")
            keys = load_weights(model, init, strict=False)
            if keys["missing"]:
                logger.info("stage %s: %d new parameters keep their initialisation", stage.name, len(keys["missing"]))

        spec = get_task(stage.task, stage.name)

        def factory(recs: list[Utterance], split: str) -> Any:
            ds = exp.components.dataset(cfg, stage, model, recs, exp.classes, split)
            md = cfg.data.moddrop
            if split == "train" and md is not None and spec.moddrop:
                from emofuse.pipeline.missing import ModDropDataset

                mods = md.modalities or list(model.modalities)
                ds = ModDropDataset(ds, mods, md.mode, md.subsets, md.include_original)
            return ds

        records, fold = exp.stage_data.fold_view(stage, self.fold, exp.records)  # stages[].data: distil on those
        if exp.progress and self.zero and (about := exp.stage_data.describe(stage, self.fold)):
            exp.say(f"    {about}")
        dm = FoldDataModule(records, fold, factory, cfg.data, seed=self.seed)
        task = exp.components.task(cfg, stage, model, exp.classes, dm.dataset("train"))
        # the task's default selection (distill: lowest val/loss; finetune_encoder: highest val/ua) unless set
        monitor, mode = spec.monitor(stage.trainer, cfg.trainer.model_fields_set, tcfg.monitor, tcfg.monitor_mode)
        if not self.fold.val and monitor.startswith("val/"):
            monitor, mode = no_validation_monitor(monitor, mode)
            warnings.warn(f"fold {self.fold.name!r} has no validation split: selecting on {monitor}", stacklevel=2)
        module = TaskModule(task, optim, exp.classes, tcfg.max_epochs, monitor, mode)
        meta = {
            "classes": exp.classes,
            "encoders": exp.components.provenance(),
            "task": {"name": stage.task, "stage": stage.name, "options": stage.task_options},
            "fold": self.fold.name,
            "seed": self.seed,
            "initialised_from": str(init) if init else None,
            # how the inputs were built: inference rebuilds them from the checkpoint alone (emofuse.inference.inputs)
            "inputs": cfg.encoders.model_dump(mode="json", exclude={"cache_dir", "extract_batch_size"}),
        }
        if cfg.encoders.standardize:
            meta["feature_stats"] = model.feature_stats
        callbacks: list[Any] = [
            SafetensorsCheckpoint(sdir, monitor, mode, meta, every_n_steps=tcfg.checkpoint_every_n_steps)
        ]
        stopper = early_stopping(monitor, tcfg.early_stopping_patience, mode)
        show = exp.progress and tcfg.progress_bar
        callbacks += [c for c in (stopper, progress_bar() if show else None) if c is not None]
        callbacks += list(exp.callbacks)
        trainer = L.Trainer(
            max_epochs=tcfg.max_epochs,
            accelerator=tcfg.accelerator,
            devices=tcfg.devices,
            strategy=_strategy(tcfg.strategy, tcfg.find_unused_parameters),
            num_nodes=tcfg.num_nodes,
            precision=tcfg.precision,  # type: ignore[arg-type]
            deterministic="warn" if tcfg.deterministic else False,
            gradient_clip_val=tcfg.gradient_clip_val,
            accumulate_grad_batches=tcfg.accumulate_grad_batches,
            log_every_n_steps=tcfg.log_every_n_steps,
            limit_train_batches=tcfg.limit_train_batches,
            limit_val_batches=tcfg.limit_val_batches,
            num_sanity_val_steps=tcfg.num_sanity_val_steps,
            reload_dataloaders_every_n_epochs=1,  # dynamic batching: each epoch has its own batch count
            callbacks=callbacks,
            logger=make_loggers(tcfg.logger, sdir, f"{cfg.name}/{self.fold.name}/seed{self.seed}/{stage.name}")
            or False,
            enable_progress_bar=show,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=sdir,
        )
        try:
            resumed = CrashResume(sdir).fit(trainer, module, dm)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{sdir}: {e}") from None
        if trainer.is_global_zero:
            ckpt_cb = callbacks[0]
            self.rd.mark_stage_done(
                stage.name,
                {
                    "epochs": trainer.current_epoch,
                    "best_epoch": ckpt_cb.best_epoch,
                    "best_score": ckpt_cb.best_score,
                    "monitor": monitor,
                    "world_size": trainer.world_size,
                    "resumed": resumed,
                },
            )
        return sdir

    def run(self) -> dict[str, Any] | None:
        exp, cfg = self.exp, self.exp.cfg
        if self.rd.done:
            return self.rd.metrics()
        if self.zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            one = cfg.model_copy(deep=True)
            one.seeds, one.data.folds = [self.seed], [self.fold.name]
            self.rd.write_config(one)
            atomic_write_json(
                self.rd.env_file, run_env(cfg, self.fold, self.seed, exp.components.provenance(), exp.overrides)
            )
        prev: Path | None = None
        stages = cfg.resolved_stages()
        for i, stage in enumerate(stages):
            prev = self.stage(i, stage, prev)
        if not self.zero:
            return None
        return self.finish(stages, prev)

    def finish(self, stages: list[StageConfig], last: Path | None) -> dict[str, Any]:
        exp, cfg = self.exp, self.exp.cfg
        assert last is not None
        ckpt = find_checkpoint(last, cfg.eval.checkpoint)
        model, _ = load_checkpoint(ckpt)
        test = [exp.by_id[i] for i in self.fold.test]
        if not test:
            raise ValueError(f"fold {self.fold.name!r} has no test utterances")
        metrics: dict[str, Any] = {}
        spec = get_task(stages[-1].task, stages[-1].name)
        if spec.target == "none":  # a distillation-only experiment has nothing to classify
            warnings.warn("the last stage distils: no test predictions or metrics", stacklevel=2)
        else:
            dataset = exp.components.dataset(cfg, stages[-1], model, test, exp.classes, "test")
            accel = cfg.trainer.accelerator
            device = "cuda" if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
            if spec.target == "regression":  # PCC / CCC / MAE + UAR / WAR of the binarised scores
                values = predict_values(model, dataset, cfg.data, cfg.eval.batch_size, device)
                opts = stages[-1].task_options
                train = [exp.by_id[i] for i in self.fold.train]
                rescale = resolve_rescale(opts.get("rescale_to"), train, cfg.data.target)
                metrics = score_regression(values, float(opts.get("threshold", 0.0)), rescale)
                if cfg.eval.save_predictions:
                    write_regression_predictions(self.rd.predictions_file, values)
            else:
                try:
                    preds = predict(model, dataset, cfg.data, cfg.eval.batch_size, device)
                except ValueError as e:  # NaN outputs: name the checkpoint
                    raise ValueError(f"{ckpt}: {e}") from None
                metrics = score(preds, exp.classes)
                if cfg.eval.save_predictions:
                    write_predictions(self.rd.predictions_file, preds, exp.classes)
        atomic_write_json(self.rd.metrics_file, metrics)
        rows = []
        for stage in stages:
            path = self.rd.stage_curves_file(stage.name)
            if path.is_file():
                with path.open(encoding="utf-8") as f:
                    rows += [{"stage": stage.name, **r} for r in csv.DictReader(f)]
        write_curves(self.rd.curves_file, rows, first=("stage", "epoch", "lr"))
        self.rd.mark_done(ckpt)
        return metrics


class _Experiment:
    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        components: Components,
        overrides: Sequence[str],
        callbacks: Sequence[Any],
        progress: bool,
    ) -> None:
        self.cfg, self.out_dir, self.components = cfg, out_dir, components
        self.overrides, self.callbacks, self.progress = list(overrides), list(callbacks), progress
        self.say: Any = print
        if cfg.data.manifest is None:
            raise ValueError("data.manifest is not set (set it in the config or with --set data.manifest=FILE)")
        if not Path(cfg.data.manifest).is_file():
            raise FileNotFoundError(
                f"data.manifest: manifest not found: {cfg.data.manifest} (prepare it with `emofuse prepare`, or "
                "point to yours with --set data.manifest=FILE; relative paths are relative to the working directory)"
            )
        records = text_inputs(read_manifest(cfg.data.manifest), cfg.data, cfg.data.manifest)
        self.classes, self.records = resolve_classes(cfg, records)
        self.by_id = {r.id: r for r in self.records}
        self.folds = resolve_folds(cfg, self.records)
        self.stage_data = StageData(cfg, records, self.folds)  # distillation data of stages[].data, leak-checked
        self.feature_stats: dict[str, dict[str, Any]] = {}  # encoders.standardize, per fold

    def leave_out(self, unusable: dict[str, str]) -> None:
        """Drop records whose inputs could not be prepared from every split, saying which (never a mid-run failure)."""
        if not unusable:
            return
        shown = "; ".join(f"{k} ({v})" for k, v in list(unusable.items())[:3]) + (" ..." if len(unusable) > 3 else "")
        warnings.warn(
            f"{len(unusable)} of {len(self.records)} utterance(s) are left out of training and testing: their "
            f"inputs could not be read: {shown}",
            stacklevel=3,
        )
        self.records = [r for r in self.records if r.id not in unusable]
        self.by_id = {r.id: r for r in self.records}
        self.folds = [
            dataclasses.replace(
                f,
                train=[i for i in f.train if i not in unusable],
                val=[i for i in f.val if i not in unusable],
                test=[i for i in f.test if i not in unusable],
            )
            for f in self.folds
        ]


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    overwrite: bool = False,
    components: Components | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    echo: Any = None,
) -> dict[str, Any] | None:
    """Train and test every fold × seed of ``cfg`` into ``out_dir``, resuming what a previous call left.

    Args:
        cfg: The experiment (``data.manifest`` must be set).
        out_dir: ``RUN_DIR`` (layout in the module docstring).
        overrides: The ``--set`` strings that made ``cfg`` (recorded in ``env.json``).
        overwrite: Start over: delete the runs already in ``RUN_DIR`` (required when its config differs).
        components: Model / task / dataset builders (default: :class:`DefaultComponents`).
        callbacks: Extra Lightning callbacks for every stage.
        progress: Progress bars and per-run lines.
        echo: ``echo(str)`` for per-run lines (default: ``print`` to stderr).

    Returns:
        The ``results.json`` document (``None`` on non-zero DDP ranks).

    Raises:
        RunDirError: ``out_dir`` holds runs of a different config (the differing keys are listed).
    """
    out_dir = Path(out_dir)
    cfg = cfg.model_copy(deep=True)  # paths made absolute, so the run folder works from anywhere
    if cfg.data.manifest is not None:
        cfg.data.manifest = Path(cfg.data.manifest).resolve()
    if cfg.encoders.cache_dir is not None:
        cfg.encoders.cache_dir = Path(cfg.encoders.cache_dir).resolve()
    if cfg.model.pretrained is not None:
        cfg.model.pretrained = Path(cfg.model.pretrained).resolve()
    for options in (cfg.encoders.audio_options, cfg.encoders.text_options):  # a fine-tuned encoder's run
        if options.get("checkpoint") is not None:
            options["checkpoint"] = str(Path(options["checkpoint"]).resolve())
    for stage in cfg.stages:
        if stage.data is not None:
            stage.data.manifests = [Path(p).resolve() for p in stage.data.manifests]
    zero = is_launcher_rank_zero()
    components = components or DefaultComponents(progress=progress)
    with _quiet(progress):
        exp = _Experiment(cfg, out_dir, components, overrides, callbacks, progress)  # bad input fails here
        if zero:
            claim_run_dir(cfg, out_dir, overwrite)
        return _run_all(exp, echo, zero)


def _run_all(exp: _Experiment, echo: Any, zero: bool) -> dict[str, Any] | None:
    cfg, components, progress = exp.cfg, exp.components, exp.progress
    components.prepare(cfg, exp.stage_data.with_records(exp.records))  # distillation data cached like the rest
    exp.leave_out(components.unusable(exp.records))
    say = exp.say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    runs = [(fold, seed) for fold in exp.folds for seed in cfg.seeds]
    results = []
    for k, (fold, seed) in enumerate(runs, 1):
        run = _Run(exp, fold, seed)
        done = run.rd.done
        if progress and zero:
            say(f"[{k}/{len(runs)}] fold {fold.name} seed {seed}: {'done, skipped' if done else 'training'}")
        metrics = run.run()
        if metrics is not None:
            entry = {"fold": fold.name, "seed": seed, "metrics": metrics}
            selection = run.rd.selection()
            if selection is not None:
                entry["selection"] = selection
            results.append(entry)
    if not zero:
        return None
    doc = results_document(
        cfg.name,
        exp.classes,
        results,
        description=cfg.description,
        protocol=cfg.data.protocol,
        folds=[f.name for f in exp.folds],
        seeds=list(cfg.seeds),
        encoders=components.provenance(),
        f1_conventions=f1_conventions(cfg.model.name),
        headline=headline_metric(cfg.model.name, cfg.data.labels),
    )
    write_results(exp.out_dir, doc, cfg.eval.digits)
    if cfg.eval.missing is not None:  # Table 4.4-style rows: missing.json / missing.md next to results.md
        from emofuse.training.missing import evaluate_missing

        miss = cfg.eval.missing
        evaluate_missing(exp.out_dir, miss.conditions, miss.mode, miss.k, out_dir=exp.out_dir, components=components)
    return doc
