"""Copy a teacher's first transformer layers into emofuse blocks (students initialised from their teacher).

A CMD student normally starts its blocks from random weights (d = 32). With ``teacher_layers = K`` its blocks are
instead the teacher's first ``K`` layers, their weights copied into :class:`~emofuse.layers.transformer.PreLNBlock`
(Whisper encoder layers: LayerNorm before attention and FFN, GELU) or
:class:`~emofuse.layers.transformer.PostLNBlock` (BERT-style text layers: LayerNorm after each residual, GELU), so
that the student computes exactly what the teacher's first ``K`` layers compute on the same (unpadded) input. A
pre-LN teacher's final LayerNorm is copied too (``out_norm``); post-LN teachers need none.

Supported teachers: Whisper encoders and BERT-style text encoders (BERT, MiniLM; the ``model.encoder.layer``
layout). Anything else raises a one-line error naming the teacher.

Example:
    >>> import warnings
    >>> from emofuse.encoders import create_encoder
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     enc = create_encoder("tiny-bert", allow_random=True)
    >>> blocks, norm, dims = copy_teacher_blocks(enc, 1, dropout=0.0)
    >>> len(blocks), dims["dim"] == enc.output_dim, isinstance(norm, torch.nn.Identity)
    (1, True, True)
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from emofuse.encoders.hf_text import BLOCK_KEYS as BERT_KEYS
from emofuse.encoders.whisper import BLOCK_KEYS as WHISPER_KEYS
from emofuse.layers.transformer import PostLNBlock, PreLNBlock

__all__ = ["copy_teacher_blocks", "teacher_layer_count"]


def _layers(encoder: Any) -> tuple[str, nn.ModuleList, nn.LayerNorm | None]:
    """``(family, layers, final_norm)`` of a supported teacher, else a ValueError naming it."""
    model: Any = getattr(encoder, "model", None)
    name = getattr(encoder, "name", type(encoder).__name__)
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList) and hasattr(model, "conv1") and hasattr(model, "layer_norm"):
        return "whisper", layers, model.layer_norm
    stack = getattr(getattr(model, "encoder", None), "layer", None)
    if isinstance(stack, nn.ModuleList) and len(stack) and hasattr(stack[0], "attention"):
        first = stack[0].attention
        if hasattr(getattr(first, "self", None), "query") and hasattr(getattr(first, "output", None), "LayerNorm"):
            return "bert", stack, None
    raise ValueError(
        f"teacher_layers: cannot copy the layers of teacher {name!r} (supported: Whisper encoders and BERT-style "
        "text encoders); use teacher_layers: 0"
    )


def teacher_layer_count(encoder: Any) -> int:
    """Number of transformer layers the teacher has (the most ``teacher_layers`` can copy)."""
    return len(_layers(encoder)[1])


def _copy(block: nn.Module, layer: nn.Module, keys: dict[str, str]) -> nn.Module:
    """Load ``layer``'s weights into ``block`` by the name map ``keys`` (ours -> theirs); a bias they lack is 0."""
    theirs, ours = layer.state_dict(), block.state_dict()
    state = {}
    for name, value in ours.items():
        part, kind = name.rsplit(".", 1)
        source = theirs.get(f"{keys[part]}.{kind}")
        state[name] = torch.zeros_like(value) if source is None else source.detach().clone()
    block.load_state_dict(state)
    return block


def _whisper_block(layer: Any, num_heads: int, dropout: float) -> PreLNBlock:
    dim, ffn = layer.fc1.in_features, layer.fc1.out_features
    block = PreLNBlock(dim, num_heads, ffn, dropout, dropout, dropout, "gelu", layer.self_attn_layer_norm.eps)
    return cast(PreLNBlock, _copy(block, layer, WHISPER_KEYS))


def _bert_block(layer: Any, num_heads: int, dropout: float) -> PostLNBlock:
    dim, ffn = layer.intermediate.dense.in_features, layer.intermediate.dense.out_features
    block = PostLNBlock(dim, num_heads, ffn, dropout, "gelu", layer.attention.output.LayerNorm.eps)
    return cast(PostLNBlock, _copy(block, layer, BERT_KEYS))


def copy_teacher_blocks(
    encoder: Any, num_layers: int, dropout: float = 0.1
) -> tuple[nn.ModuleList, nn.Module, dict[str, int]]:
    """The teacher's first ``num_layers`` layers as emofuse blocks, plus its output norm and sizes.

    Args:
        encoder: The teacher (an :class:`~emofuse.encoders.Encoder` wrapping a Whisper encoder or a BERT-style
            model in ``encoder.model``).
        num_layers: Layers to copy, ``1..L``.
        dropout: Dropout of the copied blocks (attention weights, FFN and residual branches).

    Returns:
        ``(blocks, out_norm, dims)``: independent copies (later changes to the teacher never reach them), the final
        LayerNorm of a pre-LN teacher (``nn.Identity`` for post-LN ones), and ``{"dim", "num_heads", "ffn_dim"}``.

    Raises:
        ValueError: An unsupported teacher, or ``num_layers`` outside ``1..L``.
    """
    family, layers, final_norm = _layers(encoder)
    if not 1 <= num_layers <= len(layers):
        raise ValueError(f"teacher_layers must be in 1..{len(layers)} for teacher {encoder.name!r}, got {num_layers}")
    config = encoder.model.config
    num_heads = int(getattr(config, "encoder_attention_heads", 0) or config.num_attention_heads)
    build = _whisper_block if family == "whisper" else _bert_block
    blocks = nn.ModuleList(build(layers[i], num_heads, dropout) for i in range(num_layers))
    out_norm: nn.Module = nn.Identity()
    if final_norm is not None:
        out_norm = nn.LayerNorm(final_norm.normalized_shape, eps=float(final_norm.eps))
        out_norm.load_state_dict(final_norm.state_dict())
    fc1 = cast(nn.Linear, cast(Any, blocks[0]).fc1)
    dims = {"dim": int(fc1.in_features), "num_heads": num_heads, "ffn_dim": int(fc1.out_features)}
    return blocks, out_norm, dims
