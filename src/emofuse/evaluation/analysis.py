"""Gradient analyses of a fused audio–text classifier: modality dominance (Table 6) and token importance (Table 7).

Kim & Kang 2022 §5 (spec ``cmd.md`` §5.4–5.5). Both differentiate the model's own Stage-2 loss, the cross-entropy
on the averaged per-modality probabilities ``ŷ = mean_m softmax(y_m / κ)``
(:func:`~emofuse.losses.classification.prob_average_ce_from_logits`), taken per sample: the loss is summed over the
batch, and samples do not interact, so every gradient is that of the sample's own ``ℓ_i`` (the batch mean's
gradient times ``B``) and does not depend on the batch it was computed in.

* **Modality dominance**: per labelled sample, ``g_m = ‖∂ℓ/∂y_m‖₂`` over the ``C`` raw logits ``y_m = F(p_m)``
  of each modality (A24 [R]: L2 norm). The modality with the larger norm dominates (a tie counts as text).
  ``κ`` scales both norms alike, so the choice does not depend on it. The summary gives each modality's share
  and the mean ± std (``ddof = 1``) of the text length per group, in WordPiece tokens without special tokens
  (counted after the encoder's truncation) and, when transcripts are given, in whitespace words.
* **Token importance** (Grad-CAM [52] style) on the contextual text sequence ``c_text`` (the last text block's
  output, which the classifier mean-pools), over valid tokens other than ``[CLS]``/``[SEP]``/padding, divided by the
  sentence's maximum so the top token scores 1 (all zeros when every value is 0). The spec's [R] reduction,
  ``‖∂ℓ/∂c_text[t]‖₂`` (``method="grad_norm"``), is the *same for every token*: ``c_text`` reaches the loss only
  through the masked mean, so ``∂ℓ/∂c_text[t] = ∂ℓ/∂pooled / T`` at every valid ``t``. The default is therefore
  the L2 norm of gradient × embedding, ``‖∂ℓ/∂c_text[t] ⊙ c_text[t]‖₂`` (``"grad_x_input"``); ``"grad_cam"``
  gives Grad-CAM proper, ``ReLU(⟨α, c_text[t]⟩)`` with ``α = −mean_t ∂ℓ/∂c_text[t]`` (signed evidence *for* the
  class; a sentence whose tokens all argue against it is all zeros). Tokens are the tokenizer's WordPiece pieces,
  ``##`` continuations kept as the paper prints them. The gold label is explained (the predicted class for
  unlabelled samples).

For :class:`~emofuse.models.cmd_student.CMDStudent`, ``ModelOutput.hidden["text"]`` is a masked *copy* of
``c_text`` that the logits do not depend on, so ``c_text`` is captured by forward hooks on the text branch's
blocks (the last block output, as a leaf) and checked against ``hidden["text"]``; other models must
return a ``hidden["text"]`` the logits are computed from.

Example:
    >>> summary = dominance_summary([
    ...     {"dominant": "audio", "text_tokens": 4, "words": 3},
    ...     {"dominant": "text", "text_tokens": 10, "words": 8},
    ...     {"dominant": "text", "text_tokens": 20, "words": 17},
    ... ])
    >>> summary["share"], summary["text_tokens"]["text"]["mean"]
    ({'audio': 0.3333333333333333, 'text': 0.6666666666666666}, 15.0)
    >>> print(dominance_table_markdown(summary).splitlines()[2])
    | Audio | 33.3% | 4.00 (–) |
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from emofuse.losses.classification import IGNORE_INDEX, prob_average_ce_from_logits
from emofuse.models.base import EmotionModel, ModelOutput
from emofuse.utils.tensors import to_device

__all__ = [
    "dominance_summary",
    "dominance_table_markdown",
    "modality_dominance",
    "render_token_importance_html",
    "token_importance",
]

_MODALITIES = ("audio", "text")


def _device(model: EmotionModel) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _stacked_logits(model: EmotionModel, out: ModelOutput) -> tuple[list[str], Tensor, float]:
    """Modalities, their logits ``(M, B, C)`` and ``κ``, checked to reproduce ``out.probs`` (prob-average fusion)."""
    kappa = getattr(model, "temperature", None)
    mods = list(out.modality_logits)
    if not mods or out.probs is None or not isinstance(kappa, (int, float)) or kappa <= 0:
        raise ValueError(
            f"{type(model).__name__} does not fuse per-modality probabilities (needs modality_logits, probs and a "
            "positive 'temperature'): the CMD gradient analyses do not apply"
        )
    stacked = torch.stack([out.modality_logits[m] for m in mods])  # (M, B, C)
    with torch.no_grad():
        fused = (stacked.float() / kappa).softmax(-1).mean(0)  # (B, C)
        if fused.shape != out.probs.shape or not torch.allclose(fused, out.probs.float(), rtol=1e-4, atol=1e-6):
            raise ValueError(f"{type(model).__name__}: probs are not mean_m softmax(modality_logits / temperature)")
    return mods, stacked, float(kappa)


def _summed_loss(stacked: Tensor, labels: Tensor, kappa: float) -> Tensor:
    """``Σ_i ℓ_i`` of the fused CE (the library's batch mean times the number of samples)."""
    return prob_average_ce_from_logits(stacked, labels, kappa) * labels.shape[0]


def _frame_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokens that frame a sentence (``[CLS]``/``[SEP]``/``[PAD]``, ``<s>``/``</s>``); ``[UNK]`` counts."""
    names = ("cls_token_id", "sep_token_id", "pad_token_id", "bos_token_id", "eos_token_id")
    return {int(i) for i in (getattr(tokenizer, n, None) for n in names) if i is not None}


def _token_counts(batch: Mapping[str, Any], tokenizer: Any | None) -> list[int] | None:
    """Valid non-special tokens per item of ``batch["text"]`` (without a tokenizer: valid positions − 2)."""
    text = batch.get("text")
    if not isinstance(text, Mapping) or "input_ids" not in text:
        return None
    ids = text["input_ids"]  # (B, L)
    valid = text.get("attention_mask", torch.ones_like(ids)).bool()
    if tokenizer is None:
        return [max(int(n) - 2, 0) for n in valid.sum(1)]
    special = torch.tensor(sorted(_frame_ids(tokenizer)), dtype=ids.dtype)
    keep = valid & ~torch.isin(ids.cpu(), special).to(valid.device)
    return [int(n) for n in keep.sum(1)]


def modality_dominance(
    model: EmotionModel,
    batches: Iterable[Mapping[str, Any]],
    tokenizer: Any | None = None,
    texts: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Which modality's logit gradient is larger, per labelled sample (Table 6).

    Args:
        model: A model fusing ``audio`` and ``text`` probabilities (CMD student); run in eval mode.
        batches: Collated batches with ``ids``, ``labels`` ``(B,)`` and the model inputs (``text.input_ids``
            ``(B, L)`` for token counts). Samples labelled ``-100`` are skipped.
        tokenizer: The text encoder's tokenizer, to exclude its special tokens from the counts; without it the
            count is valid positions − 2 (``[CLS] ... [SEP]``).
        texts: Raw transcripts by id, for lengths in whitespace words.

    Returns:
        ``{"records": [{"id", "label", "pred", "dominant", "grad_audio", "grad_text", "text_tokens", "words"}],
        "summary": dominance_summary(records)}``; ``grad_m = ‖∂ℓ/∂y_m‖₂`` over the ``C`` logits of modality ``m``.
    """
    model.eval()
    device = _device(model)
    records: list[dict[str, Any]] = []
    skipped = 0
    for batch in batches:
        if "labels" not in batch:
            skipped += len(batch["ids"])
            continue
        with torch.no_grad():
            out = model(to_device(batch, device))
        mods, stacked, kappa = _stacked_logits(model, out)
        if set(mods) != set(_MODALITIES):
            raise ValueError(f"modality dominance needs audio and text logits, the model returns {mods}")
        labels = batch["labels"].to(device).long()
        keep = labels != IGNORE_INDEX
        skipped += int((~keep).sum())
        leaf = stacked.detach().float()[:, keep].requires_grad_(True)  # (M, B', C)
        (grad,) = torch.autograd.grad(_summed_loss(leaf, labels[keep], kappa), leaf)
        norms = grad.norm(dim=-1)  # (M, B')
        preds = out.probs[keep].argmax(-1).tolist()
        counts = _token_counts(batch, tokenizer)
        rows = keep.nonzero().flatten().tolist()
        for j, i in enumerate(rows):
            g = {m: float(norms[mods.index(m), j]) for m in _MODALITIES}
            utt = str(batch["ids"][i])
            records.append(
                {
                    "id": utt,
                    "label": int(labels[i]),
                    "pred": int(preds[j]),
                    "dominant": "audio" if g["audio"] > g["text"] else "text",
                    "grad_audio": g["audio"],
                    "grad_text": g["text"],
                    "text_tokens": counts[i] if counts is not None else None,
                    "words": len(texts[utt].split()) if texts is not None and utt in texts else None,
                }
            )
    summary = dominance_summary(records)
    summary["skipped_unlabelled"] = skipped
    return {"records": records, "summary": summary}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 and mean is not None else None
    return {"mean": mean, "std": std, "n": n}


def dominance_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Share of samples each modality dominates and the text length per group.

    Args:
        records: ``{"dominant", "text_tokens", "words", ...}`` per sample (from :func:`modality_dominance`).

    Returns:
        ``{"n", "count": {m}, "share": {m}, "ties", "text_tokens": {m: {"mean", "std", "n"}}, "words": {...}}``
        (``std`` with ``ddof = 1``, ``None`` below two samples; ``words`` only when every record has them).
    """
    n = len(records)
    out: dict[str, Any] = {"n": n, "count": {}, "share": {}, "text_tokens": {}}
    out["ties"] = sum(1 for r in records if "grad_audio" in r and r["grad_audio"] == r["grad_text"])
    with_words = bool(records) and all(r.get("words") is not None for r in records)
    if with_words:
        out["words"] = {}
    for m in _MODALITIES:
        group = [r for r in records if r["dominant"] == m]
        out["count"][m] = len(group)
        out["share"][m] = len(group) / n if n else 0.0
        out["text_tokens"][m] = _stats([r["text_tokens"] for r in group if r.get("text_tokens") is not None])
        if with_words:
            out["words"][m] = _stats([r["words"] for r in group])
    out["reduction"] = "L2 norm of dL_ce/dy_m over the class logits"
    out["token_unit"] = "WordPiece tokens without special tokens"
    return out


def dominance_table_markdown(summary: Mapping[str, Any], data: str | None = None, unit: str = "text_tokens") -> str:
    """Table 6 as Markdown: dominant modality, selection ratio, ``μ(±σ)`` raw text length.

    Args:
        summary: :func:`dominance_summary` output.
        data: Dataset name for a leading ``Data`` column (omitted when ``None``).
        unit: ``"text_tokens"`` (WordPiece) or ``"words"``.

    Returns:
        The table; a group without samples prints ``–``, a one-sample group ``mean (–)``.
    """
    unit_name = "raw text-token length" if unit == "text_tokens" else "raw text length (words)"
    head = (["Data"] if data else []) + ["Dominant modality", "Selection ratio", f"μ(±σ) {unit_name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    stats = summary.get(unit, {})
    for m in _MODALITIES:
        s = stats.get(m, {})
        if not s.get("n"):
            length = "–"
        else:
            length = f"{s['mean']:.2f} (" + (f"±{s['std']:.2f}" if s.get("std") is not None else "–") + ")"
        cells = ([data] if data else []) + [m.capitalize(), f"{100 * summary['share'][m]:.1f}%", length]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _capture_text_context(model: EmotionModel) -> tuple[list[Any], dict[str, Tensor]]:
    """Forward hooks storing the last text-block output (``c_text``) of a CMD-style model.

    Each text block's output is replaced by a detached copy that requires grad: the last one is ``c_text``, a leaf
    whose gradient exists even when the weights are frozen, and nothing is differentiated further down.
    """
    store: dict[str, Tensor] = {}
    branch = getattr(model, "branch", None)
    if not callable(branch) or "text" not in model.modalities:
        return [], store
    text = branch("text")
    blocks = [*getattr(text, "cross", []), *getattr(text, "self_blocks", [])]

    def hook(_module: Any, _inputs: Any, output: Tensor) -> Tensor:
        store["c_text"] = output.detach().requires_grad_(True)  # the last block to run wins
        return store["c_text"]

    return [b.register_forward_hook(hook) for b in blocks], store


_METHODS = ("grad_x_input", "grad_cam", "grad_norm")


def _token_scores(grad: Tensor, c_text: Tensor, mask: Tensor, method: str) -> Tensor:
    """Raw per-token importance ``(B, T)`` from ``∂ℓ/∂c_text`` and ``c_text`` ``(B, T, d)``."""
    if method == "grad_norm":
        return grad.norm(dim=-1)
    if method == "grad_x_input":
        return (grad * c_text).norm(dim=-1)
    m = mask.unsqueeze(-1).to(grad.dtype)  # (B, T, 1)
    alpha = -(grad * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, d): channel weights, evidence for the class
    return torch.einsum("bd,btd->bt", alpha, c_text).clamp_min(0.0)


def token_importance(
    model: EmotionModel,
    batch: Mapping[str, Any],
    tokenizer: Any,
    classes: Sequence[str] | None = None,
    method: str = "grad_x_input",
) -> list[dict[str, Any]]:
    """Per-token importance of the contextual text embedding for the fused loss (Table 7).

    Args:
        model: A model fusing per-modality probabilities, with a text stream; run in eval mode.
        batch: One collated batch: ``ids``, ``text.input_ids`` / ``text.attention_mask`` ``(B, L)``, the other
            inputs, and optionally ``labels`` ``(B,)`` (missing / ``-100``: the predicted class is explained).
        tokenizer: The text encoder's tokenizer (ids → WordPiece tokens; ``[CLS]``/``[SEP]``/``[PAD]`` dropped).
        classes: Class names for ``label``/``pred``; indices when ``None``.
        method: ``"grad_x_input"`` (default), ``"grad_cam"`` or ``"grad_norm"`` (see the module docstring).

    Returns:
        Per sample ``{"id", "tokens": [str], "scores": [float] in [0, 1] (max 1 unless all 0), "raw": [float]
        (unnormalised), "label", "pred", "method"}``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    text = batch.get("text")
    if not isinstance(text, Mapping) or "input_ids" not in text:
        raise ValueError("token importance needs batch['text']['input_ids'] (raw text inputs, not cached features)")
    model.eval()
    device = _device(model)
    handles, store = _capture_text_context(model)
    try:
        with torch.enable_grad():
            out = model(to_device(batch, device))
    finally:
        for h in handles:
            h.remove()
    _mods, stacked, kappa = _stacked_logits(model, out)
    preds = out.probs.argmax(-1)  # (B,)
    gold = batch.get("labels")
    target = preds if gold is None else torch.where(gold.to(device) == IGNORE_INDEX, preds, gold.to(device).long())
    hidden, mask = out.hidden.get("text"), out.masks.get("text")
    c_text = store.get("c_text", hidden)
    if c_text is None or mask is None or not c_text.requires_grad:
        raise ValueError(f"{type(model).__name__} exposes no differentiable text sequence (hidden['text'])")
    if hidden is not None and c_text is not hidden:  # the hooks caught the sequence the model pools
        if not torch.allclose(c_text * mask.unsqueeze(-1).to(c_text.dtype), hidden, atol=1e-5):
            raise RuntimeError("captured text context does not match hidden['text']")
    (grad,) = torch.autograd.grad(_summed_loss(stacked, target, kappa), c_text, allow_unused=True)
    if grad is None:
        raise ValueError(f"{type(model).__name__}: the logits do not depend on hidden['text']")
    raw_all = _token_scores(grad.detach().float(), c_text.detach().float(), mask, method).cpu()  # (B, T)
    ids = text["input_ids"].cpu()  # (B, L)
    valid = text.get("attention_mask", torch.ones_like(ids)).bool().cpu()
    if raw_all.shape != ids.shape:
        raise ValueError(f"text sequence {tuple(raw_all.shape)} does not align with input_ids {tuple(ids.shape)}")
    frame = _frame_ids(tokenizer)

    def name(k: int) -> str | int:
        return classes[k] if classes is not None else k

    items = []
    for i, utt in enumerate(batch["ids"]):
        pos = [t for t in range(ids.shape[1]) if valid[i, t] and int(ids[i, t]) not in frame]
        raw = [float(raw_all[i, t]) for t in pos]
        top = max(raw, default=0.0)
        label = int(gold[i]) if gold is not None else IGNORE_INDEX
        items.append(
            {
                "id": str(utt),
                "tokens": tokenizer.convert_ids_to_tokens([int(ids[i, t]) for t in pos]),
                "scores": [v / top if top > 0 else 0.0 for v in raw],
                "raw": raw,
                "label": name(label) if label != IGNORE_INDEX else None,
                "pred": name(int(preds[i])),
                "method": method,
            }
        )
    return items


_RGB = (220, 38, 38)
_LEGEND = {
    "grad_cam": "Grad-CAM: ReLU(⟨α, c<sub>t</sub>⟩), α = −mean<sub>t</sub> ∂L<sub>ce</sub>/∂c<sub>t</sub>",
    "grad_x_input": "‖∂L<sub>ce</sub>/∂c<sub>t</sub> ⊙ c<sub>t</sub>‖",
    "grad_norm": "‖∂L<sub>ce</sub>/∂c<sub>t</sub>‖",
}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; color: #111; }
.utt { margin: 0.8em 0; padding: 0.5em 0.7em; border-left: 3px solid #ccc; }
.meta { font-size: 0.8em; color: #555; margin-bottom: 0.3em; }
.tok { padding: 0.1em 0.15em; border-radius: 3px; line-height: 1.9; }
.legend .tok { display: inline-block; min-width: 3em; text-align: center; }
"""


def _span(token: str, score: float) -> str:
    s = min(max(float(score), 0.0), 1.0)
    r, g, b = _RGB
    return (
        f'<span class="tok" style="background-color: rgba({r}, {g}, {b}, {s:.3f})" title="{s:.3f}">'
        f"{html.escape(token)}</span>"
    )


def render_token_importance_html(items: Sequence[Mapping[str, Any]], title: str = "Token importance") -> str:
    """A self-contained HTML page: every token on a background whose opacity is its score.

    Args:
        items: :func:`token_importance` outputs (``id``, ``tokens``, ``scores``, optional ``label``/``pred``);
            grouped by ``label`` in first-seen order.
        title: Page title and heading.

    Returns:
        The HTML document (no external resources; all text escaped).
    """
    method = str(items[0].get("method", "grad_x_input")) if items else "grad_x_input"
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for it in items:
        groups.setdefault("" if it.get("label") is None else str(it["label"]), []).append(it)
    legend = " ".join(_span(f"{s:.2f}", s) for s in (0.0, 0.25, 0.5, 0.75, 1.0))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>',
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="legend">Background opacity = token importance ({_LEGEND.get(method, html.escape(method))}) '
        f"divided by the sentence maximum; L<sub>ce</sub> is the fused loss for the gold label: {legend}</p>",
    ]
    for label, group in groups.items():
        parts.append(f"<h2>{html.escape(label or 'unlabelled')}</h2>")
        for it in group:
            meta = f"{it['id']}" + (f" · predicted: {it['pred']}" if it.get("pred") is not None else "")
            spans = " ".join(_span(t, s) for t, s in zip(it["tokens"], it["scores"], strict=True))
            parts.append(f'<div class="utt"><div class="meta">{html.escape(meta)}</div><div>{spans}</div></div>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
