"""Per-feature z-scoring of cached or file features with statistics of the training split only.

Hand-crafted features (eGeMAPS, openSMILE functionals, COVAREP, MFCC) mix scales from hundredths to hundreds;
networks fed them raw learn little (a GRU on raw eGeMAPS predicts the mean). ``encoders.standardize: [audio]``
makes the runner fit, per fold, the mean and standard deviation of every feature dimension on the fold's
**training** utterances (never validation or test), store them in every checkpoint of the fold
(``feature_stats``), and serve ``(x − mean) / std`` to training, validation, test and later ``evaluate`` /
``predict`` runs of that checkpoint. Statistics are taken over what the model reads: every frame of every
training utterance for frame-level models, one vector per utterance for dialogue-level models. A dimension that
is constant on the training split (std < 1e-8) is centred and left unscaled.

Example:
    >>> import torch
    >>> class Store(dict):
    ...     output_dim = 2
    ...     def get(self, utt): return self[utt]
    >>> store = Store(a=torch.tensor([[0.0, 5.0], [2.0, 5.0]]), b=torch.tensor([[4.0, 5.0]]))
    >>> stats = fit_feature_stats({"audio": store}, ["a", "b"], ["audio"])
    >>> stats["audio"]["mean"], stats["audio"]["n"]
    ([2.0, 5.0], 3)
    >>> [round(v, 4) for v in StandardizedStore(store, stats["audio"]).get("b")[0].tolist()]  # constant dim: 0
    [1.2247, 0.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from emofuse.pipeline.dialogue import utterance_vector

__all__ = ["FeatureStatsError", "StandardizedStore", "fit_feature_stats", "standardize_stores"]

_EPS = 1e-8


class FeatureStatsError(ValueError):
    """Statistics cannot be fitted or do not fit the features (names the modality and the problem)."""


def _frames(store: Any, utt: str, pooled: bool) -> Tensor:
    if pooled:
        return utterance_vector(store, utt).reshape(1, -1)
    x = store.get(utt).float()
    return x.reshape(1, -1) if x.ndim == 1 else x.reshape(-1, x.shape[-1])


def fit_feature_stats(
    stores: Mapping[str, Any], utterances: Iterable[str], modalities: Sequence[str], pooled: bool = False
) -> dict[str, dict[str, Any]]:
    """Mean and (population) standard deviation per feature dimension over the given utterances.

    Args:
        stores: Per modality a feature store (``get(utt)`` → ``(T, D)`` or ``(D,)``; ``in`` for membership).
        utterances: The training utterance ids (those without features in a store are skipped).
        modalities: Modalities to fit.
        pooled: One vector per utterance (its ``get_pooled`` or frame mean) instead of every frame.

    Returns:
        ``{modality: {"mean": [D floats], "std": [D floats], "n": rows used, "over": "frames" | "utterances"}}``.

    Raises:
        FeatureStatsError: A modality has no store, or no training utterance has its features.
    """
    ids = list(utterances)
    out: dict[str, dict[str, Any]] = {}
    for m in modalities:
        if m not in stores:
            raise FeatureStatsError(
                f"encoders.standardize names {m!r}, but the model reads no cached or file features of it "
                f"(features: {sorted(stores)})"
            )
        store = stores[m]
        total: Tensor | None = None
        total_sq: Tensor | None = None
        n = 0
        for utt in ids:
            if utt not in store:
                continue
            x = _frames(store, utt, pooled).double()  # (rows, D)
            total = x.sum(0) if total is None else total + x.sum(0)
            total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
            n += x.shape[0]
        if total is None or total_sq is None or n == 0:
            raise FeatureStatsError(f"no training utterance has {m!r} features to fit standardisation on")
        mean = total / n
        std = (total_sq / n - mean * mean).clamp_min(0.0).sqrt()
        out[m] = {"mean": mean.tolist(), "std": std.tolist(), "n": n, "over": "utterances" if pooled else "frames"}
    return out


class StandardizedStore:
    """A feature store serving ``(x − mean) / std`` (``std`` below 1e-8: centred only).

    Args:
        store: The wrapped store (``get``, optional ``get_pooled``, ``in``; other attributes pass through).
        stats: One modality's entry of :func:`fit_feature_stats`.
    """

    def __init__(self, store: Any, stats: Mapping[str, Any]) -> None:
        mean = torch.tensor(stats["mean"], dtype=torch.float32)
        std = torch.tensor(stats["std"], dtype=torch.float32)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise FeatureStatsError(f"feature stats need equal 1-D mean and std, got {mean.shape} and {std.shape}")
        dim = getattr(store, "output_dim", None)
        if dim is not None and int(dim) != mean.numel():
            raise FeatureStatsError(f"feature stats are {mean.numel()}-d, the features {int(dim)}-d")
        self.store, self.mean = store, mean
        self.scale = torch.where(std < _EPS, torch.ones_like(std), std)

    def _norm(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.mean.numel():
            raise FeatureStatsError(f"features are {x.shape[-1]}-d, the stats {self.mean.numel()}-d")
        return ((x.float() - self.mean) / self.scale).to(x.dtype if x.is_floating_point() else torch.float32)

    def get(self, utt: str) -> Tensor:
        """Standardised frames of ``utt`` (same shape as the wrapped store's)."""
        return self._norm(self.store.get(utt))

    def get_pooled(self, utt: str) -> Tensor:
        """Standardised utterance vector ``(D,)`` (the wrapped store's pooled vector, else its frame mean)."""
        return self._norm(utterance_vector(self.store, utt))

    def __contains__(self, utt: object) -> bool:
        return utt in self.store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["store"], name)


def standardize_stores(stores: dict[str, Any], stats: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """``stores`` with every modality that has ``stats`` wrapped in a :class:`StandardizedStore`."""
    if not stats:
        return stores
    return {m: StandardizedStore(s, stats[m]) if m in stats else s for m, s in stores.items()}
