"""Cross-modal alignment losses of MGCMA: distribution-level (2-Wasserstein) and instance-level (CLIP) InfoNCE.

Wang et al., "Enhancing Multimodal Emotion Recognition through Multi-Granularity Cross-Modal Alignment"
(spec ``mgcma.md`` §2.3, §2.5, §3.1). For a batch of ``N`` paired speech/text items:

* **Distribution level (L_DA).** Each item of each modality is a diagonal Gaussian ``N(μ, diag(σ²))``. The
  squared 2-Wasserstein distance between two of them has the closed form::

      W(N₁, N₂) = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½) = ‖μ₁ − μ₂‖² + ‖σ₁ − σ₂‖²   (diagonal Σ)

  (no square root is taken: the paper's ``W`` is the squared distance). The similarity is
  ``Sim = −p·W + q`` and ``L_DA = ½ [CE(S, diag) + CE(Sᵀ, diag)]`` with ``S[i, j] = Sim(N_{a_i}, N_{b_j}) / τ``:
  each item's positive is its own pair, the other cross-modal pairings of the batch are the negatives
  (no same-modality negatives).
* **Instance level (L_IA).** The same symmetric InfoNCE on pooled vectors, ``S[i, j] = z_{a_i} · z_{b_j} / τ``;
  by default the vectors are L2-normalised first (cosine, as CLIP; the paper writes a raw dot product, which
  with τ = 0.07 and 768-d vectors saturates the softmax, spec A7).

τ = 0.07 for both; p = 1/200 and q = 4 are MAP's values (spec A5). ``q`` cancels inside the softmax.

Example:
    >>> import torch
    >>> mu, sigma = torch.zeros(2, 3), torch.ones(2, 3)
    >>> w2_diag(mu, sigma, mu + 1.0, 2 * sigma).tolist()  # 3 * 1 + 3 * 1
    [6.0, 6.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DistributionContrastiveLoss",
    "InstanceContrastiveLoss",
    "distribution_contrastive_loss",
    "instance_contrastive_loss",
    "symmetric_info_nce",
    "w2_diag",
    "w2_diag_matrix",
]

#: MAP's ``negative_scale`` and ``shift`` (spec A5), the defaults of ``p`` and ``q``.
DEFAULT_P = 1.0 / 200.0
DEFAULT_Q = 4.0
DEFAULT_TEMPERATURE = 0.07


def _check_gaussians(name: str, mu: Tensor, sigma: Tensor) -> None:
    if mu.shape != sigma.shape:
        raise ValueError(f"{name}: mu and sigma must have the same shape, got {tuple(mu.shape)}, {tuple(sigma.shape)}")


def w2_diag(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, element by element (broadcasting).

    Args:
        mu1: Means ``(..., d)``.
        sigma1: Standard deviations ``(..., d)`` (``Σ₁ = diag(σ₁²)``), non-negative.
        mu2: Means ``(..., d)``.
        sigma2: Standard deviations ``(..., d)``.

    Returns:
        ``(...)``: ``‖μ₁ − μ₂‖² + ‖σ₁ − σ₂‖²``.
    """
    _check_gaussians("w2_diag", mu1, sigma1)
    _check_gaussians("w2_diag", mu2, sigma2)
    return ((mu1 - mu2) ** 2).sum(-1) + ((sigma1 - sigma2) ** 2).sum(-1)


def _sq_dist_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``‖a_i − b_j‖²`` for ``a (N, d)``, ``b (M, d)`` → ``(N, M)``, exact (no ``a² − 2ab + b²`` cancellation)."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def w2_diag_matrix(mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> Tensor:
    """All pairwise squared 2-Wasserstein distances between two sets of diagonal Gaussians.

    Args:
        mu_a: Means of the first set ``(N, d)``.
        sigma_a: Standard deviations ``(N, d)``.
        mu_b: Means of the second set ``(M, d)``.
        sigma_b: Standard deviations ``(M, d)``.

    Returns:
        ``(N, M)`` with ``W[i, j] = ‖μ_{a_i} − μ_{b_j}‖² + ‖σ_{a_i} − σ_{b_j}‖²``. Memory ``O(N M d)``, small for
        the paper's batch of 4.
    """
    _check_gaussians("w2_diag_matrix", mu_a, sigma_a)
    _check_gaussians("w2_diag_matrix", mu_b, sigma_b)
    if mu_a.dim() != 2 or mu_b.dim() != 2 or mu_a.shape[1] != mu_b.shape[1]:
        raise ValueError(f"w2_diag_matrix expects (N, d) and (M, d), got {tuple(mu_a.shape)} and {tuple(mu_b.shape)}")
    return _sq_dist_matrix(mu_a, mu_b) + _sq_dist_matrix(sigma_a, sigma_b)


def symmetric_info_nce(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE of an ``N × N`` score matrix whose diagonal holds the positives.

    Args:
        logits: ``(N, N)``, ``logits[i, j]`` = score of item ``i`` of modality a with item ``j`` of modality b
            (already divided by the temperature).

    Returns:
        Scalar ``½ [mean_i −log softmax_j(logits)[i, i] + mean_j −log softmax_i(logits)[j, j]]``, i.e.
        ``1/(2N) Σ_i (L_i^{a2b} + L_i^{b2a})``. ``N = 1`` gives exactly 0; ``N = 0`` gives 0 with a gradient path.
    """
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_info_nce expects a square (N, N) matrix, got {tuple(logits.shape)}")
    n = logits.shape[0]
    if n == 0:
        return logits.sum() * 0.0
    target = torch.arange(n, device=logits.device)
    logits = logits.float()
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def distribution_contrastive_loss(
    mu_a: Tensor,
    sigma_a: Tensor,
    mu_b: Tensor,
    sigma_b: Tensor,
    p: float | Tensor = DEFAULT_P,
    q: float | Tensor = DEFAULT_Q,
    temperature: float | Tensor = DEFAULT_TEMPERATURE,
) -> Tensor:
    """MGCMA's L_DA: symmetric InfoNCE on ``Sim = −p·W₂² + q`` between paired utterance-level Gaussians.

    Args:
        mu_a: Speech means ``(N, d)``.
        sigma_a: Speech standard deviations ``(N, d)``.
        mu_b: Text means ``(N, d)``.
        sigma_b: Text standard deviations ``(N, d)``.
        p: Scale ``p > 0`` of the distance (float, or a scalar tensor when learned).
        q: Shift ``q`` (cancels in the softmax; kept for the paper's form).
        temperature: ``τ`` (0.07).

    Returns:
        Scalar loss ``½ [CE(S, arange N) + CE(Sᵀ, arange N)]`` with ``S = (−p W + q) / τ``.
    """
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"distribution_contrastive_loss: pair shapes differ, {tuple(mu_a.shape)}, {tuple(mu_b.shape)}")
    if isinstance(p, (int, float)) and not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    if isinstance(temperature, (int, float)):
        _check_temperature(temperature)
    w = w2_diag_matrix(mu_a.float(), sigma_a.float(), mu_b.float(), sigma_b.float())  # (N, N)
    return symmetric_info_nce((-p * w + q) / temperature)


def instance_contrastive_loss(
    z_a: Tensor, z_b: Tensor, temperature: float | Tensor = DEFAULT_TEMPERATURE, normalize: bool = True
) -> Tensor:
    """MGCMA's L_IA (CLIP-style): symmetric InfoNCE on dot products of paired utterance vectors.

    Args:
        z_a: Speech vectors ``(N, d)``.
        z_b: Text vectors ``(N, d)``.
        temperature: ``τ`` (0.07).
        normalize: L2-normalise both first (cosine similarity, the recommended default); ``False`` is the
            paper's literal raw dot product.

    Returns:
        Scalar loss ``½ [CE(S, arange N) + CE(Sᵀ, arange N)]`` with ``S = z_a z_bᵀ / τ``.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        shapes = f"{tuple(z_a.shape)}, {tuple(z_b.shape)}"
        raise ValueError(f"instance_contrastive_loss expects paired (N, d) inputs, got {shapes}")
    if isinstance(temperature, (int, float)):
        _check_temperature(temperature)
    a, b = z_a.float(), z_b.float()
    if normalize:
        a, b = F.normalize(a, dim=-1, eps=1e-8), F.normalize(b, dim=-1, eps=1e-8)
    return symmetric_info_nce(a @ b.T / temperature)


class DistributionContrastiveLoss(nn.Module):
    """Module wrapper of :func:`distribution_contrastive_loss`, with optionally learned ``p``, ``q`` and ``τ``.

    Learned values are parametrised as ``log p`` and ``log τ`` (kept positive) and ``q`` (spec A5 / A13
    alternatives; the paper's values are fixed).

    Args:
        p: Initial / fixed scale.
        q: Initial / fixed shift.
        temperature: Initial / fixed ``τ``.
        learn_similarity: Learn ``p`` and ``q``.
        learn_temperature: Learn ``τ``.
    """

    def __init__(
        self,
        p: float = DEFAULT_P,
        q: float = DEFAULT_Q,
        temperature: float = DEFAULT_TEMPERATURE,
        learn_similarity: bool = False,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        _check_temperature(temperature)
        self.p0, self.q0, self.t0 = float(p), float(q), float(temperature)
        self.log_p = nn.Parameter(torch.tensor(float(p)).log()) if learn_similarity else None
        self.q = nn.Parameter(torch.tensor(float(q))) if learn_similarity else None
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log()) if learn_temperature else None

    def forward(self, mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> Tensor:
        """Loss of paired ``(N, d)`` Gaussians."""
        p = self.log_p.exp() if self.log_p is not None else self.p0
        q = self.q if self.q is not None else self.q0
        t = self.log_temperature.exp() if self.log_temperature is not None else self.t0
        return distribution_contrastive_loss(mu_a, sigma_a, mu_b, sigma_b, p, q, t)

    def extra_repr(self) -> str:
        """Settings shown in the module repr."""
        learned = [n for n, v in (("p,q", self.log_p), ("temperature", self.log_temperature)) if v is not None]
        return f"p={self.p0:g}, q={self.q0:g}, temperature={self.t0:g}, learned={learned or 'none'}"


class InstanceContrastiveLoss(nn.Module):
    """Module wrapper of :func:`instance_contrastive_loss`, with an optionally learned ``τ`` (as ``log τ``).

    Args:
        temperature: Initial / fixed ``τ``.
        normalize: L2-normalise before the dot product.
        learn_temperature: Learn ``τ``.
    """

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, normalize: bool = True, learn_temperature: bool = False
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.t0, self.normalize = float(temperature), normalize
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log()) if learn_temperature else None

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Loss of paired ``(N, d)`` vectors."""
        t = self.log_temperature.exp() if self.log_temperature is not None else self.t0
        return instance_contrastive_loss(z_a, z_b, t, self.normalize)

    def extra_repr(self) -> str:
        """Settings shown in the module repr."""
        return f"temperature={self.t0:g}, normalize={self.normalize}, learned={self.log_temperature is not None}"
