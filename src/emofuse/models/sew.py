"""SEW and SeqSEW: the stronger modality enhances the weaker one (Rajan thesis Ch. 5; spec ``rajan-thesis.md`` §4).

Multimodal training, **unimodal testing**: at inference only the weaker-modality encoder and its
regressor run, so a prediction never depends on the stronger modality (it may be absent).

**SEW** (non-sequential, §4.2): MLP encoders/decoders with tanh between layers (utterance- or frame-level
vectors; sequences in ``batch["features"]`` are averaged over their valid steps)::

    W_E : x_w → m_sw (d)        S_D1: m_sw → x̂_s (translation)       R: m_sw → ŷ (4 one-step GRU-120, linear)
    S_E : x_s → m_ss (d)        S_D2: m_ss → x̂_s (auto-encoder)

trained in one stage by :class:`~emofuse.tasks.sew.SEWTask`: ``MSE(x̂_s, x_s) + MSE(S_D2, x_s) −
DCCA_10(m_ss, m_sw) + MSE(ŷ, y)`` (all weights 1; SGD lr 1e-3, momentum 0.7).

**SeqSEW** (sequential, §4.3): one template per modality, :class:`SeqBranch` = bi-GRU (hidden = input
size; 1 or 2 layers) → time-distributed Dense(100) → sinusoidal positions → 2 post-norm Transformer layers
(2 heads, FFN 400) → per-step head Dense(300, ReLU) → Dropout(0.3) → Dense(K, tanh). :class:`SeqSEW`
holds the *teacher* branch (stronger modality), the *student* branch (weaker modality) and the
translator S_D (bi-GRU → Dense to the stronger feature size). ``phase="teacher"`` trains the teacher
(student frozen; stage 1, task ``regress``), ``phase="student"`` freezes the teacher and trains the
student with :class:`~emofuse.tasks.sew.SeqSEWTask` ``L = L_p + α·(−DCCA(m_ss, m_sw)) + β·MAE(S_D(m_sw), x_s)``
(stage 2, ``init: previous``). :class:`SeqUnimodal` is the same branch on one modality alone: the unimodal
baseline the student is compared with.

What a time step is (``sequence``): ``frames`` (default) reads one utterance's frame or token sequence
``(B, T, D)`` per item and predicts the mean of its per-step outputs (RECOLA 3 s windows of 40 ms frames);
``dialogue`` reads a dialogue of utterance vectors per item (:class:`~emofuse.pipeline.dialogue.DialogueDataset`:
``(B, N, D)`` with the dialogue mask, e.g. a CMU-MOSI video of utterances, thesis Table 5.6) and predicts every
utterance: ``values`` ``(U, K)``, the valid steps flattened in row-major order like the batch's ``ids`` and
``targets``. Teacher and student then share the dialogue's steps, so DCCA and the translation run per
utterance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.layers.pooling import masked_mean
from emofuse.layers.transformer import PostLNBlock, sinusoidal_positions
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["SEW", "SeqBranch", "SeqSEW", "SeqUnimodal", "mlp"]


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with tanh *between* them (none after the last), as in SEW."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _features(batch: dict[str, Any], modality: str) -> tuple[Tensor, Tensor | None]:
    feats = batch.get("features") or {}
    if modality not in feats:
        raise KeyError(f"batch['features'] has no {modality!r} (has {sorted(k for k in feats if '_' not in k)})")
    return feats[modality], feats.get(f"{modality}_mask")


SEQUENCES = ("frames", "dialogue")


def _check_sequence(sequence: str) -> str:
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of {SEQUENCES}, got {sequence!r}")
    return sequence


def _values(steps: Tensor, pooled: Tensor, mask: Tensor, dialogue: bool) -> Tensor:
    """``(U, K)`` per valid step (dialogue level) or ``(B, K)`` pooled (frame level)."""
    return steps[mask] if dialogue else pooled


def _has(batch: dict[str, Any], modality: str) -> bool:
    return modality in (batch.get("features") or {})


def _vector(batch: dict[str, Any], modality: str) -> Tensor:
    x, mask = _features(batch, modality)
    return masked_mean(x, mask) if x.ndim == 3 else x  # (B, D)


class SEW(EmotionModel):
    """Stronger-Enhancing-Weaker, MLP version.

    Args:
        weak: Weaker modality (tested alone).
        strong: Stronger modality (training only).
        weak_dim: Weaker feature size (RECOLA eGeMAPS 88, video-geometric 632, video-appearance 168).
        strong_dim: Stronger feature size.
        weak_hidden: Hidden sizes of W_E (its decoder mirrors nothing: S_D1 maps to the *stronger* space).
        strong_hidden: Hidden sizes of S_E (S_D2 mirrors them).
        latent: Code size ``d`` (168 for pairs with video-appearance, else 128).
        translator_hidden: Hidden sizes of S_D1 (``None``: the reverse of ``strong_hidden``).
        regressor_hidden: GRU units of R (120).
        regressor_layers: GRU layers of R (4, each fed a one-step sequence).
        num_outputs: Regression targets.
    """

    target_kind = "regression"

    def __init__(
        self,
        weak: str = "audio",
        strong: str = "text",
        weak_dim: int = 88,
        strong_dim: int = 632,
        weak_hidden: Sequence[int] = (108,),
        strong_hidden: Sequence[int] = (512, 256),
        latent: int = 128,
        translator_hidden: Sequence[int] | None = None,
        regressor_hidden: int = 120,
        regressor_layers: int = 4,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        if weak == strong:
            raise ValueError(f"weak and strong modalities must differ, got {weak!r} twice")
        dec = list(reversed(strong_hidden)) if translator_hidden is None else list(translator_hidden)
        self.config = {
            "weak": weak,
            "strong": strong,
            "weak_dim": weak_dim,
            "strong_dim": strong_dim,
            "weak_hidden": list(weak_hidden),
            "strong_hidden": list(strong_hidden),
            "latent": latent,
            "translator_hidden": None if translator_hidden is None else list(translator_hidden),
            "regressor_hidden": regressor_hidden,
            "regressor_layers": regressor_layers,
            "num_outputs": num_outputs,
        }
        self.weak, self.strong = weak, strong
        self.modalities = (weak, strong)  # type: ignore[misc]
        self.weak_encoder = mlp([weak_dim, *weak_hidden, latent])  # W_E
        self.translator = mlp([latent, *dec, strong_dim])  # S_D1
        self.strong_encoder = mlp([strong_dim, *strong_hidden, latent])  # S_E
        self.strong_decoder = mlp([latent, *reversed(strong_hidden), strong_dim])  # S_D2
        self.regressor = nn.GRU(latent, regressor_hidden, regressor_layers, batch_first=True)  # R
        self.head = nn.Linear(regressor_hidden, num_outputs)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Predict from the weaker modality; add the stronger-modality codes when its features are in the batch.

        Returns:
            ``values`` ``(B, K)`` from ``W_E`` + ``R`` only; ``pooled[weak]`` = ``m_sw`` ``(B, d)``;
            ``extras``: ``m_sw``, ``translation`` ``(B, D_s)``, and with the stronger modality present
            ``m_ss``, ``reconstruction`` ``(B, D_s)``, ``strong_input`` ``(B, D_s)``.
        """
        m_sw = self.weak_encoder(_vector(batch, self.weak))  # (B, d)
        h, _ = self.regressor(m_sw[:, None])  # one time step: (B, 1, H)
        out = ModelOutput(values=self.head(h[:, 0]), pooled={self.weak: m_sw})
        out.extras = {"m_sw": m_sw, "translation": self.translator(m_sw)}
        if _has(batch, self.strong):
            x_s = _vector(batch, self.strong)
            m_ss = self.strong_encoder(x_s)
            out.extras.update(m_ss=m_ss, reconstruction=self.strong_decoder(m_ss), strong_input=x_s)
            out.pooled[self.strong] = m_ss
        return out


class SeqBranch(nn.Module):
    """SeqSEW encoder + per-step head for one modality (module docstring).

    Args:
        input_dim: Feature size of the modality.
        gru_layers: bi-GRU layers (2; 1 for RECOLA audio and MOSI text; 0: none, the Dense(100) reads the
            features directly, Table 5.4's "Classifier" rows with ``num_layers=0``).
        gru_hidden: Units per direction (``None``: ``input_dim``, the thesis).
        dim: Latent size (100).
        num_heads: Transformer heads (2).
        num_layers: Transformer layers (2; 0: none, Table 5.4's "Bi-GRU + Classifier").
        ffn_dim: Transformer FFN size (400).
        dropout: Transformer dropout (tuned per model in the thesis).
        head_hidden: Head hidden size (300).
        head_dropout: Head dropout (0.3).
        num_outputs: Outputs per step.
        activation: ``tanh`` (regression), ``sigmoid`` (binary) or ``linear``.
    """

    def __init__(
        self,
        input_dim: int,
        gru_layers: int = 2,
        gru_hidden: int | None = None,
        dim: int = 100,
        num_heads: int = 2,
        num_layers: int = 2,
        ffn_dim: int = 400,
        dropout: float = 0.3,
        head_hidden: int = 300,
        head_dropout: float = 0.3,
        num_outputs: int = 1,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "sigmoid", "linear"):
            raise ValueError(f"activation must be tanh, sigmoid or linear, got {activation!r}")
        if gru_layers < 0 or num_layers < 0:
            raise ValueError(f"gru_layers and num_layers must be >= 0, got {gru_layers} and {num_layers}")
        hidden = gru_hidden or input_dim
        self.gru = nn.GRU(input_dim, hidden, gru_layers, batch_first=True, bidirectional=True) if gru_layers else None
        self.proj = nn.Linear(2 * hidden if gru_layers else input_dim, dim)
        self.blocks = nn.ModuleList(PostLNBlock(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(
            nn.Linear(dim, head_hidden), nn.ReLU(), nn.Dropout(head_dropout), nn.Linear(head_hidden, num_outputs)
        )
        self.activation = activation
        self.dim = dim

    def encode(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Codes ``(B, T, dim)`` of ``x`` ``(B, T, D)`` (padding excluded from the GRU and the attention)."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.gru is None:  # thesis Table 5.4 "Classifier" / no recurrent front-end
            h = x
        else:
            lengths = mask.sum(1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            h, _ = self.gru(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])  # (B, T, 2H)
        m = self.proj(h) + sinusoidal_positions(x.shape[1], self.dim).to(h)  # (B, T, dim)
        q_mask = mask.clone()
        q_mask[:, 0] = True  # a sequence without valid steps still attends to something (no NaN)
        for block in self.blocks:
            m = block(m, q_mask=q_mask)
        return m

    def predict(self, m: Tensor) -> Tensor:
        """Per-step outputs ``(B, T, K)`` of codes ``m``."""
        y = self.head(m)
        if self.activation == "tanh":
            return torch.tanh(y)
        return torch.sigmoid(y) if self.activation == "sigmoid" else y

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(codes (B, T, dim), per-step outputs (B, T, K), pooled outputs (B, K))`` (mean over valid steps)."""
        m = self.encode(x, mask)
        steps = self.predict(m)
        return m, steps, masked_mean(steps, mask)


_BRANCH_KEYS = (
    "dim", "num_heads", "num_layers", "ffn_dim", "dropout", "head_hidden", "head_dropout", "num_outputs", "activation"
)  # fmt: skip


class SeqUnimodal(EmotionModel):
    """One :class:`SeqBranch` on one modality: the SeqSEW teacher architecture and the unimodal baseline.

    Args:
        modality: Feature modality read from ``batch["features"]``.
        input_dim: Its feature size.
        gru_layers: bi-GRU layers.
        sequence: ``frames`` (one utterance's frames per item) or ``dialogue`` (a dialogue of utterance vectors
            per item, one prediction per utterance; module docstring).
        **branch: :class:`SeqBranch` options (``dim``, ``num_heads``, ``dropout``, ...).
    """

    target_kind = "regression"

    def __init__(
        self, modality: str = "audio", input_dim: int = 88, gru_layers: int = 2, sequence: str = "frames", **branch: Any
    ) -> None:
        super().__init__()
        unknown = sorted(set(branch) - set(_BRANCH_KEYS))
        if unknown:
            raise TypeError(f"unknown SeqUnimodal option(s) {unknown}")
        self.config = {
            "modality": modality, "input_dim": input_dim, "gru_layers": gru_layers, "sequence": sequence, **branch
        }  # fmt: skip
        self.dialogue_level = _check_sequence(sequence) == "dialogue"  # type: ignore[misc]  # per instance
        self.modality = modality
        self.modalities = (modality,)  # type: ignore[misc]
        self.branch = SeqBranch(input_dim, gru_layers, **branch)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """``values``: ``(B, K)`` mean of the per-step outputs, or ``(U, K)`` per utterance at dialogue level."""
        x, mask = _features(batch, self.modality)
        m, steps, pooled = self.branch(x, mask)
        valid = mask if mask is not None else torch.ones(m.shape[:2], dtype=torch.bool, device=m.device)
        return ModelOutput(
            values=_values(steps, pooled, valid, self.dialogue_level),
            hidden={self.modality: m},
            masks={self.modality: valid},
            extras={"step_values": steps},
        )


class SeqSEW(EmotionModel):
    """SeqSEW: frozen stronger-modality teacher, weaker-modality student with a translator (module docstring).

    Args:
        weak: Student modality (tested alone).
        strong: Teacher modality.
        weak_dim: Student feature size.
        strong_dim: Teacher feature size (the translator's output).
        phase: ``teacher`` (stage 1: train the teacher; student and translator frozen) or ``student``
            (stage 2: teacher frozen, in eval mode; predictions from the student only).
        weak_gru_layers: Student bi-GRU layers.
        strong_gru_layers: Teacher bi-GRU layers.
        decoder_units: Translator bi-GRU units (250 RECOLA arousal, 500 valence).
        decoder_layers: Translator bi-GRU layers.
        sequence: ``frames`` or ``dialogue`` (see :class:`SeqUnimodal` and the module docstring).
        **branch: :class:`SeqBranch` options shared by teacher and student.
    """

    target_kind = "regression"

    def __init__(
        self,
        weak: str = "audio",
        strong: str = "text",
        weak_dim: int = 88,
        strong_dim: int = 100,
        phase: str = "student",
        weak_gru_layers: int = 2,
        strong_gru_layers: int = 2,
        decoder_units: int = 250,
        decoder_layers: int = 2,
        sequence: str = "frames",
        **branch: Any,
    ) -> None:
        super().__init__()
        self.dialogue_level = _check_sequence(sequence) == "dialogue"  # type: ignore[misc]  # per instance
        if phase not in ("teacher", "student"):
            raise ValueError(f"phase must be 'teacher' or 'student', got {phase!r}")
        if weak == strong:
            raise ValueError(f"weak and strong modalities must differ, got {weak!r} twice")
        unknown = sorted(set(branch) - set(_BRANCH_KEYS))
        if unknown:
            raise TypeError(f"unknown SeqSEW option(s) {unknown}")
        self.config = {
            "weak": weak,
            "strong": strong,
            "weak_dim": weak_dim,
            "strong_dim": strong_dim,
            "phase": phase,
            "weak_gru_layers": weak_gru_layers,
            "strong_gru_layers": strong_gru_layers,
            "decoder_units": decoder_units,
            "decoder_layers": decoder_layers,
            "sequence": sequence,
            **branch,
        }
        self.weak, self.strong, self.phase = weak, strong, phase
        self.modalities = (weak, strong)  # type: ignore[misc]
        # the student first: under one seed it starts from the weights SeqUnimodal(weak) starts from, so the
        # multimodal-trained student and the unimodal baseline differ by the co-learning terms, not the init
        self.student = SeqBranch(weak_dim, weak_gru_layers, **branch)
        self.teacher = SeqBranch(strong_dim, strong_gru_layers, **branch)
        dim = self.student.dim
        self.decoder_gru = nn.GRU(dim, decoder_units, decoder_layers, batch_first=True, bidirectional=True)
        self.decoder_out = nn.Linear(2 * decoder_units, strong_dim)
        frozen = [self.student, self.decoder_gru, self.decoder_out] if phase == "teacher" else [self.teacher]
        for module in frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> SeqSEW:
        """Like :meth:`nn.Module.train`; the frozen teacher of the student phase stays in eval mode."""
        super().train(mode)
        if self.phase == "student":
            self.teacher.eval()
        return self

    def translate(self, m_sw: Tensor) -> Tensor:
        """S_D: student codes ``(B, T, dim)`` → stronger-feature sequence ``(B, T, D_s)``."""
        h, _ = self.decoder_gru(m_sw)
        return self.decoder_out(h)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Teacher phase: predict from the stronger modality. Student phase: predict from the weaker one only.

        Returns:
            ``values`` ``(B, K)`` (``(U, K)`` at dialogue level). Student phase ``extras``: ``m_sw``
            ``(B, T_w, dim)``, ``mask_w``, ``translation`` ``(B, T_w, D_s)``, and when the stronger features
            are in the batch (training) ``m_ss`` ``(B, T_s, dim)`` (teacher, no gradient), ``mask_s``,
            ``strong_input`` ``(B, T_s, D_s)``.
        """
        if self.phase == "teacher":
            x, mask = _features(batch, self.strong)
            m, steps, pooled = self.teacher(x, mask)
            valid = mask if mask is not None else torch.ones(m.shape[:2], dtype=torch.bool, device=m.device)
            values = _values(steps, pooled, valid, self.dialogue_level)
            return ModelOutput(values=values, hidden={self.strong: m}, masks={self.strong: valid})
        x, mask = _features(batch, self.weak)
        m_sw, steps, pooled = self.student(x, mask)
        mask_w = mask if mask is not None else torch.ones(m_sw.shape[:2], dtype=torch.bool, device=m_sw.device)
        values = _values(steps, pooled, mask_w, self.dialogue_level)
        out = ModelOutput(values=values, hidden={self.weak: m_sw}, masks={self.weak: mask_w})
        out.extras = {"m_sw": m_sw, "mask_w": mask_w, "translation": self.translate(m_sw), "step_values": steps}
        if _has(batch, self.strong):
            xs, mask_s = _features(batch, self.strong)
            with torch.no_grad():
                m_ss = self.teacher.encode(xs, mask_s)
            ms = mask_s if mask_s is not None else torch.ones(m_ss.shape[:2], dtype=torch.bool, device=m_ss.device)
            out.extras.update(m_ss=m_ss, mask_s=ms, strong_input=xs)
        return out


@register_model
def sew(**kwargs: Any) -> SEW:
    """SEW (thesis §5.2.2): weaker encoder + translator, stronger auto-encoder, DCCA, GRU regressor."""
    return SEW(**kwargs)


@register_model
def seqsew(**kwargs: Any) -> SeqSEW:
    """SeqSEW (thesis §5.2.3): frozen stronger teacher, weaker student with translator (phase teacher / student)."""
    return SeqSEW(**kwargs)


@register_model
def seqsew_unimodal(**kwargs: Any) -> SeqUnimodal:
    """The SeqSEW branch on one modality alone (the teacher architecture and the unimodal baseline)."""
    return SeqUnimodal(**kwargs)
