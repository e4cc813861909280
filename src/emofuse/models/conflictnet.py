"""ConflictNET: raw-speech conflict-intensity regression (Rajan et al., IEEE SPL 2019; Rajan thesis Ch. 3).

Spec ``rajan-thesis.md`` §2.2 (architecture fixed by the thesis and the authors' Keras code)::

    raw wave 8 kHz, 30 s = 240,000 samples, unit-RMS            (B, 1, 240000)
    → Conv1D(64, k=6) ReLU → BatchNorm → MaxPool(8)              (B, 64, 29999)
    → Conv1D(128, k=4) ReLU → BatchNorm → MaxPool(6)             (B, 128, 4999)
    → Conv1D(256, k=4) ReLU → BatchNorm → MaxPool(6)             (B, 256, 832)
    → AveragePool(4)                          ["AP"]             (B, 208, 256)
    → LSTM(128), full sequence                                   (B, 208, 128)
    → additive self-attention (32 units)      ["Attn"]           (B, 208, 128)
    → LSTM(64), last step (or time mean: "GAP")                  (B, 64)
    → Linear(1)                                                  (B, 1) conflict level in [-1, 1]

Trained with ``1 − PCC`` per mini-batch (:class:`~emofuse.tasks.regression.RegressionTask`,
``loss: pcc``) and Adam (lr 0.01) with Keras' per-update inverse-time decay ``lr / (1 + 0.6 k)``
(``optim.scheduler: inverse_time``). Table 3.1's ablations are options: ParaNET = ``avg_pool=False,
attention=False``; ``+AP``; ``+Attn``; ``+AP+Attn+GAP`` = ``gap=True``.

**Parameter count.** The thesis reports 420,418 trainable and 896 non-trainable parameters (Keras).
This port has exactly those, honestly:

* A Keras LSTM has *one* bias vector per layer (``4H``); PyTorch's ``nn.LSTM`` has two (``b_ih`` and
  ``b_hh``, which only ever appear as their sum). :class:`KerasLSTM` therefore holds ``weight_ih``,
  ``weight_hh`` and a single ``bias`` and runs the fused ``torch.lstm`` kernel with a zero ``b_hh``
  (a constant, not a parameter): the same function with the same number of free parameters
  (197,120 + 49,408 instead of 198,144 + 49,920).
* The 896 non-trainable parameters are the batch-norm moving mean and variance, ``2 (64 + 128 + 256)``:
  PyTorch's ``running_mean`` / ``running_var`` buffers (:meth:`ConflictNet.parameter_counts`). PyTorch
  also keeps an integer ``num_batches_tracked`` per BN layer, a step counter that Keras does not have
  and that is not a model parameter; it is not counted.
* Batch-norm uses Keras' defaults (``epsilon = 1e-3``, moving-average momentum 0.99, i.e. PyTorch
  ``momentum = 0.01``); weights use Keras' initialisers (Glorot-uniform kernels, orthogonal recurrent
  kernels, zero biases with forget-gate bias 1, Glorot-normal attention weights).

The model reads ``batch["audio"]`` as produced by the ``waveform`` encoder's ``preprocess``
(``{"waveforms": (B, L), "lengths": (B,)}``; HF-style ``{"input_values", "attention_mask"}`` is accepted
too) and crops or zero-pads every clip to ``window`` samples before the unit-RMS normalisation, as the
authors' code does (``librosa.load(path, 8000)``, pad/truncate to 240,000, ``s / sqrt(mean(s²))``).
The sequence layers see every step (no masking), like the original, which only ever sees full windows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emofuse.models._registry import register_model
from emofuse.models.base import EmotionModel, ModelOutput

__all__ = ["AdditiveSelfAttention", "ConflictNet", "KerasLSTM", "keras_inverse_time_lr"]

#: 30 s at 8 kHz.
WINDOW = 240_000


def keras_inverse_time_lr(lr: float, decay: float, step: int) -> float:
    """Legacy Keras optimiser ``decay``: the learning rate after ``step`` updates, ``lr / (1 + decay · step)``.

    Example:
        >>> round(keras_inverse_time_lr(0.01, 0.6, 25), 6)  # about one epoch of SSPNet (793 / 32)
        0.000625
    """
    return lr / (1.0 + decay * step)


class KerasLSTM(nn.Module):
    """One-layer LSTM with Keras' parameterisation: a single bias vector (see the module docstring).

    Gate order i, f, g (cell), o, as in both Keras and PyTorch.

    Args:
        input_size: ``D``.
        hidden_size: ``H``.
        return_sequences: Return every step ``(B, T, H)`` (else the last ``(B, H)``).
    """

    def __init__(self, input_size: int, hidden_size: int, return_sequences: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.return_sequences = input_size, hidden_size, return_sequences
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # Keras "kernel".T
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))  # Keras "recurrent_kernel".T
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras defaults: Glorot-uniform kernel, orthogonal recurrent kernel, zero bias with forget bias 1."""
        h = self.hidden_size
        nn.init.xavier_uniform_(self.weight_ih)
        nn.init.orthogonal_(self.weight_hh)
        with torch.no_grad():
            self.bias.zero_()
            self.bias[h : 2 * h] = 1.0  # unit_forget_bias

    def forward(self, x: Tensor) -> Tensor:
        """Run over ``x`` ``(B, T, D)``; returns ``(B, T, H)`` or ``(B, H)``."""
        b = x.shape[0]
        h0 = x.new_zeros(1, b, self.hidden_size)
        params = [self.weight_ih, self.weight_hh, self.bias, torch.zeros_like(self.bias)]
        out, _, _ = torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False, True)  # (B, T, H)
        return out if self.return_sequences else out[:, -1]

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.input_size}, {self.hidden_size}, return_sequences={self.return_sequences}"


class AdditiveSelfAttention(nn.Module):
    """Global additive self-attention (thesis Eq. 3.2; ``keras_self_attention.SeqSelfAttention`` defaults).

    ``g(t, t') = tanh(W_t h_t + W_x h_t' + b_h)``, ``e(t, t') = tanh(w_a · g(t, t') + b_a)``,
    ``a(t, ·) = softmax_t' e(t, ·)``, ``l_t = Σ_t' a(t, t') h_t'``.

    Args:
        dim: Feature size of ``h``.
        units: Size of ``g`` (32, the library default the authors used).
    """

    def __init__(self, dim: int, units: int = 32) -> None:
        super().__init__()
        self.w_t = nn.Parameter(torch.empty(dim, units))
        self.w_x = nn.Parameter(torch.empty(dim, units))
        self.b_h = nn.Parameter(torch.zeros(units))
        self.w_a = nn.Parameter(torch.empty(units, 1))
        self.b_a = nn.Parameter(torch.zeros(1))
        for w in (self.w_t, self.w_x, self.w_a):
            nn.init.xavier_normal_(w)

    def forward(self, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attend over ``h`` ``(B, T, D)`` (``mask`` ``(B, T)`` bool, True = valid key).

        Returns:
            ``(l, a)``: attended sequence ``(B, T, D)`` and weights ``(B, T, T)`` (rows sum to 1).
        """
        q = (h @ self.w_t)[:, :, None]  # (B, T, 1, U)
        k = (h @ self.w_x)[:, None]  # (B, 1, T, U)
        g = torch.tanh(q + k + self.b_h)  # (B, T, T, U)
        e = torch.tanh((g @ self.w_a)[..., 0] + self.b_a)  # (B, T, T)
        if mask is not None:
            e = e.masked_fill(~mask[:, None, :], float("-inf"))
        a = e.softmax(-1)
        return a @ h, a


def _glorot_conv(conv: nn.Conv1d) -> None:
    nn.init.xavier_uniform_(conv.weight)  # Keras: fan_in = k · C_in, fan_out = k · C_out, as here
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConflictNet(EmotionModel):
    """Raw-speech CNN-LSTM-attention regressor (see the module docstring).

    Args:
        window: Samples every clip is cropped / zero-padded to (240,000 = 30 s at 8 kHz); ``None``: use
            each batch as it comes.
        normalize: ``"rms"`` (unit RMS over the window, thesis) or ``"none"``.
        filters: Conv filters per block.
        kernels: Conv kernel sizes (stride 1, "valid").
        pools: Max-pool sizes (stride = size).
        avg_pool: Temporal average pool before the first LSTM (``"AP"``, Table 3.1); its size is ``avg_pool_size``.
        avg_pool_size: 4 (832 → 208 steps).
        attention: Additive self-attention between the LSTMs (``"Attn"``).
        attention_units: Size of the attention's hidden layer (32).
        gap: Second LSTM returns every step and the steps are averaged (``"GAP"`` ablation), instead of the
            last step.
        lstm_sizes: Hidden sizes of the two LSTMs (128, 64).
        num_outputs: Regression targets (1: the conflict level).
        bn_eps: Batch-norm epsilon (Keras: 1e-3).
        bn_momentum: PyTorch batch-norm momentum (Keras' 0.99 moving average = 0.01).
        encoder: Audio encoder whose ``preprocess`` builds ``batch["audio"]`` (the raw ``waveform``).
        modality: Always ``"audio"``.
    """

    modalities = ("audio",)
    input_kind = "raw"
    target_kind = "regression"
    export_limit = "a regression model (the exported graph outputs class probabilities)"

    def __init__(
        self,
        window: int | None = WINDOW,
        normalize: str = "rms",
        filters: tuple[int, ...] | list[int] = (64, 128, 256),
        kernels: tuple[int, ...] | list[int] = (6, 4, 4),
        pools: tuple[int, ...] | list[int] = (8, 6, 6),
        avg_pool: bool = True,
        avg_pool_size: int = 4,
        attention: bool = True,
        attention_units: int = 32,
        gap: bool = False,
        lstm_sizes: tuple[int, int] | list[int] = (128, 64),
        num_outputs: int = 1,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        encoder: str = "waveform",
        modality: str = "audio",
    ) -> None:
        super().__init__()
        if not (len(filters) == len(kernels) == len(pools)) or not filters:
            raise ValueError(
                f"filters, kernels and pools need the same (non-zero) length: {filters}, {kernels}, {pools}"
            )
        if normalize not in ("rms", "none"):
            raise ValueError(f"normalize must be 'rms' or 'none', got {normalize!r}")
        if modality != "audio":
            raise ValueError(f"ConflictNET reads raw audio; modality must be 'audio', got {modality!r}")
        if len(lstm_sizes) != 2:
            raise ValueError(f"lstm_sizes needs two sizes, got {lstm_sizes}")
        if window is not None and window < self.min_samples(kernels, pools, avg_pool_size if avg_pool else 1):
            raise ValueError(f"window={window} is too short for the conv/pool stack")
        self.config = {
            "window": window,
            "normalize": normalize,
            "filters": list(filters),
            "kernels": list(kernels),
            "pools": list(pools),
            "avg_pool": avg_pool,
            "avg_pool_size": avg_pool_size,
            "attention": attention,
            "attention_units": attention_units,
            "gap": gap,
            "lstm_sizes": list(lstm_sizes),
            "num_outputs": num_outputs,
            "bn_eps": bn_eps,
            "bn_momentum": bn_momentum,
            "encoder": encoder,
            "modality": modality,
        }
        self.window, self.normalize = window, normalize
        self.avg_pool_size = avg_pool_size if avg_pool else 0
        self.gap = gap
        blocks: list[nn.Module] = []
        c_in = 1
        for c, k, p in zip(filters, kernels, pools, strict=True):
            conv = nn.Conv1d(c_in, c, k)
            _glorot_conv(conv)
            blocks += [conv, nn.ReLU(), nn.BatchNorm1d(c, eps=bn_eps, momentum=bn_momentum), nn.MaxPool1d(p)]
            c_in = c
        self.features = nn.Sequential(*blocks)
        h1, h2 = lstm_sizes
        self.lstm1 = KerasLSTM(c_in, h1, return_sequences=True)
        self.attention = AdditiveSelfAttention(h1, attention_units) if attention else None
        self.lstm2 = KerasLSTM(h1, h2, return_sequences=gap)
        self.head = nn.Linear(h2, num_outputs)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def min_samples(kernels: Any, pools: Any, avg: int = 1) -> int:
        """Shortest input that leaves at least one LSTM step."""
        n = max(avg, 1)
        for k, p in reversed(list(zip(kernels, pools, strict=True))):
            n = n * p + k - 1
        return n

    def parameter_counts(self) -> dict[str, int]:
        """Keras-style counts: ``trainable`` parameters and ``non_trainable`` BN moving statistics.

        Returns:
            ``{"trainable", "non_trainable", "total"}`` (ConflictNET: 420,418 / 896 / 421,314).
        """
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        stats = 0
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None
                stats += m.running_mean.numel() + m.running_var.numel()
        return {"trainable": trainable, "non_trainable": frozen + stats, "total": trainable + frozen + stats}

    def waveform(self, audio: dict[str, Tensor]) -> Tensor:
        """``batch["audio"]`` → ``(B, L)`` samples, cropped / zero-padded to ``window``, unit-RMS normalised."""
        if "waveforms" in audio:
            x, lengths = audio["waveforms"], audio.get("lengths")
            valid = None if lengths is None else torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        elif "input_values" in audio:
            x, valid = audio["input_values"], audio.get("attention_mask")
        else:
            raise KeyError(f"batch['audio'] needs 'waveforms' or 'input_values' (raw samples), has {sorted(audio)}")
        x = x.float()
        if valid is not None:
            x = x * valid.to(x.dtype)  # padding is silence, as the authors' zero padding
        if self.window is not None:
            if x.shape[1] >= self.window:
                x = x[:, : self.window]
            else:
                x = F.pad(x, (0, self.window - x.shape[1]))
        if self.normalize == "rms":
            rms = x.pow(2).mean(-1, keepdim=True).sqrt()  # (B, 1) over the whole window
            x = x / rms.clamp_min(1e-8)
        return x

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        """Predict the conflict level.

        Args:
            batch: ``audio``: ``{"waveforms": (B, L), "lengths": (B,)}`` raw samples at 8 kHz.

        Returns:
            ``values`` ``(B, num_outputs)``; ``hidden["audio"]`` the second LSTM's input ``(B, T, 128)`` with
            an all-True mask; ``extras["attention"]`` ``(B, T, T)`` when attention is on.
        """
        x = self.waveform(batch["audio"])[:, None]  # (B, 1, L)
        x = self.features(x)  # (B, C, T)
        if self.avg_pool_size:
            x = F.avg_pool1d(x, self.avg_pool_size)  # (B, C, T / 4)
        h = self.lstm1(x.transpose(1, 2))  # (B, T, H1)
        extras: dict[str, Any] = {}
        if self.attention is not None:
            h, att = self.attention(h)
            extras["attention"] = att
        z = self.lstm2(h)  # (B, T, H2) with gap, else (B, H2)
        if self.gap:
            z = z.mean(1)
        values = self.head(z)  # (B, K)
        mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        return ModelOutput(
            values=values, hidden={"audio": h}, masks={"audio": mask}, pooled={"audio": z}, extras=extras
        )


def _build(defaults: dict[str, Any], overrides: dict[str, Any]) -> ConflictNet:
    return ConflictNet(**{**defaults, **overrides})


@register_model
def conflictnet(**kwargs: Any) -> ConflictNet:
    """ConflictNET = ParaNET + AP + Attn (thesis Table 3.1, PCC .853): 420,418 trainable parameters."""
    return _build({}, kwargs)


@register_model
def paranet(**kwargs: Any) -> ConflictNet:
    """ParaNET (Table 3.1 ablation, PCC .675): conv blocks, LSTM(128), LSTM(64), FC; no AP, no attention."""
    return _build({"avg_pool": False, "attention": False}, kwargs)
