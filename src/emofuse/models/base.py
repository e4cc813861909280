"""What every emotion model returns, and the base class it derives from.

Models never compute a loss (STYLE.md §3.5): they return a :class:`ModelOutput` holding logits,
class probabilities and the per-modality sequences the losses of a task need.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

__all__ = ["Capabilities", "EmotionModel", "InputKind", "ModelOutput", "TargetKind"]

#: ``"raw"``: ``batch[m]`` is the ``m`` encoder's ``preprocess`` output (waveform, token ids) and the model embeds
#: it itself; ``"features"``: ``batch["features"][m]`` holds the (cached) states of a frozen encoder.
InputKind = Literal["raw", "features"]
#: ``"classification"``: ``logits`` / ``probs`` over classes; ``"regression"``: continuous ``values``.
TargetKind = Literal["classification", "regression"]


@dataclass
class ModelOutput:
    """Output of every emotion model.

    Attributes:
        logits: Fused class scores ``(B, C)`` (for models that fuse probabilities, the log of the
            fused probabilities), or ``None`` for models without a classifier (e.g. a student during
            distillation).
        probs: Fused class probabilities ``(B, C)``, or ``None``.
        values: Continuous predictions ``(B, K)`` of regression models (valence, arousal, conflict
            level, ...), or ``None`` for classifiers.
        modality_logits: Per-modality class scores ``{"audio": (B, C), "text": (B, C)}``.
        hidden: Per-modality contextual sequences ``{"audio": (B, T_a, d), ...}``.
        masks: Per-modality valid-step masks ``{"audio": (B, T_a) bool, ...}``.
        pooled: Per-modality utterance vectors ``{"audio": (B, d), ...}``.
        extras: Anything else a task may need (attention maps, distribution parameters, ...).
    """

    logits: Tensor | None = None
    probs: Tensor | None = None
    values: Tensor | None = None
    modality_logits: dict[str, Tensor] = field(default_factory=dict)
    hidden: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    pooled: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a model consumes and produces, as declared by its class (read by training, inference and serving).

    Attributes:
        modalities: Modalities it reads, e.g. ``("audio", "text")``.
        input_kind: ``"raw"`` (encoders' ``preprocess`` output, embedded by the model) or ``"features"``
            (frozen encoder states in ``batch["features"]``).
        level: ``"utterance"`` (one item = one utterance) or ``"dialogue"`` (one item = an ordered list of
            utterances; outputs per utterance).
        target: ``"classification"`` or ``"regression"``.
        encoders: Encoder name per modality the model was built around (its teachers or own encoders), ``{}``
            when the experiment's config chooses them.
    """

    modalities: tuple[str, ...]
    input_kind: InputKind
    level: Literal["utterance", "dialogue"]
    target: TargetKind
    encoders: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["modalities"] = list(self.modalities)
        return out


class EmotionModel(nn.Module):
    """Base class of registered models.

    Subclasses set :attr:`modalities` (and, where they differ from the defaults, :attr:`input_kind`,
    :attr:`dialogue_level`, :attr:`target_kind`), keep the constructor keyword arguments in :attr:`config` (so a
    checkpoint can rebuild the model without the YAML), and implement ``forward(batch: dict[str, Tensor]) ->
    ModelOutput``. :meth:`capabilities` gathers the declarations.
    """

    #: Modalities the model consumes, e.g. ``("audio", "text")``.
    modalities: ClassVar[tuple[str, ...]] = ()
    #: How its inputs arrive (see :data:`InputKind`).
    input_kind: ClassVar[InputKind] = "features"
    #: One item is a dialogue (ordered utterances; context models such as CM-RoBERTa), not one utterance.
    dialogue_level: ClassVar[bool] = False
    #: Class scores or continuous values (see :data:`TargetKind`).
    target_kind: ClassVar[TargetKind] = "classification"
    #: Why ``emofuse export --onnx`` cannot export this family (``None``: it can). Shown by ``emofuse models``.
    export_limit: ClassVar[str | None] = "reads frozen encoder features (the graph would need that encoder too)"

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.model_name: str = type(self).__name__
        #: ``encoders.standardize`` statistics of the training split (``{modality: {"mean", "std"}}``), carried in
        #: checkpoints; ``None`` when the model reads unstandardised inputs.
        self.feature_stats: dict[str, dict[str, Any]] | None = None
        #: Where copied teacher embeddings came from (CMD students), per modality.
        self.teacher_provenance: dict[str, dict[str, Any]] = {}
        #: Where whole encoders held (and fine-tuned) by the model came from (MGCMA), per modality.
        self.encoder_provenance: dict[str, dict[str, Any]] = {}

    def encoder_names(self) -> dict[str, str]:
        """Encoder name per modality this model was built around (``{}`` when the experiment's config chooses).

        Read from its config: ``<m>_teacher`` / ``<m>_encoder``, or ``encoder`` of a single-modality model.
        """
        names: dict[str, str] = {}
        for m in self.modalities:
            name = self.config.get(f"{m}_teacher") or self.config.get(f"{m}_encoder")
            if name is None and self.config.get("modality") == m:
                name = self.config.get("encoder")
            if name is not None:
                names[m] = str(name)
        return names

    def capabilities(self) -> Capabilities:
        """The declared :class:`Capabilities` of this instance (a variant may narrow its class's modalities)."""
        return Capabilities(
            modalities=tuple(self.modalities),
            input_kind=self.input_kind,
            level="dialogue" if self.dialogue_level else "utterance",
            target=self.target_kind,
            encoders=self.encoder_names(),
        )

    def branch_parameters(self) -> dict[str, int]:
        """Parameter count per top-level branch (child module), for ``emofuse models``."""
        return {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()}

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total (or trainable) parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def encoder_layer_ids(self) -> dict[str, int]:
        """Depth of each parameter of a pretrained encoder the model fine-tunes (names relative to the model).

        ``0`` = input embedding, ``1..L`` = the encoder's blocks (see ``Encoder.layer_ids``); parameters left out are
        the head. The training engine gives these ``optim.encoder_lr`` with ``optim.layer_decay`` per block below
        the top. Default: none (the model has no encoder to fine-tune).
        """
        return {}

    def input_encoders(self) -> dict[str, Any]:
        """Encoders the model carries whose ``preprocess`` builds its raw inputs ``batch[m]``, per modality.

        Training, evaluation and prediction then tokenise / featurise exactly as the model's own (fine-tuned)
        encoder expects. Default: none (the configured or teacher encoders preprocess).
        """
        return {}
