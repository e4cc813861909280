"""Post-hoc analyses of trained models (no Lightning): gradient-based modality dominance and token importance."""

from emofuse.evaluation.analysis import (
    dominance_summary,
    dominance_table_markdown,
    modality_dominance,
    render_token_importance_html,
    token_importance,
)

__all__ = [
    "dominance_summary",
    "dominance_table_markdown",
    "modality_dominance",
    "render_token_importance_html",
    "token_importance",
]
