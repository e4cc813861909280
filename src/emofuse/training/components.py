"""How the runner turns a config into a model, a task and datasets (replaceable, e.g. by tests).

:class:`Components` is the seam between the training engine and the rest of the library. The
default implementation builds:

* the **model** with :func:`emofuse.models.create_model` from ``model.name`` and its options (plus the
  stage's ``model`` overrides; ``num_classes`` defaults to the number of classes);
* the **datasets** as :class:`~emofuse.pipeline.MultimodalDataset`: with ``encoders.inputs: raw`` the
  encoders' ``preprocess`` fills ``batch[m]`` (students that embed raw input, CMD); with
  ``features`` the feature cache fills ``batch["features"][m]`` (MulT, probes); a ``distill`` stage
  also gets the cached teacher states in ``batch["teacher"]``. Missing caches are extracted once
  (resumable): under torchrun / SLURM each rank encodes a share and rank 0 merges them
  (:func:`~emofuse.features.parallel.extract_rank_share`); otherwise rank 0 extracts before the others start.
  Modalities listed in ``encoders.files`` are read
  from the feature files the records name (``Utterance.features``), absent ones masked
  (``batch["present"]``); ``data.target`` adds ``batch["targets"]``;
* the **task** from the task registry (:func:`emofuse.tasks.get_task`): each spec builds its objective and declares
  what it needs (cached teacher states for ``distill``, raw inputs for ``finetune_encoder``) and yields
  (classes, values, or nothing to score).

Encoders are built once per process and shared by every fold, seed and stage.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from emofuse.config.schema import ExperimentConfig, StageConfig
from emofuse.data.manifest import Utterance
from emofuse.models import create_model
from emofuse.models.base import EmotionModel
from emofuse.models.checkpoint import find_checkpoint, load_weights

__all__ = ["Components", "DefaultComponents", "is_launcher_rank_zero"]

_MODALITIES = ("audio", "text")
_WAIT_S = 24 * 3600.0


def _lacks(store: Any, records: Sequence[Utterance]) -> bool:
    """Whether some of ``records`` are neither in ``store`` nor recorded as failed there."""
    failed = store.failed
    return any(r.id not in store and r.id not in failed for r in records)


def is_launcher_rank_zero() -> bool:
    """True unless the environment says this is a non-zero DDP rank (torchrun, SLURM, Lightning children)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True


def _launched_ranks() -> tuple[int, int]:
    """``(rank, world size)`` when a launcher started every rank at once (torchrun, SLURM), else ``(0, 1)``.

    Lightning's own launcher starts the other ranks only when training begins, after rank 0 prepared the caches.
    """
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        rank, size = os.environ.get(rank_var), os.environ.get(size_var)
        if rank is not None and size is not None and rank.isdigit() and size.isdigit() and int(size) > 1:
            return int(rank), int(size)
    return 0, 1


class Components:
    """Builders the runner calls; subclass to plug in other models, tasks or data."""

    def prepare(self, cfg: ExperimentConfig, records: Sequence[Utterance]) -> None:
        """Once per experiment, before any run (e.g. extract missing features)."""

    def model(self, cfg: ExperimentConfig, stage: StageConfig, classes: Sequence[str]) -> EmotionModel:
        """A fresh model for ``stage``."""
        raise NotImplementedError

    def dataset(
        self,
        cfg: ExperimentConfig,
        stage: StageConfig,
        model: EmotionModel,
        records: list[Utterance],
        classes: Sequence[str],
        split: str,
    ) -> Dataset:
        """The dataset of ``records`` (one split) with a ``collate`` method and, ideally, ``lengths()``."""
        raise NotImplementedError

    def task(
        self, cfg: ExperimentConfig, stage: StageConfig, model: EmotionModel, classes: Sequence[str], train: Dataset
    ) -> nn.Module:
        """The objective of ``stage`` around ``model``."""
        raise NotImplementedError

    def feature_stats(
        self, cfg: ExperimentConfig, model: EmotionModel, records: Sequence[Utterance]
    ) -> dict[str, dict[str, Any]]:
        """``encoders.standardize`` statistics over ``records`` (a fold's training split)."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """Which encoder weights ran (written into ``env.json``, ``model.json`` and the results)."""
        return {}

    def unusable(self, records: Sequence[Utterance]) -> dict[str, str]:
        """``id -> reason`` of ``records`` whose inputs could not be prepared (after :meth:`prepare`)."""
        return {}


class DefaultComponents(Components):
    """The library's models, tasks and :class:`~emofuse.pipeline.MultimodalDataset` (see the module docstring).

    Args:
        progress: Show progress bars while extracting features.
    """

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self._encoders: dict[tuple[Any, ...], Any] = {}
        self._stores: dict[tuple[Any, ...], Any] = {}
        self._provenance: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------- model

    def model(self, cfg: ExperimentConfig, stage: StageConfig, classes: Sequence[str]) -> EmotionModel:  # noqa: D102
        from emofuse.tasks import get_task

        regression = get_task(stage.task, stage.name).target == "regression"
        base = {"num_classes": len(classes)} if classes and not regression else {}
        options = {**base, **cfg.model.options, **stage.model}
        for m in _MODALITIES:  # `<m>_dim: null` in a config: the feature size of the configured encoder
            if f"{m}_dim" in options and options[f"{m}_dim"] is None and getattr(cfg.encoders, m):
                options[f"{m}_dim"] = int(self.encoder(cfg, m, str(getattr(cfg.encoders, m))).output_dim)
        one = options.get("modality")  # single-modality models (probe): `input_dim: null` likewise
        one_enc = getattr(cfg.encoders, one) if one in _MODALITIES else None
        if "input_dim" in options and options["input_dim"] is None and one_enc:
            options["input_dim"] = int(self.encoder(cfg, str(one), str(one_enc)).output_dim)
        model = self._create(cfg, options)
        read = self._feature_dims(cfg, model, options)
        if read:  # the model's default size for a feature input differs from the configured encoder's: use it
            model = self._create(cfg, {**options, **read})
        if cfg.model.pretrained is not None:
            load_weights(model, find_checkpoint(cfg.model.pretrained), strict=False)
        self._provenance.update({f"embedding.{m}": p for m, p in model.teacher_provenance.items()})
        self._provenance.update({f"model.{m}": p for m, p in model.encoder_provenance.items()})  # MGCMA
        for p in [*model.teacher_provenance.values(), *model.encoder_provenance.values()]:
            _check_stand_in(cfg, p)
        return model

    @staticmethod
    def _create(cfg: ExperimentConfig, options: dict[str, Any]) -> EmotionModel:
        from emofuse.encoders import MissingWeightsError

        try:
            return create_model(cfg.model.name, **options)
        except MissingWeightsError as e:  # a teacher the model builds itself (CMD, MGCMA, probes)
            raise e.with_fix("--set model.allow_random=true") from None

    def _feature_dims(self, cfg: ExperimentConfig, model: EmotionModel, options: dict[str, Any]) -> dict[str, int]:
        """Feature sizes the model must take from its encoders (``<m>_dim`` it left at its default).

        Raises:
            ValueError: The config sets ``model.<m>_dim`` to another size than the encoder gives here (a
                stand-in of another width, another layer): names both sizes and the fix.
        """
        if cfg.encoders.inputs != "features":
            return {}
        read = {}
        for m in _MODALITIES:
            key, name = f"{m}_dim", getattr(cfg.encoders, m)
            if not name or m in cfg.encoders.files or not isinstance(model.config.get(key), int):
                continue
            encoder = self.encoder(cfg, m, str(name))
            dim = int(encoder.output_dim)
            if options.get(key) is None:
                if model.config[key] != dim:
                    read[key] = dim
            elif options[key] != dim:
                prov = encoder.provenance
                runs = f" (STAND-IN {prov.architecture})" if prov.stand_in else ""
                raise ValueError(
                    f"model.{key} is {options[key]}, but encoders.{m} {name!r} gives {dim}-d features here{runs}: "
                    f"set model.{key}: null in the config to read it from the encoder (or --set model.{key}={dim})"
                )
        return read

    # ------------------------------------------------------------------------------- encoders

    def encoder_names(self, cfg: ExperimentConfig, model: EmotionModel) -> dict[str, str]:
        """Encoder name per modality the model consumes (config first, then the model's own teacher)."""
        names: dict[str, str] = {}
        own = model.encoder_names()
        for m in model.modalities:
            if m not in _MODALITIES or m in cfg.encoders.files:
                continue
            name = getattr(cfg.encoders, m) or own.get(m)
            if name is None:
                raise ValueError(f"no {m} encoder: set encoders.{m} in the config (model {model.model_name!r})")
            names[m] = str(name)
        return names

    def encoder(self, cfg: ExperimentConfig, modality: str, name: str) -> Any:
        """The frozen encoder ``name`` (built once per process)."""
        from emofuse.encoders import EncoderError, MissingWeightsError, create_encoder

        layer = cfg.encoders.audio_layer if modality == "audio" else cfg.encoders.text_layer
        options = dict(cfg.encoders.audio_options if modality == "audio" else cfg.encoders.text_options)
        key = (name, layer, cfg.encoders.allow_random, repr(sorted(options.items())))
        if key not in self._encoders:
            try:
                enc = create_encoder(name, layer=layer, frozen=True, allow_random=cfg.encoders.allow_random, **options)
            except MissingWeightsError as e:
                raise e.with_fix("--set encoders.allow_random=true") from None
            except EncoderError as e:
                if "path" not in options:
                    raise
                where = f"encoders.{modality}_options.path"
                raise EncoderError(f"{e} ({where} is {options['path']!r}; --set {where}=FILE)") from None
            if enc.modality != modality:
                raise ValueError(f"encoders.{modality} = {name!r} is a {enc.modality} encoder")
            self._encoders[key] = enc
            self._provenance[modality] = enc.provenance.to_dict()
        _check_stand_in(cfg, self._encoders[key].provenance.to_dict())
        return self._encoders[key]

    def cache_root(self, cfg: ExperimentConfig) -> Path:
        """Feature cache root (``encoders.cache_dir``, default ``features/`` next to the manifest)."""
        if cfg.encoders.cache_dir is not None:
            return Path(cfg.encoders.cache_dir)
        if cfg.data.manifest is None:
            raise ValueError("data.manifest is not set")
        return Path(cfg.data.manifest).parent / "features"

    def store(self, cfg: ExperimentConfig, encoder: Any, records: Sequence[Utterance] | None = None) -> Any:
        """The feature cache of ``encoder``; extracted first (rank 0) when missing and ``records`` are given."""
        from emofuse.features import FeatureCacheError, FeatureStore, extract_features

        root = self.cache_root(cfg)
        if encoder.modality == "text" and cfg.data.text_field != "text":
            root = root / f"text-{cfg.data.text_field}"  # other transcripts (ASR): never mixed with the gold ones
        key = (id(encoder), str(root))
        if key in self._stores:
            return self._stores[key]
        max_duration = cfg.encoders.max_duration
        deadline = time.monotonic() + _WAIT_S
        while True:
            try:
                store = FeatureStore.for_encoder(root, encoder, max_duration=max_duration)
                if records is not None and _lacks(store, records):
                    # the manifest grew since the extraction (new speakers, a bigger manifest sharing the
                    # cache): extend the cache; extract_features reuses every stored item (same input hash)
                    raise FeatureCacheError(f"{store.path}: utterances missing, extending")
                break
            except FeatureCacheError:
                if records is None:
                    raise
                rank, world = _launched_ranks()
                if world > 1:  # torchrun / SLURM: every rank is running; each encodes a share, rank 0 merges
                    from emofuse.features.parallel import extract_rank_share

                    manifest = Path(cfg.data.manifest) if cfg.data.manifest is not None else None
                    store = extract_rank_share(
                        list(records),
                        encoder,
                        root,
                        rank,
                        world,
                        root=manifest.parent if manifest is not None else None,
                        batch_size=cfg.encoders.extract_batch_size,
                        max_duration=max_duration,
                    )
                    break
                if is_launcher_rank_zero():
                    manifest = Path(cfg.data.manifest) if cfg.data.manifest is not None else None
                    store = extract_features(
                        list(records),
                        encoder,
                        root,
                        batch_size=cfg.encoders.extract_batch_size,
                        progress=self.progress,
                        root=manifest.parent if manifest is not None else None,
                        max_duration=max_duration,
                    )
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(5.0)  # another rank is extracting
        self._stores[key] = store
        return store

    def unusable(self, records: Sequence[Utterance]) -> dict[str, str]:
        """Records the feature extraction skipped (unreadable audio, empty transcript), with the cache's reason."""
        ids = {r.id for r in records}
        out: dict[str, str] = {}
        for store in self._stores.values():
            for utt, why in store.failed.items():
                if utt in ids and utt not in store:
                    out.setdefault(utt, f"{store.name}: {why}")
        return out

    def prepare(self, cfg: ExperimentConfig, records: Sequence[Utterance]) -> None:
        """Extract every cache the stages will read (before any training, so DDP ranks never race)."""
        stages = cfg.resolved_stages()
        from emofuse.tasks import get_task

        needs_cache = cfg.encoders.inputs == "features" or any(get_task(s.task, s.name).teacher_states for s in stages)
        if not needs_cache:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe_model = self.model(cfg, stages[0], _classes_of(records))
        for m, name in self.encoder_names(cfg, probe_model).items():
            if m == "audio" and records and all(r.audio is None for r in records):
                raise ValueError(
                    f"{cfg.data.manifest}: a text-only manifest (all {len(records)} records have audio: null), but "
                    f"this config reads audio ({name!r}); use a text-only config, or prepare the corpus with its audio"
                )
            self.store(cfg, self.encoder(cfg, m, name), records)

    # -------------------------------------------------------------------------------- dataset

    def dataset(  # noqa: D102
        self,
        cfg: ExperimentConfig,
        stage: StageConfig,
        model: EmotionModel,
        records: list[Utterance],
        classes: Sequence[str],
        split: str,
    ) -> Dataset:
        from emofuse.pipeline import MultimodalDataset

        names = self.encoder_names(cfg, model)
        from emofuse.tasks import get_task

        spec = get_task(stage.task, stage.name)
        raw = cfg.encoders.inputs == "raw" or spec.raw_inputs
        own = model.input_encoders() if raw else {}  # a fine-tuned encoder preprocesses its own inputs
        encoders = {m: own[m] if m in own else self.encoder(cfg, m, n) for m, n in names.items()}
        teacher = {m: self.store(cfg, e) for m, e in encoders.items()} if spec.teacher_states else {}
        root = Path(cfg.data.manifest).parent if cfg.data.manifest is not None else None
        features = self._feature_stores(cfg, encoders, records, root)
        if cfg.encoders.standardize:
            from emofuse.pipeline.standardize import FeatureStatsError, standardize_stores

            stats = model.feature_stats
            absent = sorted(set(cfg.encoders.standardize) - set(stats or {}))
            if absent:
                raise FeatureStatsError(
                    f"encoders.standardize names {absent}, but the model carries no feature statistics for them "
                    "(a checkpoint trained without standardisation, or fit_feature_stats was not run)"
                )
            features = standardize_stores(features, stats)
        if model.dialogue_level:  # context models (CM-RoBERTa): one item = one dialogue
            from emofuse.pipeline.dialogue import DialogueDataset, form_dialogues

            if raw:
                raise ValueError(f"model {model.model_name!r} reads utterance vectors: set encoders.inputs: features")
            if cfg.data.dialogue_size is not None:  # single-utterance corpora: consecutive utterances per speaker
                records = form_dialogues(records, cfg.data.dialogue_size)
            return DialogueDataset(records, list(classes), features, target=cfg.data.target)
        dataset = MultimodalDataset(
            records,
            list(classes),
            audio_encoder=encoders.get("audio") if raw else None,
            text_encoder=encoders.get("text") if raw else None,
            teacher_stores=teacher,
            feature_stores=features,
            trim_silence=cfg.encoders.trim_silence,
            root=root,
            sample_rate=cfg.data.sample_rate,
            max_duration=cfg.encoders.max_duration,
            target=cfg.data.target,
        )
        if split == "train" and cfg.data.augment is not None and raw and "audio" in encoders:
            from emofuse.pipeline.augment import AugmentedDataset

            return AugmentedDataset(dataset, cfg.data.augment, cfg.data.sample_rate)
        return dataset

    def feature_stats(  # noqa: D102
        self, cfg: ExperimentConfig, model: EmotionModel, records: Sequence[Utterance]
    ) -> dict[str, dict[str, Any]]:
        """Per-dimension mean / std of the ``encoders.standardize`` modalities over ``records`` (a training split).

        Taken over what the model reads: every frame, or one vector per utterance for dialogue-level models.
        """
        from emofuse.pipeline.standardize import FeatureStatsError, fit_feature_stats

        if cfg.encoders.inputs == "raw" and not cfg.encoders.files:
            raise FeatureStatsError("encoders.standardize needs encoders.inputs: features (or encoders.files)")
        encoders = {m: self.encoder(cfg, m, n) for m, n in self.encoder_names(cfg, model).items()}
        root = Path(cfg.data.manifest).parent if cfg.data.manifest is not None else None
        stores = self._feature_stores(cfg, encoders, records, root)
        pooled = model.dialogue_level
        return fit_feature_stats(stores, [r.id for r in records], cfg.encoders.standardize, pooled=pooled)

    def _feature_stores(
        self, cfg: ExperimentConfig, encoders: dict[str, Any], records: Sequence[Utterance], root: Path | None
    ) -> dict[str, Any]:
        """What ``batch["features"]`` is read from: the encoders' caches (``inputs: features``) and the file stores."""
        stores = {} if cfg.encoders.inputs == "raw" else {m: self.store(cfg, e) for m, e in encoders.items()}
        stores.update(self.file_stores(cfg, records, root))
        return stores

    def file_stores(self, cfg: ExperimentConfig, records: Sequence[Utterance], root: Path | None) -> dict[str, Any]:
        """A :class:`~emofuse.features.files.FileFeatureStore` per modality of ``encoders.files``.

        The feature dimension is read once from the whole manifest (so a split in which nobody has the
        modality still gets correctly shaped, masked placeholders).
        """
        from emofuse.data.manifest import read_manifest
        from emofuse.features.files import FileFeatureStore

        out: dict[str, Any] = {}
        for m in cfg.encoders.files:
            key = ("file", m, str(cfg.data.manifest))
            if key not in self._stores:
                everything = read_manifest(cfg.data.manifest) if cfg.data.manifest is not None else list(records)
                self._stores[key] = FileFeatureStore(everything, m, root=root).output_dim
            out[m] = FileFeatureStore(
                records, m, root=root, dim=self._stores[key], max_frames=cfg.encoders.max_frames.get(m)
            )
        return out

    # ----------------------------------------------------------------------------------- task

    def task(  # noqa: D102
        self, cfg: ExperimentConfig, stage: StageConfig, model: EmotionModel, classes: Sequence[str], train: Dataset
    ) -> nn.Module:
        from emofuse.tasks import get_task

        return get_task(stage.task, stage.name).build(model, dict(stage.task_options), train, stage.name)

    def provenance(self) -> dict[str, Any]:  # noqa: D102
        return dict(self._provenance)


def _check_stand_in(cfg: ExperimentConfig, provenance: dict[str, Any]) -> None:
    """Refuse a stand-in when the config does not allow one (``encoders.allow_stand_in: false``)."""
    if cfg.encoders.allow_stand_in or not provenance.get("stand_in"):
        return
    name = str(provenance.get("name"))
    runs = provenance.get("architecture") or provenance.get("source")
    raise ValueError(
        f"encoder {name!r} would run as a STAND-IN here ({runs}), and the config sets encoders.allow_stand_in: false: "
        f"put its save_pretrained folder at DIR/{name.split('/')[-1]} and run with EMOFUSE_MODELS_DIR=DIR, or allow "
        "the stand-in (results not comparable to the paper's) with --set encoders.allow_stand_in=true"
    )


def _classes_of(records: Sequence[Utterance]) -> list[str]:
    return sorted({r.label for r in records if r.label is not None})
