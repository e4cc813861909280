"""Deep CCA correlation (Andrew et al., ICML 2013) as a differentiable pure function: SEW / SeqSEW alignment.

For two views ``H1`` ``(N, d1)`` and ``H2`` ``(N, d2)`` of the same ``N`` samples (rows), with the views
mean-centred over the batch (spec ``rajan-thesis.md`` §4.2, Eqs. 5.6-5.8 transposed to row samples)::

    Σ12 = H̄1ᵀ H̄2 / (N − 1),  Σ11 = H̄1ᵀ H̄1 / (N − 1) + r1 I,  Σ22 = H̄2ᵀ H̄2 / (N − 1) + r2 I
    T   = Σ11^{-1/2} Σ12 Σ22^{-1/2}
    corr = sum of the top-k singular values of T (k = all: the trace norm of T)

The singular values of ``T`` are the canonical correlations. The computation runs in float64. The whitening
uses the Cholesky factors of the (ridged, positive definite) covariances, ``T' = L1⁻¹ Σ12 L2⁻ᵀ`` (same
singular values as ``T``, finite gradients when eigenvalues repeat); a covariance that is not positive
definite (``r = 0`` and a batch of 32 samples, rank-deficient, spec §4.5.1) falls back to an inverse
square root by eigendecomposition with eigenvalues clamped at ``eps``. The loss of SEW / SeqSEW is ``−corr``.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(500, 3, generator=g)
    >>> round(float(dcca_correlation(x, 2 * x + 1, r1=0.0, r2=0.0)), 4)  # identical views: 3 correlations of 1
    3.0
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dcca_correlation", "dcca_loss"]


def _inv_sqrt(s: Tensor, eps: float) -> Tensor:
    """``S^{-1/2}`` of a symmetric PSD matrix through ``eigh`` with eigenvalues clamped at ``eps``."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(eps).rsqrt()) @ v.T


def _whitener(s: Tensor, eps: float) -> Tensor:
    """A matrix ``W`` with ``W S Wᵀ = I``: ``L⁻¹`` of the Cholesky factor when ``S`` is positive definite.

    ``W = Q S^{-1/2}`` for some orthogonal ``Q``, so ``W1 Σ12 W2ᵀ`` has the singular values of ``T``. Cholesky's
    gradient stays finite when eigenvalues repeat (a constant code unit, e.g. a dead ReLU, leaves an eigenvalue
    exactly ``r``; more units than samples leave many), where ``eigh``'s has ``1 / (λi − λj)`` terms and turns
    NaN. A matrix that is not positive definite (no ridge and rank-deficient) falls back to the clamped
    ``S^{-1/2}``.
    """
    chol, info = torch.linalg.cholesky_ex(s)
    if int(info) != 0:
        return _inv_sqrt(s, eps)
    eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def dcca_correlation(
    h1: Tensor,
    h2: Tensor,
    k: int | None = None,
    r1: float = 1e-3,
    r2: float = 1e-3,
    eps: float = 1e-9,
) -> Tensor:
    """Sum of the top-``k`` canonical correlations between two batches of codes.

    Args:
        h1: First view ``(N, d1)`` (SEW: the stronger code ``m_ss``).
        h2: Second view ``(N, d2)`` (the weaker code ``m_sw``).
        k: Number of components (SEW: 10); ``None``: all ``min(d1, d2)``.
        r1: Ridge added to ``Σ11`` (SeqSEW: 1e-3).
        r2: Ridge added to ``Σ22``.
        eps: Eigenvalue floor of the inverse square roots.

    Returns:
        Scalar correlation in ``[0, k]`` (float64 graph cast back to ``h1``'s dtype); gradients reach both views.

    Raises:
        ValueError: Views with different ``N``, fewer than 2 samples, or ``k < 1``.
    """
    if h1.ndim != 2 or h2.ndim != 2 or h1.shape[0] != h2.shape[0]:
        raise ValueError(
            f"dcca_correlation: views must be (N, d1) and (N, d2), got {tuple(h1.shape)} and {tuple(h2.shape)}"
        )
    n = h1.shape[0]
    if n < 2:
        raise ValueError(f"dcca_correlation: needs at least 2 samples, got {n}")
    if k is not None and k < 1:
        raise ValueError(f"dcca_correlation: k must be >= 1, got {k}")
    a, b = h1.double(), h2.double()
    a, b = a - a.mean(0), b - b.mean(0)
    s12 = a.T @ b / (n - 1)
    s11 = a.T @ a / (n - 1) + r1 * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    s22 = b.T @ b / (n - 1) + r2 * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    t = _whitener(s11, eps) @ s12 @ _whitener(s22, eps).T  # same singular values as Σ11^{-1/2} Σ12 Σ22^{-1/2}
    sv = torch.linalg.svdvals(t)  # descending
    top = sv if k is None else sv[: min(k, sv.numel())]
    return top.sum().to(h1.dtype)


def dcca_loss(h1: Tensor, h2: Tensor, k: int | None = None, r1: float = 1e-3, r2: float = 1e-3) -> Tensor:
    """``−dcca_correlation(h1, h2, k, r1, r2)``: the alignment loss L_al of SEW / L_a of SeqSEW."""
    return -dcca_correlation(h1, h2, k, r1, r2)
