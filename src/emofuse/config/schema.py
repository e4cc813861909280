"""Typed experiment configuration (pydantic). YAML files hold only overrides of these defaults.

Every section forbids unknown keys, so a typo is an error that names the key. The ``model``
section carries the model's registered name plus that model's own options; once a model registers
its option schema with :func:`register_model_options`, those options are type-checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "EncodersConfig",
    "EvalConfig",
    "ExperimentConfig",
    "MissingEvalConfig",
    "ModDropConfig",
    "ModelConfig",
    "OptimConfig",
    "StageConfig",
    "StageDataConfig",
    "TrainerConfig",
    "model_options_schema",
    "register_model_options",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModDropConfig(_Section):
    """ModDrop (Rajan 2022, §4.4.1): every training sample also presented with modalities dropped.

    Attributes:
        mode: ``zero`` (zeros, masks kept: the thesis) or ``absent`` (masks False, ``present`` False).
        subsets: ``single`` (one modality dropped per copy: 4 versions of a tri-modal sample) or ``all``
            (every non-empty proper subset).
        include_original: Keep the full-modality copy.
        modalities: Modalities to drop (``None``: the model's).
    """

    mode: Literal["zero", "absent"] = "zero"
    subsets: Literal["single", "all"] = "single"
    include_original: bool = True
    modalities: list[str] | None = None


class AugmentConfig(_Section):
    """Cheap waveform augmentation of the training split (models that read raw audio); every part off by default.

    Attributes:
        gain_db: Random gain, uniform in ``±gain_db`` dB (0: off).
        noise_snr_db: Additive white noise at a signal-to-noise ratio uniform in ``[low, high]`` dB (``None``: off).
        noise_prob: Probability that a clip gets noise.
        crop: Random crop of clips longer than this many seconds to this length (``None``: off; evaluation
            splits are never cropped randomly: ``encoders.max_duration`` cuts every split the same way).
    """

    gain_db: float = Field(default=0.0, ge=0)
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = Field(default=0.5, ge=0, le=1)
    crop: float | None = Field(default=None, gt=0)

    @field_validator("noise_snr_db")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"noise_snr_db must be [low, high] with low <= high, got {list(v)}")
        return v


class DataConfig(_Section):
    """Where the utterances come from and how they are split.

    Attributes:
        manifest: JSONL manifest written by ``emofuse prepare``.
        labels: Label scheme name (class order); ``None`` keeps the manifest's labels.
        protocol: Fold protocol (``iemocap-loso``, ``speaker-out``, ``official``, ``random-stratified``, ``kfold``).
        protocol_options: Options for the protocol (``groups``, ``ratios``, ``seed``, ...).
        folds: Restrict to these fold names (``None``: all folds).
        max_batch_samples: Dynamic batching budget in audio samples (CMD: 1,280,000 = 80 s at 16 kHz).
        batch_size: Fixed batch size, used when ``max_batch_samples`` is ``None``.
        sample_rate: Audio sample rate in Hz.
        num_workers: DataLoader worker processes.
        moddrop: ModDrop copies of the training split (``None``: off; ``{}``: the thesis' settings).
        text_field: Transcript used as the text input: ``text`` (gold), or another record field / ``extra``
            key, e.g. ``asr_text`` (written by ``emofuse transcribe``) for the paper's ASR rows. Records
            without it are an error naming the record.
        dialogue_size: Dialogue-level models (CM-RoBERTa) on a corpus of single utterances: records without a
            ``dialogue`` get pseudo-dialogues of this many consecutive utterances of one speaker
            (:func:`~emofuse.pipeline.dialogue.form_dialogues`). ``None``: the manifest's dialogues only.
        target: Continuous regression target (``"extra.valence"``, ``"extra.conflict"``, a record field);
            ``batch["targets"]`` holds it. Use with a ``regress`` stage. ``None``: categorical labels only.
        text_context: Earlier turns of the same dialogue appended to each text input, most recent first
            (:func:`~emofuse.data.context.add_dialogue_context`; ``0``: the utterance alone).
        text_context_speakers: Prefix each earlier turn with its speaker's name.
        augment: Waveform augmentation of the training split (``None``: off; :class:`AugmentConfig`).
    """

    manifest: Path | None = None
    labels: str | None = None
    protocol: str = "official"
    protocol_options: dict[str, Any] = Field(default_factory=dict)
    folds: list[str] | None = None
    max_batch_samples: int | None = Field(default=1_280_000, gt=0)
    batch_size: int = Field(default=16, gt=0)
    sample_rate: int = Field(default=16_000, gt=0)
    num_workers: int = Field(default=0, ge=0)
    moddrop: ModDropConfig | None = None
    target: str | None = None
    text_field: str = "text"
    dialogue_size: int | None = Field(default=None, gt=0)
    text_context: int = Field(default=0, ge=0)
    text_context_speakers: bool = False
    augment: AugmentConfig | None = None


_MODEL_OPTIONS: dict[str, type[BaseModel]] = {}


def register_model_options(name: str, schema: type[BaseModel]) -> type[BaseModel]:
    """Declare the option schema of a registered model so configs for it are type-checked."""
    _MODEL_OPTIONS[name] = schema
    return schema


def model_options_schema(name: str) -> type[BaseModel] | None:
    """The option schema registered for model ``name``, if any."""
    return _MODEL_OPTIONS.get(name)


class ModelConfig(BaseModel):
    """Model name plus the model's own options (checked against its registered schema).

    Attributes:
        name: Registered model name (``emofuse models`` lists them).
        pretrained: Checkpoint path to initialise from, if any.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = "cmd"
    pretrained: Path | None = None

    @model_validator(mode="after")
    def _check_options(self) -> ModelConfig:
        schema = model_options_schema(self.name)
        if schema is not None:
            validated = schema.model_validate(self.model_extra or {})
            for key, value in validated.model_dump().items():
                if key in (self.model_extra or {}):
                    self.model_extra[key] = value  # type: ignore[index]
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The model-specific options (everything but ``name`` and ``pretrained``)."""
        return dict(self.model_extra or {})


class OptimConfig(_Section):
    """Optimiser and learning-rate schedule.

    Attributes:
        name: ``adam``, ``adamw`` or ``sgd``.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        scheduler: ``none``, ``warmup_linear``, ``warmup_cosine``, ``plateau`` or ``inverse_time`` (legacy
            Keras optimiser ``decay``, per update: ``lr / (1 + decay · step)``; ConflictNET: lr 0.01, decay 0.6).
        warmup_epochs: Epochs of linear warm-up.
        decay: ``warmup_linear``: learning-rate factor per epoch after the warm-up (CMD's "decreased
            by 0.1 per epoch" read as ×0.9, spec ``cmd.md`` A3). ``inverse_time``: the Keras decay rate.
        min_lr: ``warmup_cosine``: learning rate at the last epoch.
        plateau_factor: ``plateau``: factor applied when the monitored value stops improving.
        plateau_patience: ``plateau``: epochs without improvement before reducing.
        plateau_monitor: ``plateau``: value the scheduler watches (``None``: ``trainer.monitor``; the Rajan
            thesis reduces on ``val/loss`` while early stopping watches ``val/wa``).
        betas: Adam / AdamW betas.
        encoder_lr: Learning rate of a fine-tuned encoder's top block (``None``: ``lr``); ``lr`` stays the head's.
            For models that declare their encoder's layers (``finetuned_encoder``).
        layer_decay: Layer-wise decay: block ``i`` of ``L`` gets ``encoder_lr · layer_decay^(L - i)``, the input
            embedding ``encoder_lr · layer_decay^L`` (1: no decay).

    ``name: lbfgs`` is full-batch L-BFGS with a strong-Wolfe line search (``lr`` is its step size, 1.0 as in
    scikit-learn's solver; 20 iterations per training step): for convex probes, with a batch that holds the whole
    training split and the classify task's ``l2`` penalty, it fits the same multinomial logistic regression as
    scikit-learn's ``LogisticRegression`` (``l2 = 1 / (C · n_train)``).
    """

    name: Literal["adam", "adamw", "sgd", "lbfgs"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    scheduler: Literal["none", "warmup_linear", "warmup_cosine", "plateau", "inverse_time"] = "none"
    warmup_epochs: int = Field(default=0, ge=0)
    decay: float = Field(default=0.9, gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)
    plateau_factor: float = Field(default=0.1, gt=0, lt=1)
    plateau_patience: int = Field(default=2, ge=0)
    plateau_monitor: str | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    encoder_lr: float | None = Field(default=None, gt=0)
    layer_decay: float = Field(default=1.0, gt=0, le=1)


LoggerName = Literal["csv", "tensorboard", "mlflow"]
_DEFAULT_LOGGERS: tuple[LoggerName, ...] = ("csv",)


class TrainerConfig(_Section):
    """Training loop settings, passed to Lightning by the training layer.

    Attributes:
        max_epochs: Epoch limit.
        early_stopping_patience: Epochs without validation improvement before stopping (``None``: off).
        monitor: Metric to monitor for checkpoints and early stopping.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: Number of devices or ``auto``.
        strategy: Lightning strategy (``auto``, ``ddp``, ``fsdp``, ...).
        num_nodes: Nodes for multi-node training.
        precision: Lightning precision string.
        deterministic: Deterministic kernels.
        gradient_clip_val: Gradient clipping (``None``: off).
        monitor_mode: ``min``, ``max``, or ``auto`` (``min`` when the monitored name contains "loss").
        logger: Loggers: ``csv`` (default), ``tensorboard``, ``mlflow``; ``none`` or ``[]`` for none.
        progress_bar: Show the rich progress bar.
        log_every_n_steps: Logging interval in steps.
        accumulate_grad_batches: Gradient accumulation.
        limit_train_batches: Lightning's ``limit_train_batches`` (smoke tests; ``None``: all).
        limit_val_batches: Lightning's ``limit_val_batches`` (``None``: all).
        num_sanity_val_steps: Validation batches run before training as a sanity check.
        find_unused_parameters: DDP ``find_unused_parameters`` (needed when part of the model gets no
            gradient, e.g. a classifier during distillation).
        checkpoint_every_n_steps: Also write ``last.ckpt`` every this many optimiser steps within an epoch, so a
            run killed without warning (kill -9, a lost machine) resumes at that step, not at the epoch's start
            (``None``: at epoch ends only; Ctrl-C always saves the step it stops at).
    """

    max_epochs: int = Field(default=50, gt=0)
    early_stopping_patience: int | None = Field(default=None, gt=0)
    monitor: str = "val/loss"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(default=1, gt=0)
    precision: str = "32-true"
    deterministic: bool = False
    gradient_clip_val: float | None = None
    monitor_mode: Literal["auto", "min", "max"] = "auto"
    logger: list[LoggerName] = Field(default_factory=lambda: list(_DEFAULT_LOGGERS))
    progress_bar: bool = True
    log_every_n_steps: int = Field(default=50, gt=0)
    accumulate_grad_batches: int = Field(default=1, gt=0)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    num_sanity_val_steps: int = Field(default=0, ge=-1)
    find_unused_parameters: bool = True
    checkpoint_every_n_steps: int | None = Field(default=None, gt=0)

    @field_validator("logger", mode="before")
    @classmethod
    def _logger_list(cls, v: Any) -> Any:
        if v is None or v == "none":
            return []
        return [v] if isinstance(v, str) else v


_STAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class StageDataConfig(_Section):
    """What a ``distill`` stage trains on instead of the fold's training split (:mod:`emofuse.data.stage_data`).

    Distillation needs no labels, so it can use any speech; the fold's validation and test speakers are refused.

    Attributes:
        manifests: Extra manifests of any speech, labelled or not (labels are ignored); relative paths are
            relative to the working directory, audio paths in them to their own folder.
        main: Records of the main manifest: ``train`` (the fold's training split), ``train_speakers`` (every record
            of the fold's training speakers, also unlabelled ones and labels outside ``data.labels``; speaker-
            independent folds only) or ``none``.
    """

    manifests: list[Path] = Field(default_factory=list)
    main: Literal["train", "train_speakers", "none"] = "train"


class StageConfig(_Section):
    """One training stage (CMD: ``distill`` then ``finetune``); settings override the top-level sections.

    Attributes:
        name: Stage name, also the folder of its checkpoints (``RUN/<fold>/seed<k>/<name>/``).
        task: Objective: ``distill`` (contrastive distillation), ``classify`` / ``finetune`` (cross-entropy),
            ``finetune_encoder`` (cross-entropy on raw input through a model's own pretrained encoder, trained end to
            end: ``finetuned_encoder``; selects on ``val/ua`` unless a monitor is set),
            ``regress`` (continuous ``data.target``; ``task_options.loss``: ``mse``, ``pcc``, ``ccc``, ``mae``).
        task_options: Keyword options of the task (``temperature``, ``time_axis``, ``loss``, ...).
        model: Overrides of the model's options for this stage (e.g. ``with_head: false`` to distil).
        optim: Overrides of the top-level ``optim`` section.
        trainer: Overrides of the top-level ``trainer`` section (``max_epochs``, ``monitor``, ...).
        init: ``previous``: start from the best checkpoint of the previous stage (missing keys, such as
            a new classifier head, keep their fresh initialisation); ``none``: fresh model.
        data: ``distill`` stages only: train on these records instead of the fold's training split
            (:class:`StageDataConfig`; ``None``: the training split).
    """

    name: str = Field(default="train", pattern=_STAGE_NAME)
    task: str = "classify"
    task_options: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    optim: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    init: Literal["previous", "none"] = "previous"
    data: StageDataConfig | None = None

    @model_validator(mode="after")
    def _check_overrides(self) -> StageConfig:
        if self.data is not None and self.task != "distill":
            raise ValueError(f"stage {self.name!r}: data is for distill stages only (task is {self.task!r})")
        if self.data is not None and self.data.main == "none" and not self.data.manifests:
            raise ValueError(f"stage {self.name!r}: data has no records (main: none and no manifests)")
        for section, schema in (("optim", OptimConfig), ("trainer", TrainerConfig)):
            unknown = sorted(set(getattr(self, section)) - set(schema.model_fields))
            if unknown:
                allowed = ", ".join(schema.model_fields)
                raise ValueError(f"stage {self.name!r}: unknown {section} key(s) {unknown}; allowed: {allowed}")
        return self

    def resolve(self, optim: OptimConfig, trainer: TrainerConfig) -> tuple[OptimConfig, TrainerConfig]:
        """The stage's optimiser and trainer settings: top-level sections with this stage's overrides."""
        return (
            OptimConfig.model_validate({**optim.model_dump(), **self.optim}),
            TrainerConfig.model_validate({**trainer.model_dump(), **self.trainer}),
        )


class EncodersConfig(_Section):
    """Encoders that turn raw audio / text into model inputs and cached teacher states.

    Attributes:
        audio: Audio encoder name (``None``: the model's ``audio_teacher`` option, if it has one).
        text: Text encoder name (``None``: the model's ``text_teacher`` option, if it has one).
        inputs: ``raw``: ``batch[m]`` is the encoder's ``preprocess`` output (students that embed raw
            input, CMD); ``features``: ``batch["features"][m]`` holds cached encoder states (frozen-feature
            baselines: MulT, probes).
        cache_dir: Feature cache root (``None``: ``features/`` next to the manifest). Missing features
            are extracted once, resumably.
        audio_layer: Hidden layer of the audio encoder (``None``: last).
        text_layer: Hidden layer of the text encoder (``None``: last).
        max_duration: Cut audio to this many seconds (``None``: never).
        trim_silence: Trim leading / trailing silence when loading audio.
        allow_random: Allow random weights when no pretrained weights resolve (loud warning, recorded).
        allow_stand_in: Let a packaged stand-in run when the named weights are not on this machine (another
            model, e.g. MiniLM-L6 for ``bert-base-uncased``; marked STAND-IN in ``env.json``, ``model.json`` and the
            reports). ``false``: such a config stops, naming the weights and ``EMOFUSE_MODELS_DIR``.
        extract_batch_size: Utterances per encoder call when extracting.
        audio_options: Options of the audio encoder (e.g. ``{n_mfcc: 80}``), passed to ``create_encoder``.
        text_options: Options of the text encoder (e.g. ``{path: glove.840B.300d.txt}`` for ``glove``).
        files: Modalities read from the feature files the records name (``Utterance.features``,
            :class:`~emofuse.features.files.FileFeatureStore`) into ``batch["features"][m]``, instead of
            an encoder; a record without the modality is absent (masked, ``batch["present"][m]``).
        max_frames: Per-modality frame limit of file features (``{"video": 32}``).
        standardize: Modalities whose features (cached or file) are z-scored per dimension with the mean / std
            of each fold's training utterances, stored in the fold's checkpoints
            (:mod:`emofuse.pipeline.standardize`); for hand-crafted features (eGeMAPS, openSMILE, COVAREP).
    """

    audio: str | None = None
    text: str | None = None
    inputs: Literal["raw", "features"] = "raw"
    cache_dir: Path | None = None
    audio_layer: int | str | None = None
    text_layer: int | str | None = None
    max_duration: float | None = Field(default=None, gt=0)
    trim_silence: bool = False
    allow_random: bool = False
    allow_stand_in: bool = True
    extract_batch_size: int = Field(default=8, gt=0)
    audio_options: dict[str, Any] = Field(default_factory=dict)
    text_options: dict[str, Any] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    max_frames: dict[str, int] = Field(default_factory=dict)
    standardize: list[str] = Field(default_factory=list)


class MissingEvalConfig(_Section):
    """Missing-modality scoring of the finished runs (Table 4.4; :func:`emofuse.training.missing.evaluate_missing`).

    Attributes:
        conditions: Modality sets to drop (``None``: every non-empty proper subset of the model's modalities).
        mode: ``zero``, ``absent`` or ``knn`` (imputation from the training split).
        k: Neighbours for ``knn`` (one row per value).
    """

    conditions: list[list[str]] | None = None
    mode: Literal["zero", "absent", "knn"] = "zero"
    k: list[int] = Field(default_factory=lambda: [5, 10, 100])


class EvalConfig(_Section):
    """How trained runs are scored.

    Attributes:
        checkpoint: Which checkpoint scores the test split: ``best`` (monitored value) or ``last``.
        batch_size: Utterances per batch when scoring (``None``: the data section's batching).
        save_predictions: Write ``predictions.jsonl`` (id, label, prediction, probabilities).
        digits: Decimals in ``results.md``.
        missing: After training, also score with modalities missing (``missing.json`` / ``missing.md``).
    """

    checkpoint: Literal["best", "last"] = "best"
    batch_size: int | None = Field(default=None, gt=0)
    save_predictions: bool = True
    digits: int = Field(default=4, ge=0, le=8)
    missing: MissingEvalConfig | None = None


class ExperimentConfig(_Section):
    """A whole experiment: data, model, optimiser, trainer, seeds.

    Attributes:
        name: Experiment name, used in reports.
        description: Free text (e.g. the paper table row this config reproduces).
        seeds: Seeds to run (each fold is trained once per seed).
        data: Data section.
        model: Model section.
        optim: Optimiser section.
        trainer: Trainer section.
        stages: Training stages run in order (empty: one ``classify`` stage named ``train``).
        encoders: Encoders and the feature cache.
        eval: Scoring of trained runs.
    """

    name: str = "experiment"
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    stages: list[StageConfig] = Field(default_factory=list)
    encoders: EncodersConfig = Field(default_factory=EncodersConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_stages(self) -> ExperimentConfig:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique, got {names}")
        for stage in self.stages:
            try:
                stage.resolve(self.optim, self.trainer)  # bad merged values fail here, at load time
            except ValidationError as e:
                bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"stage {stage.name!r}: {bad}") from None
        return self

    def resolved_stages(self) -> list[StageConfig]:
        """The stages to run: :attr:`stages`, or one ``classify`` stage named ``train``."""
        return list(self.stages) if self.stages else [StageConfig()]

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v
