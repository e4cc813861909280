"""NT-Xent (SimCLR) contrastive losses for CMD's Stage-1 distillation.

Kim & Kang (2022), Eq. 8–9 (spec ``cmd.md`` §3.1), with the printed typo ``ℓ_{n+k,n}`` fixed to
``ℓ_{n+k,k}``. For teacher projections ``z^t`` and student projections ``z^s`` of ``n`` samples,
stack the ``2n`` vectors (teachers first), take cosine similarities ``s_ij`` and a temperature ``κ``::

    ℓ_{i,j} = -log( exp(s_ij/κ) / Σ_{k≠i} exp(s_ik/κ) )                  (2n × 2n, diagonal excluded)
    L_clr   = 1/(2n) Σ_{k=1..n} [ ℓ_{k,n+k} + ℓ_{n+k,k} ]

Each teacher vector's positive is the student vector of the same sample (and vice versa); the other
``2n − 2`` vectors are negatives. The paper computes this "per time step" (Fig. 5 caption); how the
time axis enters is ambiguity A1, so two readings are offered:

* :func:`nt_xent_per_step` (literal, default): one ``2n_τ × 2n_τ`` problem per time step ``τ``
  over the ``n_τ`` samples valid at ``τ``; the ``L_τ`` are averaged with weights ``n_τ``.
* :func:`nt_xent_flat`: every valid (sample, position) pair in a single ``2N × 2N`` problem.

A third choice, not a reading of the paper, contrasts whole utterances (``time_axis="utterance"`` of the
distillation task): each side is mean-pooled over its valid steps first, then :func:`nt_xent` runs over the
batch. The teacher side may then be one vector per utterance (e.g. Whisper's per-layer statistics).

Example:
    >>> import torch
    >>> z = torch.randn(4, 8)
    >>> bool(nt_xent(z, z, temperature=0.01) < 1e-3)  # perfectly aligned, sharp: near zero
    True
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["NTXentLoss", "Similarity", "TimeAxis", "nt_xent", "nt_xent_flat", "nt_xent_per_step"]

Similarity = Literal["cosine", "dot"]
TimeAxis = Literal["per_step", "flat", "utterance"]


def _check_pair(z_a: Tensor, z_b: Tensor, temperature: float) -> None:
    if z_a.shape != z_b.shape:
        raise ValueError(f"nt_xent: z_a and z_b must have the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")


def _normalise(z: Tensor, similarity: Similarity) -> Tensor:
    if similarity == "cosine":
        return F.normalize(z.float(), dim=-1, eps=1e-8)
    if similarity == "dot":
        return z.float()
    raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")


def _row_losses(z: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """Sum of ``ℓ_{i, pos(i)}`` over anchor rows ``rows`` of the stacked ``(2N, d)`` matrix ``z``."""
    n2 = z.shape[0]
    n = n2 // 2
    sim = z[rows] @ z.T / temperature  # (R, 2N)
    sim = sim.masked_fill(rows[:, None] == torch.arange(n2, device=z.device)[None, :], float("-inf"))
    pos = (rows + n) % n2  # positive of i is N+i, of N+i is i
    return (torch.logsumexp(sim, dim=1) - sim.gather(1, pos[:, None]).squeeze(1)).sum()


def nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.05,
    similarity: Similarity = "cosine",
    chunk_size: int | None = None,
) -> Tensor:
    """SimCLR NT-Xent between paired views (Eq. 8–9, typo fixed).

    Args:
        z_a: First view ``(N, d)`` (CMD: teacher projections ``z^t``), rows ``0..N-1`` of the stack.
        z_b: Second view ``(N, d)`` (student projections ``z^s``), rows ``N..2N-1``.
        temperature: ``κ`` (paper grid {0.01, 0.05, 0.1}).
        similarity: ``"cosine"`` (default, as in SimCLR) or ``"dot"`` (ambiguity A2).
        chunk_size: Anchor rows per chunk. ``None`` builds the whole ``2N × 2N`` matrix (memory
            ``O(N²)``); an integer computes ``chunk_size × 2N`` blocks under activation
            checkpointing, so memory for the backward pass is also ``O(chunk_size · N)`` at the cost
            of one recomputation.

    Returns:
        Scalar loss: the mean of ``ℓ`` over the ``2N`` anchors, i.e. ``1/(2N) Σ_k [ℓ_{k,N+k} + ℓ_{N+k,k}]``.
        ``N = 1`` gives exactly 0 (no negatives); ``N = 0`` gives 0 with a gradient path.
    """
    _check_pair(z_a, z_b, temperature)
    n = z_a.shape[0]
    if n == 0:
        return z_a.sum() * 0.0 + z_b.sum() * 0.0
    z = torch.cat([_normalise(z_a, similarity), _normalise(z_b, similarity)], dim=0)  # (2N, d)
    rows = torch.arange(2 * n, device=z.device)
    if chunk_size is None or chunk_size >= 2 * n:
        return _row_losses(z, rows, temperature) / (2 * n)
    total = z.new_zeros(())
    for start in range(0, 2 * n, chunk_size):
        part = rows[start : start + chunk_size]
        total = total + checkpoint(_row_losses, z, part, temperature, use_reentrant=False)
    return total / (2 * n)


def nt_xent_per_step(
    z_t: Tensor,
    z_s: Tensor,
    mask: Tensor | None = None,
    temperature: float = 0.05,
    similarity: Similarity = "cosine",
) -> Tensor:
    """NT-Xent per time step over the batch (the spec's literal reading of Fig. 5, default).

    For every position ``τ``, the ``n_τ`` samples valid at ``τ`` form one ``2n_τ × 2n_τ`` problem
    whose loss ``L_τ`` is :func:`nt_xent` on ``z_t[valid, τ]`` and ``z_s[valid, τ]``. The result is
    ``Σ_τ n_τ L_τ / Σ_τ n_τ``. Since ``L_τ`` is a mean over ``2n_τ`` anchors, this weighted average
    equals the plain mean of ``ℓ`` over every valid anchor of every kept step.

    Steps with ``n_τ < 2`` (typically the tail of the longest utterance) are **skipped**: with one
    sample there is no negative and ``L_τ`` would be a constant 0 that only dilutes the average. If no
    step has two valid samples (e.g. batch of one) the loss is 0, with a gradient path to the inputs.

    All steps are computed at once as a ``(T, 2B, 2B)`` tensor (memory ``O(T·B²)``, small for
    utterance batches).

    Args:
        z_t: Teacher projections ``(B, T, d)``.
        z_s: Student projections ``(B, T, d)``, aligned position-for-position with ``z_t``.
        mask: ``(B, T)`` bool, True at valid steps; ``None``: all valid.
        temperature: ``κ``.
        similarity: ``"cosine"`` or ``"dot"``.

    Returns:
        Scalar loss.
    """
    _check_pair(z_t, z_s, temperature)
    if z_t.dim() != 3:
        raise ValueError(f"nt_xent_per_step expects (B, T, d) inputs, got {tuple(z_t.shape)}")
    b, t, _ = z_t.shape
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.bool, device=z_t.device)
    elif mask.shape != (b, t):
        raise ValueError(f"nt_xent_per_step: mask must be {(b, t)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    n_tau = mask.sum(dim=0)  # (T,)
    keep = n_tau >= 2
    if not bool(keep.any()):
        return z_t.sum() * 0.0 + z_s.sum() * 0.0
    z = torch.cat([_normalise(z_t, similarity), _normalise(z_s, similarity)], dim=0)[:, keep]  # (2B, T', d)
    valid = torch.cat([mask, mask], dim=0)[:, keep].T  # (T', 2B)
    z = z.transpose(0, 1)  # (T', 2B, d)
    sim = z @ z.transpose(1, 2) / temperature  # (T', 2B, 2B)
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye[None] | ~valid[:, None, :], float("-inf"))
    pos = (torch.arange(2 * b, device=z.device) + b) % (2 * b)
    pos_sim = sim.gather(2, pos[None, :, None].expand(sim.shape[0], -1, 1)).squeeze(2)  # (T', 2B)
    lse = torch.logsumexp(sim, dim=2)
    ell = torch.where(valid, lse - pos_sim, torch.zeros_like(lse))  # invalid anchors: 0 (no NaN in grads)
    return ell.sum() / valid.sum()


def nt_xent_flat(
    z_t: Tensor,
    z_s: Tensor,
    mask: Tensor | None = None,
    temperature: float = 0.05,
    similarity: Similarity = "cosine",
    chunk_size: int | None = 4096,
) -> Tensor:
    """NT-Xent over all valid (sample, position) pairs in one problem (the alternative reading of A1).

    The ``N = Σ_b T_b`` valid positions are flattened into :func:`nt_xent`: each teacher frame's
    positive is the student frame of the same sample and position, and every other frame of the
    batch (other samples *and* other positions of the same sample) is a negative. A 1.28 M-sample
    batch has ``N ≈ 4,000`` audio frames, so the full similarity matrix is ``8,000²``; by default the
    anchors are processed in checkpointed chunks of ``chunk_size`` rows to bound memory.

    Args:
        z_t: Teacher projections ``(B, T, d)``.
        z_s: Student projections ``(B, T, d)``.
        mask: ``(B, T)`` bool, True at valid steps; ``None``: all valid.
        temperature: ``κ``.
        similarity: ``"cosine"`` or ``"dot"``.
        chunk_size: See :func:`nt_xent`; ``None`` for one dense matrix.

    Returns:
        Scalar loss.
    """
    _check_pair(z_t, z_s, temperature)
    if mask is None:
        d = z_t.shape[-1]
        return nt_xent(z_t.reshape(-1, d), z_s.reshape(-1, d), temperature, similarity, chunk_size)
    if mask.shape != z_t.shape[:-1]:
        raise ValueError(f"nt_xent_flat: mask must be {tuple(z_t.shape[:-1])}, got {tuple(mask.shape)}")
    mask = mask.bool()
    return nt_xent(z_t[mask], z_s[mask], temperature, similarity, chunk_size)


class NTXentLoss(nn.Module):
    """Module wrapper: ``NTXentLoss(temperature, time_axis)(z_t, z_s, mask)``.

    Args:
        temperature: ``κ``.
        time_axis: ``"per_step"`` (:func:`nt_xent_per_step`) or ``"flat"`` (:func:`nt_xent_flat`).
            2-D inputs ``(N, d)`` always use :func:`nt_xent`.
        similarity: ``"cosine"`` or ``"dot"``.
    """

    def __init__(
        self, temperature: float = 0.05, time_axis: TimeAxis = "per_step", similarity: Similarity = "cosine"
    ) -> None:
        super().__init__()
        if time_axis not in ("per_step", "flat"):
            raise ValueError(f"time_axis must be 'per_step' or 'flat', got {time_axis!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.time_axis = time_axis
        self.similarity: Similarity = similarity

    def forward(self, z_t: Tensor, z_s: Tensor, mask: Tensor | None = None) -> Tensor:
        """Loss for ``(N, d)`` pairs or ``(B, T, d)`` sequences with an optional ``(B, T)`` mask."""
        if z_t.dim() == 2:
            return nt_xent(z_t, z_s, self.temperature, self.similarity)
        if self.time_axis == "flat":
            return nt_xent_flat(z_t, z_s, mask, self.temperature, self.similarity)
        return nt_xent_per_step(z_t, z_s, mask, self.temperature, self.similarity)

    def extra_repr(self) -> str:
        """Settings shown in the module repr."""
        return f"temperature={self.temperature}, time_axis={self.time_axis!r}, similarity={self.similarity!r}"
