"""CMD student: per-modality "audio–text transformers" distilled from frozen wav2vec 2.0 / BERT teachers.

Kim & Kang, "Cross-modal distillation with audio–text fusion for fine-grained emotion classification using BERT
and Wav2vec 2.0", Neurocomputing 506 (2022) 168–183 (no official code; specs/cmd.md §1–2). Per modality, with
separate weights:

1. the teacher's input embedding, weights copied in (:class:`~emofuse.models._embedding.InputEmbedding`);
2. ``Conv1d(D_teacher -> d)``, kernel 1, no bias (A8), plus fixed sinusoidal positions (A14);
3. early fusion (default): 3 cross-attention blocks (queries: own stream; keys/values: the *fixed* ``d``-dim
   input embedding of the other modality, MulT-style, A13), then 3 self-attention blocks; ``fusion="late"``
   runs self → cross; unimodal students have self-attention blocks only;
4. post-LN blocks of Algorithm 1 (:class:`~emofuse.layers.transformer.PostLNBlock`, d 32, 2 heads, FFN 128) with
   key-padding masks and no causal mask.

Classifier F (Stage 2, §2.7): mean over valid steps, ``Linear(d, d) -> ReLU -> Linear(d, C)``, shared across
modalities by default; ``probs = mean_m softmax(F(pooled_m) / kappa)``, ``logits = log(probs)``,
``modality_logits`` are the raw F outputs. ``with_head=False`` builds the Stage-1 student (no classifier).

Parameter arithmetic (§2.3, measured by the tests): a block is 12,704 parameters, 6 blocks 76,224; the conv
768 → 32 without bias is 24,576 (the spec's 24,608 counts a 32-d bias too). With ``facebook/wav2vec2-base`` the
audio branch is 4,595,456 + 24,576 + 76,224 = 4,696,256 (≈ 4.70 M); with ``bert-base-uncased`` the text
branch is 23,837,184 + 24,576 + 76,224 = 23,937,984 (≈ 23.94 M); the shared head adds 1,188 (4 classes).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from emofuse.layers.pooling import masked_mean, mean_std_pool
from emofuse.layers.transformer import PostLNBlock, sinusoidal_positions
from emofuse.models._embedding import InputEmbedding
from emofuse.models._registry import register_model
from emofuse.models._teacher_blocks import copy_teacher_blocks
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["CMDStudent", "ClassifierHead", "build_teacher"]

_MODALITIES = ("audio", "text")
_POOLINGS = ("mean", "mean_std")


def _pooled_dim(dim: int, pooling: str) -> int:
    """Size of the pooled vector F reads."""
    return 2 * dim if pooling == "mean_std" else dim


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip weight initialisation of ``transformers`` models (values are overwritten or never materialised)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        yield


def build_teacher(name: str, weights: str = "auto", allow_random: bool = True, fast: bool = False) -> Any:
    """Build the frozen teacher encoder a student copies its input embedding from.

    Args:
        name: Registered encoder name (``facebook/wav2vec2-base``, ``bert-base-uncased``, ``tiny-bert``, ...).
        weights: ``"auto"``: the encoder's offline resolution order (local, HF cache, packaged stand-in, then
            random init if ``allow_random``); ``"random"``: the *named* architecture from its config, random init,
            no weights read.
        allow_random: Let ``"auto"`` fall back to random init (with a ``RandomInitWarning``).
        fast: The values do not matter (they are overwritten by a state dict, or the model lives on the meta
            device): random architectures skip weight initialisation and no warning is raised.

    Returns:
        The frozen :class:`~emofuse.encoders.Encoder`.
    """
    from emofuse.encoders import RandomInitWarning, Resolution, create_encoder, get_encoder_spec, resolve_encoder

    if weights not in ("auto", "random"):
        raise ValueError(f"teacher_weights must be 'auto' or 'random', got {weights!r}")
    # on the meta device nothing can hold values: build on the CPU (the caller moves the copy to meta)
    device = torch.device("cpu") if torch.get_default_device().type == "meta" else contextlib.nullcontext()
    if weights == "auto":
        if not fast or resolve_encoder(name, allow_random=allow_random).resolved != "random":
            with device:
                return create_encoder(name, frozen=True, allow_random=allow_random)
    elif not fast:
        warnings.warn(
            f"student embedding for {name!r} is randomly initialised from the architecture config (teacher_weights="
            "'random'): it carries no pretrained knowledge",
            RandomInitWarning,
            stacklevel=3,
        )
    spec = get_encoder_spec(name)
    with device, _no_init() if fast else contextlib.nullcontext():
        encoder = spec.builder(spec, Resolution("random", "random init from the architecture config"), **spec.defaults)
    return encoder.freeze(True)


class ClassifierHead(nn.Module):
    """Classifier F: ``Linear(d_in, d) -> ReLU -> Linear(d, C)``.

    Args:
        dim: Hidden size ``d``.
        num_classes: Classes ``C``.
        in_dim: Input size ``d_in`` (``None``: ``d``; ``2 d`` for mean + std pooling).
    """

    def __init__(self, dim: int, num_classes: int, in_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim or dim, dim)
        self.fc2 = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, d_in) -> (B, C)`` raw scores."""
        return self.fc2(torch.relu(self.fc1(x)))


class _Branch(nn.Module):
    """One modality: copied embedding, conv reducer, cross blocks, self blocks (and a head if not shared)."""

    def __init__(self, encoder: Any, cfg: dict[str, Any], num_cross: int, head: bool) -> None:
        super().__init__()
        d, k = cfg["dim"], cfg["kernel_size"]
        narrow = cfg["front_end_channels"] if encoder.modality == "audio" else 0
        self.embedding = InputEmbedding(encoder, trainable=bool(narrow) or not cfg["freeze_embedding"], narrow=narrow)
        block = dict(dim=d, num_heads=cfg["num_heads"], ffn_dim=cfg["ffn_dim"], dropout=cfg["dropout"])
        self.out_norm: nn.Module = nn.Identity()
        if cfg["teacher_layers"]:  # the teacher's own first layers, at its width, on its embedding (positions included)
            self.self_blocks, self.out_norm, dims = copy_teacher_blocks(encoder, cfg["teacher_layers"], cfg["dropout"])
            d = dims["dim"]
            block = dict(dim=d, num_heads=dims["num_heads"], ffn_dim=dims["ffn_dim"], dropout=cfg["dropout"])
            self.conv: nn.Module = nn.Identity()
            self.positions = False
        else:
            self.conv = nn.Conv1d(self.embedding.output_dim, d, k, padding=(k - 1) // 2, bias=cfg["conv_bias"])
            self.self_blocks = nn.ModuleList(PostLNBlock(**block) for _ in range(cfg["num_self"]))
            self.positions = cfg["positions"]
        #: Width ``d`` of the branch's sequence (the teacher's width when its layers are copied).
        self.dim = int(d)
        self.cross = nn.ModuleList(PostLNBlock(**block) for _ in range(num_cross))
        self.head = ClassifierHead(d, cfg["num_classes"], _pooled_dim(d, cfg["pooling"])) if head else None

    def embed(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Teacher embedding → conv → + positions: ``(B, T, d)`` and the mask ``(B, T)``."""
        x, mask = self.embedding(inputs)  # (B, T, D)
        x = x * mask.unsqueeze(-1).to(x.dtype)  # zero padding so a kernel > 1 cannot leak it
        if isinstance(self.conv, nn.Identity):
            return x, mask
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T, d)
        if self.positions:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h)
        return h, mask

    def self_attend(self, h: Tensor, mask: Tensor) -> Tensor:
        for blk in self.self_blocks:
            h = blk(h, q_mask=mask)  # (B, T, d)
        return self.out_norm(h)


class CMDStudent(EmotionModel):
    """The CMD student (early/late fusion or unimodal), returning per-modality sequences and fused probabilities.

    Args:
        audio_teacher: Registered audio encoder whose input embedding is copied.
        text_teacher: Registered text encoder whose input embedding is copied.
        modalities: ``("audio", "text")``, ``("audio",)`` or ``("text",)``.
        fusion: ``"early"`` (cross → self, the paper's choice) or ``"late"`` (self → cross).
        cross_kv: Keys/values of the cross blocks: ``"input"`` = the other modality's fixed input to the cross
            module (its ``d``-dim embedding for early fusion, its self-attention output for late fusion);
            ``"lockstep"`` = the other stream's previous cross-block output.
        dim: Model size ``d``.
        num_heads: Attention heads.
        ffn_dim: FFN inner size ``m``.
        num_cross: Cross-attention blocks per modality (ignored for unimodal students).
        num_self: Self-attention blocks per modality (unimodal: 3, or 6 to keep the depth).
        dropout: Block dropout (attention, FFN, residual).
        kernel_size: Conv reducer kernel (odd; padding keeps the length).
        conv_bias: Bias on the conv reducer.
        positions: Add sinusoidal positions after the conv.
        num_classes: Classes ``C``.
        temperature: ``kappa`` dividing F's outputs before the softmax.
        shared_head: One classifier F for all modalities (else one per modality).
        with_head: Build the classifier (``False`` for Stage-1 distillation).
        freeze_embedding: Freeze the copied embeddings (ablation of A6).
        teacher_layers: ``0`` (the paper): blocks from random weights at width ``dim``. ``K > 0``: each branch's
            self-attention blocks are copies of its teacher's first ``K`` layers (Whisper or BERT-style teachers),
            on the teacher's embedding at the teacher's width (``dim``, ``num_heads``, ``ffn_dim``, ``num_self``,
            the conv reducer and the sinusoidal positions then do not apply; ``config["dim"]`` records the width).
            Before any training the student computes the teacher's layer-``K`` states.
        front_end_channels: ``0`` (the paper): copy the teacher's input embedding. ``C > 0`` (the audio branch,
            Whisper teachers): a narrow two-conv front-end of ``C`` channels with the teacher's frame geometry,
            trained from random weights (Stage 1 distils it with the rest) instead of the copied one, which is about
            half of the tiny.en student's batch-1 CPU time. It is always trained (``freeze_embedding`` freezes copied
            embeddings only). Needs ``teacher_layers=0``.
        pooling: What F reads: ``mean`` over valid steps (the paper, §2.7) or ``mean_std`` (mean and standard
            deviation concatenated, ``2 d``; F's first layer is then ``2 d -> d``).
        teacher_weights: ``"auto"`` (the encoders' resolution order) or ``"random"`` (named architectures,
            random init). On the meta device the named architectures are always used and nothing is loaded.
        allow_random: Let ``"auto"`` fall back to random init (with a warning).
    """

    input_kind = "raw"
    export_limit = None

    def __init__(
        self,
        audio_teacher: str = "facebook/wav2vec2-base",
        text_teacher: str = "bert-base-uncased",
        modalities: tuple[str, ...] | list[str] = _MODALITIES,
        fusion: str = "early",
        cross_kv: str = "input",
        dim: int = 32,
        num_heads: int = 2,
        ffn_dim: int = 128,
        num_cross: int = 3,
        num_self: int = 3,
        dropout: float = 0.1,
        kernel_size: int = 1,
        conv_bias: bool = False,
        positions: bool = True,
        num_classes: int = 4,
        temperature: float = 0.05,
        shared_head: bool = True,
        with_head: bool = True,
        freeze_embedding: bool = False,
        teacher_layers: int = 0,
        front_end_channels: int = 0,
        pooling: str = "mean",
        teacher_weights: str = "auto",
        allow_random: bool = True,
        _fast: bool = False,
    ) -> None:
        super().__init__()
        mods = tuple(modalities)
        if not mods or len(set(mods)) != len(mods) or any(m not in _MODALITIES for m in mods):
            raise ValueError(f"modalities must be 'audio', 'text' or both, got {modalities!r}")
        if fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', got {fusion!r}")
        if cross_kv not in ("input", "lockstep"):
            raise ValueError(f"cross_kv must be 'input' or 'lockstep', got {cross_kv!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number (length-preserving), got {kernel_size}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {list(_POOLINGS)}, got {pooling!r}")
        if teacher_layers < 0:
            raise ValueError(f"teacher_layers must be >= 0, got {teacher_layers}")
        if front_end_channels < 0:
            raise ValueError(f"front_end_channels must be >= 0, got {front_end_channels}")
        if front_end_channels and teacher_layers:
            raise ValueError(
                "front_end_channels needs teacher_layers=0: copied teacher layers read the teacher's width"
            )
        self.config: dict[str, Any] = dict(
            audio_teacher=audio_teacher,
            text_teacher=text_teacher,
            modalities=list(mods),
            fusion=fusion,
            cross_kv=cross_kv,
            dim=dim,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            num_cross=num_cross,
            num_self=num_self,
            dropout=dropout,
            kernel_size=kernel_size,
            conv_bias=conv_bias,
            positions=positions,
            num_classes=num_classes,
            temperature=temperature,
            shared_head=shared_head,
            with_head=with_head,
            freeze_embedding=freeze_embedding,
            teacher_layers=teacher_layers,
            front_end_channels=front_end_channels,
            pooling=pooling,
            teacher_weights=teacher_weights,
            allow_random=allow_random,
        )
        self.modalities = mods  # type: ignore[misc]  # instance-level: this model's variant
        self.fusion, self.cross_kv, self.temperature = fusion, cross_kv, temperature
        meta = torch.get_default_device().type == "meta"
        weights = "random" if meta else teacher_weights
        names = {"audio": audio_teacher, "text": text_teacher}
        n_cross = num_cross if len(mods) > 1 else 0
        per_head = with_head and not shared_head
        branches, provenance = {}, {}
        for m in mods:
            teacher = build_teacher(names[m], weights, allow_random, fast=_fast or meta)
            if teacher.modality != m:
                raise ValueError(f"{m}_teacher {names[m]!r} is a {teacher.modality} encoder")
            branches[m] = _Branch(teacher, self.config, n_cross, per_head)
            provenance[m] = teacher.provenance.to_dict()
            if branches[m].embedding.narrow:  # only the geometry came from the teacher
                note = f"front end: narrow, {front_end_channels} channels, trained from random weights (none copied)"
                provenance[m]["notes"] = [*provenance[m].get("notes", []), note]
            del teacher
        #: Where each copied embedding's weights came from (the teachers' provenance).
        self.teacher_provenance: dict[str, dict[str, Any]] = provenance
        widths = {m: b.dim for m, b in branches.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(f"teacher_layers: the branches' widths differ ({widths}); the cross blocks need one width")
        dim = self.config["dim"] = next(iter(widths.values()))
        if meta:
            branches = {m: b.to("meta") for m, b in branches.items()}
        self.branches = nn.ModuleDict(branches)
        head_in = _pooled_dim(dim, pooling)
        self.head = ClassifierHead(dim, num_classes, head_in) if with_head and shared_head else None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CMDStudent:
        """Rebuild the architecture from :attr:`config`; a state dict then restores every weight.

        No real weights are needed: teachers that would resolve to random init are built without initialising
        (and without warnings). A teacher that resolves to real (or stand-in) weights on this machine is loaded
        so that its architecture matches the one the checkpoint was trained with.
        """
        cfg = {**config, "allow_random": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**cfg, _fast=True)

    def branch(self, modality: str) -> _Branch:
        """The branch (embedding, conv, blocks) of one modality."""
        return cast(_Branch, self.branches[modality])

    def branch_parameters(self) -> dict[str, int]:
        """Parameters per modality branch (embedding + conv + blocks [+ own head]) and of the shared head."""
        counts = {m: sum(p.numel() for p in b.parameters()) for m, b in self.branches.items()}
        if self.head is not None:
            counts["head"] = sum(p.numel() for p in self.head.parameters())
        return counts

    def encoder_layer_ids(self) -> dict[str, int]:
        """Depths of the parts copied from the teachers, for ``optim.encoder_lr`` / ``optim.layer_decay``.

        With ``teacher_layers = K``: the copied embedding is depth 0, copied layer ``i`` depth ``i`` and the copied
        output norm depth ``K``; everything else (the head, cross blocks) takes ``optim.lr``. Without copied layers
        there is no encoder to fine-tune: empty.
        """
        k = int(self.config["teacher_layers"])
        if not k:
            return {}
        ids: dict[str, int] = {}
        for m in self.modalities:
            prefix = f"branches.{m}."
            for name, _ in self.branch(m).named_parameters():
                if name.startswith("embedding."):
                    ids[prefix + name] = 0
                elif name.startswith("self_blocks."):
                    ids[prefix + name] = int(name.split(".")[1]) + 1
                elif name.startswith("out_norm."):
                    ids[prefix + name] = k
        return ids

    def _cross(self, h: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """Cross-attention module: each stream queries the other (MulT-style fixed K/V, or lock-step)."""
        if len(self.modalities) < 2:
            return h
        a, t = self.modalities
        other = {a: t, t: a}
        kv = dict(h)  # fixed keys/values: the input of the cross module
        q = dict(h)
        for i in range(len(self.branch(a).cross)):
            src = q if self.cross_kv == "lockstep" else kv
            q = {m: self.branch(m).cross[i](q[m], src[other[m]], src[other[m]], masks[m], masks[other[m]]) for m in q}
        return q

    def _present(self, batch: dict[str, Any], masks: dict[str, Tensor]) -> Tensor:
        """``(M, B)`` bool: modality ``m`` has a valid step (and ``batch["present"][m]``, if given, is True)."""
        given = batch.get("present") or {}
        rows = []
        for m in self.modalities:
            p = masks[m].any(dim=1)
            if m in given:
                p = p & given[m].to(p.device).bool()
            rows.append(p)
        return torch.stack(rows)

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Run the student.

        Args:
            batch: ``batch[<modality>]`` = the teacher encoder's ``preprocess`` dict for each modality.

        Returns:
            ``hidden[m] (B, T_m, d)`` (zero at padding), ``masks[m] (B, T_m)``, ``pooled[m] (B, d)`` (``(B, 2 d)`` with
            ``pooling="mean_std"``) and, with a
            head, ``modality_logits[m] (B, C)`` (raw F outputs), ``probs (B, C)`` (mean of the per-modality
            softmaxes at temperature ``kappa``; a modality absent from a sample, i.e. no valid step or
            ``batch["present"][m]`` False, is left out of its mean) and ``logits = log(probs)``.
        """
        h, masks = {}, {}
        for m in self.modalities:
            if m not in batch:
                raise KeyError(f"CMD student needs batch[{m!r}] (the {m} teacher's preprocess output)")
            h[m], masks[m] = self.branch(m).embed(batch[m])  # (B, T_m, d)
        if self.fusion == "early":
            h = self._cross(h, masks)
            h = {m: self.branch(m).self_attend(h[m], masks[m]) for m in self.modalities}
        else:
            h = {m: self.branch(m).self_attend(h[m], masks[m]) for m in self.modalities}
            h = self._cross(h, masks)
        hidden = {m: h[m] * masks[m].unsqueeze(-1).to(h[m].dtype) for m in self.modalities}
        pool = masked_mean if self.config["pooling"] == "mean" else mean_std_pool
        pooled = {m: pool(h[m], masks[m]) for m in self.modalities}  # (B, d) or (B, 2 d)
        out = ModelOutput(hidden=hidden, masks=masks, pooled=pooled)
        if self.config["with_head"]:
            for m in self.modalities:
                head = self.head if self.head is not None else self.branch(m).head
                assert head is not None
                out.modality_logits[m] = head(pooled[m])  # (B, C)
            # log(mean_m softmax(z_m / kappa)), computed stably: logsumexp_m log_softmax(z_m / kappa) - log M
            logp = torch.stack([(z / self.temperature).log_softmax(-1) for z in out.modality_logits.values()])
            present = self._present(batch, masks)  # (M, B): a modality absent from a sample is left out
            if bool(present.all()):
                out.logits = torch.logsumexp(logp, dim=0) - math.log(len(self.modalities))  # (B, C)
            else:
                present = present | ~present.any(0, keepdim=True)  # nothing present: average them all
                logp = logp.masked_fill(~present[:, :, None], float("-inf"))
                out.logits = torch.logsumexp(logp, dim=0) - present.sum(0).to(logp.dtype).log()[:, None]
            out.probs = out.logits.exp()  # (B, C), rows sum to 1
        return out


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> CMDStudent:
    return CMDStudent(**{**defaults, **overrides})


@register_model
def cmd_student(**kwargs: Any) -> CMDStudent:
    """CMD student, early fusion (cross → self), wav2vec2-base + bert-base-uncased embeddings."""
    return _build(dict(modalities=("audio", "text"), fusion="early"), kwargs)


@register_model
def cmd_student_late(**kwargs: Any) -> CMDStudent:
    """CMD student, late fusion (self → cross)."""
    return _build(dict(modalities=("audio", "text"), fusion="late"), kwargs)


@register_model
def cmd_student_audio(**kwargs: Any) -> CMDStudent:
    """Unimodal audio student ("wav2 + distill"): embedding → conv → self-attention blocks only."""
    return _build(dict(modalities=("audio",)), kwargs)


@register_model
def cmd_student_text(**kwargs: Any) -> CMDStudent:
    """Unimodal text student ("bert + distill"): embedding → conv → self-attention blocks only."""
    return _build(dict(modalities=("text",)), kwargs)
