"""Losses: pure functions first (``nt_xent(z_a, z_b, temperature)``), thin ``nn.Module`` wrappers second.

Imports torch only (layer L1); tasks combine these into objectives.
"""

from __future__ import annotations

from emofuse.losses.alignment import (
    DistributionContrastiveLoss,
    InstanceContrastiveLoss,
    distribution_contrastive_loss,
    instance_contrastive_loss,
    w2_diag,
    w2_diag_matrix,
)
from emofuse.losses.classification import (
    IGNORE_INDEX,
    ProbAverageCELoss,
    concordance_loss,
    cross_entropy,
    pcc_loss,
    prob_average_ce,
    prob_average_ce_from_logits,
)
from emofuse.losses.contrastive import NTXentLoss, nt_xent, nt_xent_flat, nt_xent_per_step
from emofuse.losses.dcca import dcca_correlation, dcca_loss

__all__ = [
    "IGNORE_INDEX",
    "DistributionContrastiveLoss",
    "InstanceContrastiveLoss",
    "NTXentLoss",
    "ProbAverageCELoss",
    "concordance_loss",
    "cross_entropy",
    "dcca_correlation",
    "dcca_loss",
    "distribution_contrastive_loss",
    "instance_contrastive_loss",
    "nt_xent",
    "nt_xent_flat",
    "nt_xent_per_step",
    "pcc_loss",
    "prob_average_ce",
    "prob_average_ce_from_logits",
    "w2_diag",
    "w2_diag_matrix",
]
