"""Typed experiment configuration (pydantic). YAML files hold only overrides of these defaults.

Every section forbids unknown keys, so a typo is an error that names the key. The ``model``
section carries the model's registered name plus that model's own options; once a model registers
its option schema with :func:`register_model_options`, those options are type-checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "model_options_schema",
    "register_model_options",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
        scheduler: ``none``, ``warmup_linear``, ``warmup_cosine`` or ``plateau``.
        warmup_epochs: Epochs of linear warm-up.
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    scheduler: Literal["none", "warmup_linear", "warmup_cosine", "plateau"] = "none"
    warmup_epochs: int = Field(default=0, ge=0)


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
    """

    name: str = "experiment"
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v
