"""CMD Stage 1: contrastive cross-modal distillation (Kim & Kang 2022, Algorithm 2; spec ``cmd.md`` §1.2).

For each modality ``m`` the frozen teacher's last-layer states ``c^t_m`` (B, T, 768) and the student's
``c^s_m`` (B, T, 32), aligned frame-for-frame, are mapped by linear heads to ``d_z = 32``
(``z^t = g^t_m(c^t_m)``, ``z^s = g^s_m(c^s_m)``; four heads, spec §2.6 / A15) and compared with
NT-Xent (Eq. 8–9)::

    L_total = Σ_m L_clr(z^t_m, z^s_m)

The student and the heads are trained; the teachers are not. Teacher states come from the feature
cache (``batch["teacher"]``, see :mod:`emofuse.pipeline.dataset`) or, when a modality is missing
there, from a frozen teacher encoder given to the task.

Example:
    >>> import torch
    >>> from emofuse.models.base import EmotionModel, ModelOutput
    >>> class Toy(EmotionModel):
    ...     def forward(self, batch):
    ...         h = batch["x"]
    ...         return ModelOutput(hidden={"audio": h}, masks={"audio": torch.ones(h.shape[:2], dtype=torch.bool)})
    >>> task = DistillationTask(Toy(), teacher_dims={"audio": 8}, student_dims=4)
    >>> out = task({"x": torch.randn(3, 5, 4), "teacher": {"audio": torch.randn(3, 5, 8)}})
    >>> sorted(out)
    ['loss', 'loss_audio']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from emofuse.encoders.base import Encoder
from emofuse.layers.pooling import masked_mean
from emofuse.losses.contrastive import Similarity, TimeAxis, nt_xent, nt_xent_flat, nt_xent_per_step
from emofuse.models.base import EmotionModel
from emofuse.tasks._registry import TaskSpec, register_task
from emofuse.tasks.base import Task, TaskError

__all__ = ["DistillationTask"]

_TEACHERS = "teachers."


class DistillationTask(Task):
    """Stage-1 objective: NT-Xent between projected teacher and student sequences, summed over modalities.

    Args:
        model: The student; its output's ``hidden[m]`` ``(B, T, d_s)`` and ``masks[m]`` ``(B, T)`` are used.
        teacher_dims: Teacher feature size per modality, e.g. ``{"audio": 768, "text": 768}``.
        proj_dim: ``d_z``, the size of the projected vectors (32 in the paper).
        temperature: ``κ`` (0.05 for IEMOCAP/MELD, 0.01 for CMU-MOSEI; grid {0.01, 0.05, 0.1}).
        time_axis: ``"per_step"`` (literal reading, default) or ``"flat"`` (all valid positions in one
            problem); ambiguity A1. ``"utterance"`` (not the paper's): teacher and student states are mean-pooled
            over their own valid steps, then one NT-Xent runs over the batch's utterances; the two sides need not
            have the same length, so the teacher may be an utterance-level vector (``T = 1``), such as Whisper's
            per-layer mean and std (``output: layer_stats``), and may be another model than the one whose
            embedding the student copied.
        modalities: Modalities to distil (default: the keys of ``teacher_dims``). One modality gives
            the unimodal ``wav2 + distill`` / ``bert + distill`` variants.
        student_dims: Student hidden size, one int for all modalities or a mapping (32 in the paper).
        similarity: ``"cosine"`` (default) or ``"dot"`` (ambiguity A2).
        teachers: Optional frozen teacher encoders, used for a modality only when the batch carries no
            cached states for it (``batch["teacher"][m]``); they read ``batch[m]`` (the encoder's own
            preprocess output). They are frozen here, and their weights are left out of
            :meth:`state_dict` so checkpoints hold only the student and the heads.
        chunk_size: Anchor rows per chunk for ``time_axis="flat"`` (see
            :func:`~emofuse.losses.contrastive.nt_xent`); ``None`` for one dense matrix.

    Returns from :meth:`forward`:
        ``{"loss": Σ_m L_clr, "loss_<m>": L_clr for each modality}``.
    """

    stage: ClassVar[str] = "distill"
    #: Spec §3.4: Adam, LR 1e-4, 10 warm-up epochs then ×0.9 per epoch (A3), 50 epochs, 1.28 M-sample
    #: batches, keep the epoch with the lowest validation loss.
    recommended: ClassVar[dict[str, Any]] = {
        "epochs": 50,
        "warmup_epochs": 10,
        "lr": 1e-4,
        "decay_per_epoch": 0.9,
        "optimizer": "adam",
        "max_samples": 1_280_000,
        "monitor": "val/loss",
        "mode": "min",
    }

    def __init__(
        self,
        model: EmotionModel,
        teacher_dims: Mapping[str, int],
        proj_dim: int = 32,
        temperature: float = 0.05,
        time_axis: TimeAxis = "per_step",
        modalities: Sequence[str] | None = None,
        student_dims: int | Mapping[str, int] = 32,
        similarity: Similarity = "cosine",
        teachers: Mapping[str, Encoder] | None = None,
        chunk_size: int | None = 4096,
    ) -> None:
        super().__init__(model)
        mods = tuple(modalities) if modalities is not None else tuple(teacher_dims)
        if not mods:
            raise ValueError("DistillationTask needs at least one modality")
        if time_axis not in ("per_step", "flat", "utterance"):
            raise ValueError(f"time_axis must be 'per_step', 'flat' or 'utterance', got {time_axis!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        missing = [m for m in mods if m not in teacher_dims]
        if missing:
            raise ValueError(f"teacher_dims has no size for modalities {missing} (given: {dict(teacher_dims)})")
        s_dims = {m: student_dims for m in mods} if isinstance(student_dims, int) else dict(student_dims)
        missing = [m for m in mods if m not in s_dims]
        if missing:
            raise ValueError(f"student_dims has no size for modalities {missing} (given: {s_dims})")
        self.modalities = mods
        self.temperature = float(temperature)
        self.time_axis: TimeAxis = time_axis
        self.similarity: Similarity = similarity
        self.chunk_size = chunk_size
        self.teacher_dims = {m: int(teacher_dims[m]) for m in mods}
        # g^t_m: D_teacher -> d_z and g^s_m: d_s -> d_z, linear ("an encoder for linear embedding", §2.6)
        self.teacher_proj = nn.ModuleDict({m: nn.Linear(self.teacher_dims[m], proj_dim) for m in mods})
        self.student_proj = nn.ModuleDict({m: nn.Linear(int(s_dims[m]), proj_dim) for m in mods})
        self.teachers = nn.ModuleDict({m: t.freeze() for m, t in (teachers or {}).items()})
        self.register_state_dict_post_hook(_drop_teacher_weights)
        self.register_load_state_dict_pre_hook(_fill_teacher_weights)
        self.config = {
            "teacher_dims": self.teacher_dims,
            "proj_dim": proj_dim,
            "temperature": self.temperature,
            "time_axis": time_axis,
            "modalities": list(mods),
            "student_dims": {m: int(s_dims[m]) for m in mods},
            "similarity": similarity,
            "chunk_size": chunk_size,
        }

    def train(self, mode: bool = True) -> DistillationTask:
        """Switch train/eval mode; teacher encoders always stay in eval mode."""
        super().train(mode)
        for t in self.teachers.values():
            t.eval()
        return self

    def teacher_states(self, batch: Mapping[str, Any], modality: str) -> tuple[Tensor, Tensor | None]:
        """Teacher states ``(B, T, D)`` and mask ``(B, T)`` (or ``None``) of one modality.

        Read from ``batch["teacher"]`` (the cache) when present there, else computed by the frozen
        teacher encoder from ``batch[modality]``.
        """
        cached = batch.get("teacher") or {}
        if modality in cached:
            return cached[modality], cached.get(f"{modality}_mask")
        if modality in self.teachers:
            inputs = self.require(batch, modality, f"input of the {modality} teacher encoder")
            teacher = cast(Encoder, self.teachers[modality])
            with torch.no_grad():
                out = teacher(**{k: v.to(teacher.device) if isinstance(v, Tensor) else v for k, v in inputs.items()})
            return out.hidden, out.mask
        raise TaskError(
            f"no teacher states for modality {modality!r}: batch['teacher'] has {sorted(cached)} and the task has "
            f"teacher encoders for {sorted(self.teachers)}; pass teacher_stores to the dataset or teachers= here"
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Sum of the per-modality NT-Xent losses.

        Args:
            batch: Needs what the student needs, plus ``batch["teacher"][m]`` ``(B, T, D)`` and
                optionally ``batch["teacher"][f"{m}_mask"]`` ``(B, T)`` for each modality.

        Returns:
            ``{"loss": scalar, "loss_<m>": scalar per modality}``.

        Raises:
            TaskError: Missing student or teacher states, a wrong teacher size, or teacher and student
                sequences of different lengths (the message names the modality, a sample and both lengths).
        """
        out = self.model(batch)
        parts: dict[str, Tensor] = {}
        for m in self.modalities:
            if m not in out.hidden:
                raise TaskError(f"the student returned no hidden states for {m!r} (it has {sorted(out.hidden)})")
            h_s, mask_s = out.hidden[m], out.masks.get(m)
            h_t, mask_t = self.teacher_states(batch, m)
            if h_t.shape[-1] != self.teacher_dims[m]:
                raise TaskError(
                    f"{m}: teacher states have size {h_t.shape[-1]}, but teacher_dims[{m!r}] = {self.teacher_dims[m]}"
                )
            proj_t = cast(nn.Linear, self.teacher_proj[m])
            if self.time_axis == "utterance":  # one vector per utterance on each side, each over its own steps
                h_t = masked_mean(h_t.detach(), None if mask_t is None else mask_t.bool())  # (B, D)
                h_s = masked_mean(h_s, None if mask_s is None else mask_s.bool())  # (B, d_s)
                z_t = proj_t(h_t.to(device=proj_t.weight.device, dtype=proj_t.weight.dtype))  # (B, d_z)
                z_s = self.student_proj[m](h_s)  # (B, d_z)
                parts[f"loss_{m}"] = nt_xent(z_t, z_s, self.temperature, self.similarity)
                continue
            h_t, h_s, mask = _align(m, h_t, mask_t, h_s, mask_s, batch.get("ids"))
            z_t = proj_t(h_t.detach().to(device=proj_t.weight.device, dtype=proj_t.weight.dtype))  # (B, T, d_z)
            z_s = self.student_proj[m](h_s)  # (B, T, d_z)
            if self.time_axis == "flat":
                loss = nt_xent_flat(z_t, z_s, mask, self.temperature, self.similarity, self.chunk_size)
            else:
                loss = nt_xent_per_step(z_t, z_s, mask, self.temperature, self.similarity)
            parts[f"loss_{m}"] = loss
        total = torch.stack(list(parts.values())).sum()
        return {"loss": total, **parts}

    def extra_repr(self) -> str:
        """Settings shown in the module repr."""
        return (
            f"{super().extra_repr()}, modalities={self.modalities}, temperature={self.temperature}, "
            f"time_axis={self.time_axis!r}, similarity={self.similarity!r}"
        )


def _lengths(mask: Tensor | None, h: Tensor) -> Tensor:
    if mask is None:
        return torch.full((h.shape[0],), h.shape[1], dtype=torch.long, device=h.device)
    if mask.shape != h.shape[:2]:
        raise TaskError(f"mask shape {tuple(mask.shape)} does not match states {tuple(h.shape)}")
    return mask.bool().sum(dim=1)


def _align(
    modality: str,
    h_t: Tensor,
    mask_t: Tensor | None,
    h_s: Tensor,
    mask_s: Tensor | None,
    ids: Sequence[str] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Check teacher/student alignment and cut both to the longest valid length.

    Returns:
        ``(h_t, h_s, mask)`` with a common ``T`` and ``mask = mask_t & mask_s`` ``(B, T)``.
    """
    if h_t.dim() != 3 or h_s.dim() != 3 or h_t.shape[0] != h_s.shape[0]:
        raise TaskError(
            f"{modality}: teacher states {tuple(h_t.shape)} and student states {tuple(h_s.shape)} must both be "
            "(B, T, D) with the same batch size"
        )
    len_t, len_s = _lengths(mask_t, h_t).cpu(), _lengths(mask_s, h_s).cpu()
    bad = torch.nonzero(len_t != len_s).flatten().tolist()
    if bad:
        i = bad[0]
        who = f"sample {ids[i]!r}" if ids is not None and i < len(ids) else f"sample {i}"
        raise TaskError(
            f"{modality}: teacher and student sequence lengths differ for {len(bad)} of {h_t.shape[0]} samples, e.g. "
            f"{who}: teacher {int(len_t[i])} vs student {int(len_s[i])} steps (padded: teacher {h_t.shape[1]}, "
            f"student {h_s.shape[1]}). The student must keep the teacher's frames (cmd.md §1.2): check the "
            "reducer's kernel/padding and that the cache was extracted with the same preprocessing (trimming, "
            "maximum duration, tokenizer truncation)."
        )
    t = int(len_t.max()) if len_t.numel() else 0
    device = h_s.device
    m_t = mask_t[:, :t].bool() if mask_t is not None else torch.ones(h_t.shape[0], t, dtype=torch.bool)
    m_s = mask_s[:, :t].bool() if mask_s is not None else torch.ones(h_s.shape[0], t, dtype=torch.bool)
    return h_t[:, :t], h_s[:, :t], m_t.to(device) & m_s.to(device)


def _drop_teacher_weights(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook: frozen teacher weights are not part of the task's checkpoint."""
    for key in [k for k in state_dict if k.startswith(prefix + _TEACHERS)]:
        del state_dict[key]


def _fill_teacher_weights(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load pre-hook: keep the current teacher weights when a checkpoint has none (see above)."""
    teachers = getattr(module, "teachers", None)
    if not isinstance(teachers, nn.ModuleDict):
        return
    for key, value in teachers.state_dict().items():
        state_dict.setdefault(prefix + _TEACHERS + key, value)


def _build_distill(model: EmotionModel, options: dict[str, Any], train: Any, stage: str) -> DistillationTask:
    """Teacher sizes from the cached states the training split carries (``train.teacher_stores``)."""
    stores = getattr(train, "teacher_stores", {}) or {}  # a MultimodalDataset built for a teacher_states task
    if not stores:
        raise ValueError(f"stage {stage!r} distils, but the dataset has no cached teacher states")
    options = dict(options)
    options.setdefault("teacher_dims", {m: int(s.output_dim) for m, s in stores.items()})
    if "dim" in model.config:
        options.setdefault("student_dims", int(model.config["dim"]))
    return DistillationTask(model, **options)


register_task(
    TaskSpec(
        "distill",
        _build_distill,
        target="none",
        teacher_states=True,
        moddrop=False,
        default_monitor=("val/loss", "min"),
    )  # fmt: skip
)  # CMD: keep the epoch with the lowest validation loss
