"""ONNX export of feature-input classifiers (MulT, linear probes): encoder features in, class probabilities out.

Such a model never sees audio or text: it reads the states of a frozen encoder. Its graph therefore takes, per
modality it reads, the encoder's frames and a validity mask — exactly what the feature cache holds — and returns the
probabilities ``(B, C)`` in the checkpoint's class order. The checkpoint's standardisation (``encoders.standardize``)
is part of the graph, so a deployment feeds the encoder's raw states; the encoder itself (named, with its layer, in
the file's metadata) runs outside the graph.

======================  ==================  ======================================
input                   shape               meaning
======================  ==================  ======================================
``<m>_features``        ``(B, T, D_m)`` f32 the ``m`` encoder's frames, zero-padded
``<m>_mask``            ``(B, T)`` int64    1 at real frames
======================  ==================  ======================================
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from emofuse.inference.export import ExportError, finish_onnx, onnx_session
from emofuse.utils.optional import require

__all__ = ["OnnxFeatureModel", "export_feature_model", "verify_feature_onnx"]


class OnnxFeatureModel(nn.Module):
    """A feature-input classifier with its standardisation, taking positional ``(features, mask)`` per modality.

    Args:
        model: An utterance-level classifier whose :attr:`~emofuse.models.base.EmotionModel.input_kind` is
            ``"features"`` and whose family declares no export limit.

    Raises:
        ExportError: Another kind of model.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        caps = model.capabilities()
        if model.export_limit is not None or caps.input_kind != "features" or caps.level != "utterance":
            raise ExportError(f"model {model.model_name!r} is not an exportable feature-input classifier")
        self.model = model
        self.modalities = list(caps.modalities)
        self.input_names = [n for m in self.modalities for n in (f"{m}_features", f"{m}_mask")]
        stats = model.feature_stats or {}
        for m in self.modalities:
            mean = torch.tensor(stats[m]["mean"], dtype=torch.float32) if m in stats else torch.zeros(0)
            std = torch.tensor(stats[m]["std"], dtype=torch.float32) if m in stats else torch.zeros(0)
            self.register_buffer(f"mean_{m}", mean)
            self.register_buffer(f"scale_{m}", torch.where(std < 1e-8, torch.ones_like(std), std))

    def dims(self) -> dict[str, int]:
        """Feature size per modality (from the model's config)."""
        cfg = self.model.config
        return {m: int(cfg.get(f"{m}_dim") or cfg["input_dim"]) for m in self.modalities}

    def forward(self, *inputs: Tensor) -> Tensor:
        """``(features_m, mask_m)`` per modality, in :attr:`input_names` order → probabilities ``(B, C)``."""
        feats: dict[str, Tensor] = {}
        for i, m in enumerate(self.modalities):
            x, mask = inputs[2 * i], inputs[2 * i + 1] > 0
            mean, scale = getattr(self, f"mean_{m}"), getattr(self, f"scale_{m}")
            feats[m] = (x - mean) / scale if mean.numel() else x
            feats[f"{m}_mask"] = mask
        out = self.model({"features": feats})
        return out.probs if out.probs is not None else out.logits.softmax(-1)


def _example(wrapper: OnnxFeatureModel, batch: int, frames: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Random features with rows of different valid lengths (one shared mask across modalities)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, frames + 1, (batch,), generator=g)
    lengths[0] = frames
    mask = (torch.arange(frames)[None] < lengths[:, None]).long()  # (B, T)
    out: list[Tensor] = []
    for d in wrapper.dims().values():
        out += [torch.randn(batch, frames, d, generator=g) * mask[..., None], mask]
    return tuple(out)


def export_feature_model(
    model: Any, path: str | Path, *, overwrite: bool = False, opset: int = 17, meta: dict[str, str] | None = None
) -> Path:
    """Export a feature-input classifier to ONNX (dynamic batch and frame axes).

    Raises:
        ExportError: The file exists (without ``overwrite``) or the model is not exportable this way.
        MissingDependencyError: ``onnx`` is not installed (``pip install 'emofuse[export]'``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    require("onnx", extra="export", purpose="ONNX export")
    wrapper = OnnxFeatureModel(model).eval()
    axes: dict[str, dict[int, str]] = {"probs": {0: "batch"}}
    axes.update({n: {0: "batch", 1: "frames"} for n in wrapper.input_names})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                _example(wrapper, 2, 5),
                str(tmp),
                input_names=wrapper.input_names,
                output_names=["probs"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        finish_onnx(tmp, path, meta)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def verify_feature_onnx(
    model: Any, path: str | Path, cases: tuple[tuple[int, int], ...] = ((1, 3), (3, 9), (2, 17))
) -> float:
    """Largest ``|p_onnx - p_torch|`` over ``(batch, frames)`` cases (the eager model standardises as in training).

    Raises:
        ExportError: Either side gave NaN or infinite probabilities.
    """
    import numpy as np

    from emofuse.pipeline.standardize import StandardizedStore  # the eager side z-scores exactly as training did

    session = onnx_session(path)
    wrapper = OnnxFeatureModel(model).eval()
    stats = model.feature_stats or {}
    worst = 0.0
    for k, (batch, frames) in enumerate(cases):
        inputs = _example(wrapper, batch, frames, seed=k + 1)
        feats: dict[str, Tensor] = {}
        for i, m in enumerate(wrapper.modalities):
            x = inputs[2 * i]
            if m in stats:
                x = StandardizedStore(None, stats[m])._norm(x)
            feats[m], feats[f"{m}_mask"] = x, inputs[2 * i + 1] > 0
        with torch.inference_mode():
            out = model({"features": feats})
            ref = (out.probs if out.probs is not None else out.logits.softmax(-1)).float().numpy()
        got = session.run(["probs"], {n: v.numpy() for n, v in zip(wrapper.input_names, inputs, strict=True)})[0]
        if not (np.isfinite(ref).all() and np.isfinite(got).all()):
            raise ExportError(f"{path}: NaN or infinite probabilities (batch {batch}, {frames} frames)")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst
