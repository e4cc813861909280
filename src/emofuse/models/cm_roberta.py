"""CM-RoBERTa: dialogue-level fusion of utterance vectors with parallel self- and cross-attention.

Luo, Phan & Reiss, "Cross-modal fusion techniques for utterance-level emotion recognition from text and speech"
(specs/cm-roberta.md; paper ``shared/seeds/004_*``). Every utterance of a dialogue is one audio vector
(openSMILE functionals ⊕ an audio embedding) and one text vector (RoBERTa-large ``<s>`` of the last 4 layers,
4096-d), made offline (:mod:`emofuse.encoders.utterance`). All recurrent and attention operators run along the
**utterance axis of the dialogue**; the model predicts one emotion per utterance::

    X_a ─ norm ─► BiLSTM_a ─► H_a ─┬─► cross-attention ×2 ─► H_a^c, H_t^c
    X_t ─ norm ─► BiLSTM_t ─► H_t ─┼─► self-attention  ×2 ─► H_a^s, H_t^s
                                    └─► BiLSTM_fuse([H_a; H_t]) ─► Linear ─► H_mid
    X_a ─ norm ─► Linear ─► LayerNorm ─► H_a^r          (residual branches)
    X_t ─ norm ─► Linear ─► LayerNorm ─► H_t^r
    [H_a^c; H_t^c; H_a^s; H_t^s; H_mid; H_a^r; H_t^r] (7 × 128 = 896) ─► FC ─► ReLU ─► Dropout ─► FC ─► C

Fixes of the paper's inconsistencies (spec §7), each the default, each alternative a switch:

* B5 "hidden 128": every block outputs ``hidden = 128``; BiLSTMs have 64 units per direction
  (``lstm_units="split"``; ``"project"``: 128 per direction, then a linear layer to 128).
* B6 LSTM depth and sharing: 2-layer context BiLSTMs (``lstm_layers``), **shared** with the mid-level branch
  (``mid_lstm="shared"``: H_a^m ≡ H_a, H_t^m ≡ H_t, as the Fig. 2 caption says; ``"separate"``: their own LSTMs).
* B7 "⊕" in Eqs. 3-6, 8-9 is the **residual sum** of a post-LN Transformer layer (``sublayer_merge="add"``);
  ``"concat"`` takes the text literally (``LayerNorm(x ⊕ f(x))`` with concatenation, the width quadruples per layer).
* B8 direction indices of Eqs. 1-4: audio queries attend to text keys/values to update audio, and vice versa
  (``cross_direction="standard"``); ``"as_printed"``: ``H_a ← LN(H_a + Attn(Q=H_t, K=V=H_a))`` as the equations
  index it (possible because both streams have one row per utterance).
* B9 unstated attention settings: 4 heads, FFN 256, dropout 0.2, **bidirectional** attention over the whole
  dialogue with only padded utterances masked (``causal=True``: each utterance sees itself and the past).
  Eq. 9's "∇FeedForward" is read as FeedForward (a typo). No positional encoding: the BiLSTM supplies order.
* B10 residual branch: ``LayerNorm(Linear(X_m))`` straight from the raw features (``residual="skip"``;
  ``"sum"``: ``LayerNorm(Linear(X_m)) + H_m``).
* B11 feature normalisation: inputs are z-scored with **training-set statistics** (``input_norm="batch"``: an
  affine-free batch norm over valid utterances whose running statistics are the cumulative average over all
  training batches, used at evaluation and stored in the checkpoint; ``"none"``: raw features).
* B16/B18: one batch is 32 *dialogues*; the unit of prediction is the utterance.
* Eq. 10 is implemented as ``H_mid = Linear(BiLSTM_fuse([H_a; H_t]))`` (2d → d → d).

Variants (§2.8): ``cm_roberta`` (full), ``cm_roberta_no_sca`` (``sca=False``: the classifier sees
``[H_mid; H_a^r; H_t^r]``), and the unimodal ``cm_roberta_audio`` / ``cm_roberta_text`` ("an LSTM layer and a
residual block": ``FC(FC([BiLSTM(X_m); LN(Linear(X_m))]))``).

Batch (dialogues padded to the longest, :class:`~emofuse.pipeline.dialogue.DialogueDataset`)::

    batch["features"] = {"audio": (B, N, D_a), "audio_mask": (B, N) bool, "text": (B, N, D_t), "text_mask": ...}

Output: ``logits`` ``(U, C)`` for the ``U`` valid utterances, flattened in row-major order (dialogue by dialogue,
turn by turn) so they line up with the batch's flattened ``ids`` and ``labels``; ``extras["dialogue_logits"]``
``(B, N, C)`` and ``extras["mask"]`` ``(B, N)`` keep the dialogue layout. Padding never changes a valid output
(packed LSTMs, key-padding masks, statistics over valid utterances only).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from emofuse.config.schema import register_model_options
from emofuse.layers.transformer import MultiHeadAttention, PostLNBlock, attention_mask
from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["CMRoberta", "CMRobertaOptions", "MaskedBiLSTM", "MaskedZScore"]

_MODALITIES = ("audio", "text")


class CMRobertaOptions(BaseModel):
    """Option schema of the ``cm_roberta*`` models (type-checked in experiment configs).

    ``audio_dim`` / ``text_dim`` may be ``null`` in a config: ``emofuse train`` then reads them from the encoders.
    """

    model_config = ConfigDict(extra="forbid")

    modalities: list[Literal["audio", "text"]] | None = None
    audio_dim: int | None = Field(default=None, gt=0)
    text_dim: int | None = Field(default=None, gt=0)
    num_classes: int | None = Field(default=None, gt=1)
    hidden: int = Field(default=128, gt=1)
    lstm_layers: int = Field(default=2, gt=0)
    lstm_units: Literal["split", "project"] = "split"
    sca: bool = True
    sca_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=4, gt=0)
    ffn_dim: int = Field(default=256, gt=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    sublayer_merge: Literal["add", "concat"] = "add"
    cross_direction: Literal["standard", "as_printed"] = "standard"
    causal: bool = False
    mid_lstm: Literal["shared", "separate"] = "shared"
    residual: Literal["skip", "sum"] = "skip"
    input_norm: Literal["batch", "none"] = "batch"
    head_hidden: int = Field(default=128, gt=0)


class MaskedZScore(nn.Module):
    """Z-score each feature with statistics of the valid utterances (affine-free batch norm, cumulative average).

    Training: normalise with the batch's valid rows and add them to a cumulative average (``momentum=None``), so
    after training the running statistics are the training-set mean and variance (averaged over batches).
    Evaluation: normalise with those running statistics. Padded rows are left untouched (zeros stay zeros).

    Args:
        dim: Feature size ``D``.
        eps: Added to the variance.
    """

    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Normalise.

        Args:
            x: ``(B, N, D)``.
            mask: ``(B, N)`` bool, True at valid utterances.

        Returns:
            ``(B, N, D)``: valid rows z-scored, padded rows zero.
        """
        rows = x[mask]  # (U, D)
        use_batch = self.training and rows.shape[0] > 1
        if use_batch:
            self.num_batches_tracked += 1
        y = F.batch_norm(
            rows,
            self.running_mean,
            self.running_var,
            training=use_batch,
            momentum=1.0 / float(self.num_batches_tracked) if use_batch else 0.0,  # cumulative average
            eps=self.eps,
        )
        out = x.new_zeros(x.shape)
        out[mask] = y
        return out


class MaskedBiLSTM(nn.Module):
    """A bidirectional LSTM over right-padded sequences (packed, so padding never reaches a valid step).

    Args:
        input_dim: Input size.
        hidden: Output size per step.
        num_layers: Stacked layers.
        units: ``"split"``: ``hidden / 2`` units per direction, concatenated; ``"project"``: ``hidden`` units per
            direction, then a linear layer ``2 hidden → hidden``.
        dropout: Dropout between stacked layers.
    """

    def __init__(
        self, input_dim: int, hidden: int, num_layers: int = 2, units: str = "split", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if units == "split":
            if hidden % 2:
                raise ValueError(f"hidden must be even for lstm_units='split' (two directions), got {hidden}")
            per_dir = hidden // 2
        elif units == "project":
            per_dir = hidden
        else:
            raise ValueError(f"lstm_units must be 'split' or 'project', got {units!r}")
        self.lstm = nn.LSTM(
            input_dim,
            per_dir,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0,
        )
        self.proj = nn.Linear(2 * per_dir, hidden) if units == "project" else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Encode.

        Args:
            x: ``(B, N, D)``.
            mask: ``(B, N)`` bool, True at the first ``n_i`` steps of row ``i`` (``n_i >= 1``).

        Returns:
            ``(B, N, hidden)``, zero at padding.
        """
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, N, 2 per_dir)
        if self.proj is not None:
            h = self.proj(h)
        return h * mask.unsqueeze(-1).to(h.dtype)


class _ConcatBlock(nn.Module):
    """Eqs. 3-6 read literally: ``u = LN(x ⊕ Attn)``, ``c = LN(u ⊕ FF(u))`` with ⊕ = concatenation (width × 4)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(2 * dim)
        self.ff = nn.Sequential(
            nn.Linear(2 * dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, 2 * dim)
        )
        self.norm2 = nn.LayerNorm(4 * dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x_q: Tensor,
        x_k: Tensor | None = None,
        x_v: Tensor | None = None,
        q_mask: Tensor | None = None,
        kv_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        if x_k is None:
            x_k, kv_mask = x_q, q_mask if kv_mask is None else kv_mask
        x_v = x_k if x_v is None else x_v
        mask = attention_mask(x_q.shape[1], x_k.shape[1], kv_mask, causal, q_mask, x_q.device)
        u = self.norm1(torch.cat([x_q, self.drop(self.attn(x_q, x_k, x_v, mask))], dim=-1))  # (B, N, 2w)
        return self.norm2(torch.cat([u, self.drop(self.ff(u))], dim=-1))  # (B, N, 4w)


class _SCAUnit(nn.Module):
    """The parallel self- and cross-attention unit: two branches of ``num_layers`` stacked layers each."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        merge: str,
        direction: str,
        causal: bool,
    ) -> None:
        super().__init__()
        self.direction, self.causal = direction, causal

        def block(width: int) -> nn.Module:
            if merge == "add":
                return PostLNBlock(width, num_heads, ffn_dim, dropout)
            return _ConcatBlock(width, num_heads, dropout)

        widths = [dim * (1 if merge == "add" else 4**i) for i in range(num_layers)]
        self.out_dim = dim if merge == "add" else dim * 4**num_layers
        self.cross = nn.ModuleList(nn.ModuleDict({m: block(w) for m in _MODALITIES}) for w in widths)
        self.self_ = nn.ModuleList(nn.ModuleDict({m: block(w) for m in _MODALITIES}) for w in widths)

    def forward(self, h_a: Tensor, h_t: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """``{"audio_cross", "text_cross", "audio_self", "text_self"}``, each ``(B, N, out_dim)``."""
        ca, ct = h_a, h_t
        layer: Any
        for layer in self.cross:
            if self.direction == "standard":  # audio queries text to update audio (and vice versa)
                na = layer["audio"](ca, ct, ct, q_mask=mask, kv_mask=mask, causal=self.causal)
                nt = layer["text"](ct, ca, ca, q_mask=mask, kv_mask=mask, causal=self.causal)
            else:  # as Eqs. 1-4 index it: H_a ← LN(H_a + Attn(Q=H_t, K=V=H_a)), rows of the text queries
                na = _residual_swap(layer["audio"], ca, ct, mask, self.causal)
                nt = _residual_swap(layer["text"], ct, ca, mask, self.causal)
            ca, ct = na, nt
        sa, st = h_a, h_t
        for layer in self.self_:
            sa = layer["audio"](sa, q_mask=mask, causal=self.causal)
            st = layer["text"](st, q_mask=mask, causal=self.causal)
        return {"audio_cross": ca, "text_cross": ct, "audio_self": sa, "text_self": st}


def _residual_swap(block: Any, own: Tensor, other: Tensor, mask: Tensor, causal: bool) -> Tensor:
    """``LN(own + Attn(Q=other, K=V=own))`` then the FFN sub-layer, with ``block``'s weights (Eqs. 1-6 as printed)."""
    attn = block.attn
    m = attention_mask(other.shape[1], own.shape[1], mask, causal, mask, own.device)
    a = block.drop(attn(other, own, own, m))  # (B, N, w): rows follow the other stream's queries
    if isinstance(block, PostLNBlock):
        u = block.norm1(own + a)
        return block.norm2(u + block.drop(block.fc2(block.drop(F.relu(block.fc1(u))))))
    u = block.norm1(torch.cat([own, a], dim=-1))
    return block.norm2(torch.cat([u, block.drop(block.ff(u))], dim=-1))


class CMRoberta(EmotionModel):
    """CM-RoBERTa's dialogue-level network (see the module docstring for the architecture and the spec fixes).

    Args:
        modalities: ``("audio", "text")`` or one of them (unimodal: BiLSTM + residual block).
        audio_dim: Audio vector size ``D_a`` (default: the paper's 12696; ``compare+whisper-tiny.en``: 6757).
        text_dim: Text vector size ``D_t`` (default: the paper's 4096).
        num_classes: Emotions (MELD: 7).
        hidden: Width ``d`` of every block (128).
        lstm_layers: Layers of each context BiLSTM (2, B6).
        lstm_units: ``"split"`` (``d/2`` per direction) or ``"project"`` (B5).
        sca: Use the self/cross-attention unit (False: "Proposed method without SCA unit").
        sca_layers: Stacked layers per attention branch (2).
        num_heads: Attention heads (4).
        ffn_dim: Inner FFN width of the attention layers (256).
        dropout: Dropout in the attention layers, between LSTM layers and in the classifier (0.2).
        sublayer_merge: ``"add"`` (residual sum, B7) or ``"concat"`` (literal ⊕).
        cross_direction: ``"standard"`` or ``"as_printed"`` (B8).
        causal: Attend only to the current and earlier utterances (B9; default: the whole dialogue).
        mid_lstm: ``"shared"`` (the context BiLSTMs) or ``"separate"`` (B6).
        residual: ``"skip"`` (``LN(Linear(X))``) or ``"sum"`` (``LN(Linear(X)) + H``) (B10).
        input_norm: ``"batch"`` (z-score with training statistics) or ``"none"`` (B11).
        head_hidden: Width of the first fully connected layer (128).

    Example:
        >>> import torch
        >>> model = CMRoberta(audio_dim=6, text_dim=10, num_classes=7, hidden=8, num_heads=2, ffn_dim=16).eval()
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> batch = {"features": {"audio": torch.randn(2, 3, 6), "audio_mask": mask,
        ...                       "text": torch.randn(2, 3, 10), "text_mask": mask}}
        >>> out = model(batch)
        >>> tuple(out.logits.shape), tuple(out.extras["dialogue_logits"].shape), model.head_input_dim
        ((4, 7), (2, 3, 7), 56)
    """

    dialogue_level = True

    def __init__(
        self,
        modalities: tuple[str, ...] | list[str] = _MODALITIES,
        audio_dim: int | None = 12696,
        text_dim: int | None = 4096,
        num_classes: int = 7,
        hidden: int = 128,
        lstm_layers: int = 2,
        lstm_units: str = "split",
        sca: bool = True,
        sca_layers: int = 2,
        num_heads: int = 4,
        ffn_dim: int = 256,
        dropout: float = 0.2,
        sublayer_merge: str = "add",
        cross_direction: str = "standard",
        causal: bool = False,
        mid_lstm: str = "shared",
        residual: str = "skip",
        input_norm: str = "batch",
        head_hidden: int = 128,
    ) -> None:
        super().__init__()
        mods = tuple(modalities)
        if not mods or len(set(mods)) != len(mods) or any(m not in _MODALITIES for m in mods):
            raise ValueError(f"modalities must be 'audio', 'text' or both, got {modalities!r}")
        dims = {"audio": audio_dim, "text": text_dim}
        for m in mods:
            if dims[m] is None or int(dims[m]) < 1:  # type: ignore[arg-type]
                raise ValueError(
                    f"{m}_dim must be a positive feature size, got {dims[m]!r} (in a config, null lets "
                    f"`emofuse train` read it from the {m} encoder)"
                )
        choices = {
            "sublayer_merge": (sublayer_merge, ("add", "concat")),
            "cross_direction": (cross_direction, ("standard", "as_printed")),
            "mid_lstm": (mid_lstm, ("shared", "separate")),
            "residual": (residual, ("skip", "sum")),
            "input_norm": (input_norm, ("batch", "none")),
            "lstm_units": (lstm_units, ("split", "project")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        if hidden % num_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by num_heads ({num_heads})")
        bimodal = len(mods) == 2
        self.config: dict[str, Any] = dict(
            modalities=list(mods),
            audio_dim=audio_dim,
            text_dim=text_dim,
            num_classes=num_classes,
            hidden=hidden,
            lstm_layers=lstm_layers,
            lstm_units=lstm_units,
            sca=sca,
            sca_layers=sca_layers,
            num_heads=num_heads,
            ffn_dim=ffn_dim,
            dropout=dropout,
            sublayer_merge=sublayer_merge,
            cross_direction=cross_direction,
            causal=causal,
            mid_lstm=mid_lstm,
            residual=residual,
            input_norm=input_norm,
            head_hidden=head_hidden,
        )
        self.modalities = mods  # type: ignore[misc]  # instance-level: this variant's modalities
        self.residual_mode, self.use_sca = residual, bool(sca and bimodal)
        self.norm = nn.ModuleDict(
            {m: MaskedZScore(int(dims[m])) if input_norm == "batch" else nn.Identity() for m in mods}  # type: ignore[arg-type]
        )

        def bilstm(input_dim: int) -> MaskedBiLSTM:
            return MaskedBiLSTM(input_dim, hidden, lstm_layers, lstm_units, dropout)

        self.context = nn.ModuleDict({m: bilstm(int(dims[m])) for m in mods})  # type: ignore[arg-type]
        self.residual = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(int(dims[m]), hidden), nn.LayerNorm(hidden)) for m in mods}  # type: ignore[arg-type]
        )
        self.sca_unit = (
            _SCAUnit(hidden, sca_layers, num_heads, ffn_dim, dropout, sublayer_merge, cross_direction, causal)
            if self.use_sca
            else None
        )
        self.mid_context = (
            nn.ModuleDict({m: bilstm(int(dims[m])) for m in mods})  # type: ignore[arg-type]
            if bimodal and mid_lstm == "separate"
            else None
        )
        if bimodal:
            self.mid_fuse: MaskedBiLSTM | None = MaskedBiLSTM(2 * hidden, hidden, 1, lstm_units)
            self.mid_ff: nn.Module | None = nn.Linear(hidden, hidden)
            width = (4 * self.sca_unit.out_dim if self.sca_unit is not None else 0) + 3 * hidden
        else:
            self.mid_fuse, self.mid_ff = None, None
            width = 2 * hidden  # unimodal: [H_m; H_m^r]
        self.head_input_dim = width
        self.head = nn.Sequential(
            nn.Linear(width, head_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head_hidden, num_classes)
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CMRoberta:
        """Rebuild from :attr:`config` (the state dict then restores the weights and normalisation statistics)."""
        return cls(**config)

    def _inputs(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        feats = batch.get("features")
        if not isinstance(feats, dict):
            raise KeyError("CM-RoBERTa needs batch['features'] (utterance vectors per dialogue, (B, N, D))")
        x: dict[str, Tensor] = {}
        mask: Tensor | None = None
        for m in self.modalities:
            if m not in feats:
                raise KeyError(f"CM-RoBERTa needs batch['features'][{m!r}] ((B, N, D) utterance vectors)")
            xm = feats[m]
            if xm.ndim != 3:
                raise ValueError(f"batch['features'][{m!r}] must be (B, N, D) dialogues, got shape {tuple(xm.shape)}")
            expected = self.config[f"{m}_dim"]
            if xm.shape[-1] != expected:
                raise ValueError(f"batch['features'][{m!r}] has {xm.shape[-1]} features, the model expects {expected}")
            mm = feats.get(f"{m}_mask")
            mm = torch.ones(xm.shape[:2], dtype=torch.bool, device=xm.device) if mm is None else mm.bool()
            if mask is None:
                mask = mm
            elif mm.shape != mask.shape or not torch.equal(mm, mask):
                raise ValueError("audio and text masks differ: both must mark the same utterances of each dialogue")
            x[m] = xm.float()
        assert mask is not None
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every dialogue in the batch needs at least one valid utterance")
        return x, mask

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Classify every utterance of every dialogue.

        Args:
            batch: ``features`` with ``<modality> (B, N, D)`` and ``<modality>_mask (B, N)`` (same mask for both).

        Returns:
            ``logits (U, C)`` / ``probs`` of the ``U`` valid utterances (row-major), ``hidden[m] (B, N, d)``
            (context states), ``masks[m] (B, N)``, ``extras["dialogue_logits"] (B, N, C)``, ``extras["mask"]``.
        """
        x, mask = self._inputs(batch)
        maskf = mask.unsqueeze(-1).float()  # (B, N, 1)
        xn = {m: self.norm[m](x[m], mask) if isinstance(self.norm[m], MaskedZScore) else x[m] for m in x}
        h = {m: self.context[m](xn[m], mask) for m in self.modalities}  # (B, N, d)
        res = {m: self.residual[m](xn[m]) for m in self.modalities}  # (B, N, d)
        if self.residual_mode == "sum":
            res = {m: res[m] + h[m] for m in self.modalities}
        parts: list[Tensor] = []
        if self.mid_fuse is not None and self.mid_ff is not None:
            if self.sca_unit is not None:
                sca = self.sca_unit(h["audio"], h["text"], mask)
                parts += [sca["audio_cross"], sca["text_cross"], sca["audio_self"], sca["text_self"]]
            hm = h if self.mid_context is None else {m: self.mid_context[m](xn[m], mask) for m in self.modalities}
            fused = self.mid_fuse(torch.cat([hm["audio"], hm["text"]], dim=-1), mask)  # (B, N, d)
            parts += [self.mid_ff(fused), res["audio"], res["text"]]
        else:
            m = self.modalities[0]
            parts += [h[m], res[m]]
        z = torch.cat(parts, dim=-1) * maskf  # (B, N, K)
        dialogue_logits = self.head(z)  # (B, N, C)
        logits = dialogue_logits[mask]  # (U, C), row-major over valid turns
        return ModelOutput(
            logits=logits,
            probs=logits.softmax(-1),
            hidden={m: h[m] for m in self.modalities},
            masks={m: mask for m in self.modalities},
            extras={"dialogue_logits": dialogue_logits, "mask": mask},
        )


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> CMRoberta:
    return CMRoberta(**{**defaults, **overrides})


@register_model
def cm_roberta(**kwargs: Any) -> CMRoberta:
    """CM-RoBERTa, audio + text, with the SCA unit (Table 1 "Proposed method", MELD weighted F1 66.28)."""
    return _build(dict(modalities=("audio", "text")), kwargs)


@register_model
def cm_roberta_no_sca(**kwargs: Any) -> CMRoberta:
    """CM-RoBERTa without the self/cross-attention unit (Table 1 "without SCA unit", 65.66)."""
    return _build(dict(modalities=("audio", "text"), sca=False), kwargs)


@register_model
def cm_roberta_audio(**kwargs: Any) -> CMRoberta:
    """Audio-only CM-RoBERTa: BiLSTM + residual block (Table 1 audio column, 43.10)."""
    return _build(dict(modalities=("audio",)), kwargs)


@register_model
def cm_roberta_text(**kwargs: Any) -> CMRoberta:
    """Text-only CM-RoBERTa: BiLSTM + residual block (Table 1 text column, 63.83)."""
    return _build(dict(modalities=("text",)), kwargs)


for _name in ("cm_roberta", "cm_roberta_no_sca", "cm_roberta_audio", "cm_roberta_text"):
    register_model_options(_name, CMRobertaOptions)
