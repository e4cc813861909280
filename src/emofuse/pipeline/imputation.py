"""KNN imputation of a missing modality from time-averaged vectors (Rajan 2022, §4.4.2).

For a test sample whose modality ``m`` is missing: take its vectors of the modalities it has, find the ``K``
nearest training samples by Euclidean distance on those (concatenated) vectors, and use the mean of the
neighbours' ``m`` vectors instead. The thesis does this post hoc on the intra model's 120-d per-modality
vectors at the input of statistical pooling (``latent`` level, models that accept ``batch["latent_override"]``);
for any other feature model the same is done on the time-averaged *input* features (``input`` level: the
imputed vector is fed as a one-step sequence). With two modalities missing, both are imputed from the one left
(spec §3.5.7). The neighbour search is :class:`sklearn.neighbors.NearestNeighbors` fitted on the training split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emofuse.layers.pooling import masked_mean

__all__ = ["KNNImputer", "impute_inputs", "time_averages"]


def _numpy(x: np.ndarray | Tensor) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64)


class KNNImputer:
    """Nearest-neighbour imputation of missing modality vectors.

    Args:
        k: Neighbours ``K`` (thesis: 5, 10, 100); capped at the number of training samples.

    Example:
        >>> imp = KNNImputer(k=2).fit({"a": np.array([[0.0], [1.0], [10.0]]), "b": np.array([[1.0], [3.0], [5.0]])})
        >>> imp.impute({"a": np.array([[0.2]])}, ["b"])["b"].tolist()
        [[2.0]]
    """

    def __init__(self, k: int = 10) -> None:
        if k < 1:
            raise ValueError(f"KNN imputation needs k >= 1, got {k}")
        self.k = k
        self.train: dict[str, np.ndarray] = {}
        self._index: dict[tuple[str, ...], Any] = {}

    def fit(self, vectors: Mapping[str, np.ndarray | Tensor]) -> KNNImputer:
        """Store the training vectors: ``{modality: (N, d)}``, one row per training sample, every modality present."""
        arrays = {m: _numpy(v) for m, v in vectors.items()}
        sizes = {m: a.shape[0] for m, a in arrays.items()}
        if not arrays or len(set(sizes.values())) != 1 or any(a.ndim != 2 for a in arrays.values()):
            raise ValueError(f"fit needs (N, d) arrays with the same N for every modality, got sizes {sizes}")
        if next(iter(sizes.values())) == 0:
            raise ValueError("fit needs at least one training sample with every modality present")
        self.train, self._index = arrays, {}
        return self

    def _neighbours(self, available: tuple[str, ...]) -> Any:
        if available not in self._index:
            from sklearn.neighbors import NearestNeighbors

            X = np.concatenate([self.train[m] for m in available], axis=1)
            self._index[available] = NearestNeighbors(n_neighbors=min(self.k, len(X))).fit(X)
        return self._index[available]

    def impute(self, available: Mapping[str, np.ndarray | Tensor], missing: Sequence[str]) -> dict[str, np.ndarray]:
        """Impute ``missing`` modalities from the ``available`` ones.

        Args:
            available: ``{modality: (n, d_m)}`` of the samples to complete (the search space is these modalities'
                training vectors, concatenated in sorted modality order).
            missing: Modalities to impute.

        Returns:
            ``{modality: (n, d_m)}``: the mean of the ``K`` nearest training samples' vectors.
        """
        if not self.train:
            raise RuntimeError("KNNImputer.impute before fit")
        names = tuple(sorted(available))
        unknown = [m for m in (*names, *missing) if m not in self.train]
        if unknown:
            raise KeyError(f"no training vectors for {unknown} (fitted on {sorted(self.train)})")
        if not names:
            raise ValueError("KNN imputation needs at least one available modality")
        query = np.concatenate([_numpy(available[m]) for m in names], axis=1)
        _, idx = self._neighbours(names).kneighbors(query)  # (n, K)
        return {m: self.train[m][idx].mean(axis=1) for m in missing}


def time_averages(batch: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, Tensor]:
    """Mean over valid steps of ``batch["features"][m]`` per modality: ``{m: (B, D_m)}``."""
    feats = batch["features"]
    return {m: masked_mean(feats[m], feats.get(f"{m}_mask")) for m in modalities}


def impute_inputs(
    batch: dict[str, Any], values: Mapping[str, Tensor | np.ndarray], rows: Tensor | None = None
) -> dict[str, Any]:
    """A copy of ``batch`` whose ``features[m]`` is the one-step sequence ``values[m]`` (present, valid) at ``rows``.

    Rows not selected keep their own data (padded to at least one step). ``values[m]`` is ``(B, D_m)``.
    """
    feats = dict(batch["features"])
    present = dict(batch.get("present") or {})
    for m, v in values.items():
        x = feats[m]
        v = torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).to(x)
        B = x.shape[0]
        sel = torch.ones(B, dtype=torch.bool, device=x.device) if rows is None else rows.to(x.device).bool()
        mask = feats.get(f"{m}_mask")
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        new_x = x.clone()
        new_x[sel] = 0.0
        new_x[sel, 0] = v[sel]
        new_mask = mask.clone()
        new_mask[sel] = False
        new_mask[sel, 0] = True
        feats[m], feats[f"{m}_mask"] = new_x, new_mask
        p = present.get(m)
        p = torch.ones(B, dtype=torch.bool, device=x.device) if p is None else p.to(x.device).bool()
        present[m] = p | sel
    out = dict(batch)
    out["features"], out["present"] = feats, present
    return out
