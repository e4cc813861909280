"""Transformer blocks: Algorithm 1 arithmetic, masks, padding invariance, causal mask, positions."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emofuse.layers.transformer import (
    MultiHeadAttention,
    PostLNBlock,
    PreLNBlock,
    attention_mask,
    sinusoidal_positions,
)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_post_ln_block_parameter_count_by_hand():
    d, m = 32, 128
    by_hand = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 2 * 2 * d
    assert by_hand == 12_704
    assert n_params(PostLNBlock(d, 2, m)) == 12_704
    assert 6 * n_params(PostLNBlock(d, 2, m)) == 76_224


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, 2).eval()
    ref = nn.MultiheadAttention(32, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    kv_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    got = ours(q, kv, kv, attention_mask(5, 7, kv_mask))
    want, _ = ref(q, kv, kv, key_padding_mask=~kv_mask)
    assert torch.allclose(got, want, atol=1e-5)


def test_post_ln_block_is_algorithm_1():
    torch.manual_seed(0)
    blk = PostLNBlock(32, 2, 128, dropout=0.0).eval()
    xq, xk, xv = torch.randn(2, 4, 32), torch.randn(2, 6, 32), torch.randn(2, 6, 32)
    # by hand: per-head softmax(QK^T / sqrt(d_h)) V, heads concatenated, W_h, residual on the QUERY, post-LN
    a = blk.attn
    Q, K, V = a.q_proj(xq), a.k_proj(xk), a.v_proj(xv)
    heads = []
    for h in range(2):
        s = slice(16 * h, 16 * (h + 1))
        alpha = torch.softmax(Q[..., s] @ K[..., s].transpose(1, 2) / math.sqrt(16), dim=-1)
        heads.append(alpha @ V[..., s])
    u = F.layer_norm(xq + a.out_proj(torch.cat(heads, -1)), (32,), blk.norm1.weight, blk.norm1.bias)
    c = blk.fc2(torch.relu(blk.fc1(u)))
    want = F.layer_norm(u + c, (32,), blk.norm2.weight, blk.norm2.bias)
    assert torch.allclose(blk(xq, xk, xv), want, atol=1e-5)
    assert blk(xq, xk, xv).shape == (2, 4, 32)  # query length kept, key length free


def test_pre_ln_block_by_hand():
    torch.manual_seed(0)
    blk = PreLNBlock(30, 5, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0).eval()
    assert blk.fc1.out_features == 120
    xq, xk = torch.randn(2, 4, 30), torch.randn(2, 6, 30)
    q, k = blk.norm1(xq), blk.norm1(xk)  # MulT normalises queries, keys and values with the same LayerNorm
    x = xq + blk.attn(q, k, k)
    want = x + blk.fc2(torch.relu(blk.fc1(blk.norm2(x))))
    assert torch.allclose(blk(xq, xk), want, atol=1e-5)


def test_default_dropout_is_the_spec_recommendation():
    blk = PostLNBlock()
    assert blk.attn.dropout == 0.1 and blk.drop.p == 0.1
    assert (blk.attn.num_heads, blk.fc1.out_features) == (2, 128)


@pytest.mark.parametrize("block_cls", [PostLNBlock, PreLNBlock])
@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_changes_valid_outputs(block_cls, causal):
    torch.manual_seed(0)
    blk = block_cls(32, 2, 64).eval()
    q1, k1 = torch.randn(1, 5, 32), torch.randn(1, 3, 32)
    # batch: the same sample padded (with garbage) next to a longer one
    q = torch.cat([torch.cat([q1, 9 * torch.randn(1, 4, 32)], 1), torch.randn(1, 9, 32)])
    k = torch.cat([torch.cat([k1, 9 * torch.randn(1, 5, 32)], 1), torch.randn(1, 8, 32)])
    qm = torch.tensor([[True] * 5 + [False] * 4, [True] * 9])
    km = torch.tensor([[True] * 3 + [False] * 5, [True] * 8])
    alone_cross = blk(q1, k1, causal=causal)
    batch_cross = blk(q, k, q_mask=qm, kv_mask=km, causal=causal)
    assert torch.allclose(batch_cross[0, :5], alone_cross[0], atol=1e-5)
    alone_self = blk(q1, causal=causal)
    batch_self = blk(q, q_mask=qm, causal=causal)
    assert torch.allclose(batch_self[0, :5], alone_self[0], atol=1e-5)


def test_causal_mask_follows_mult_offset():
    allowed = attention_mask(3, 5, causal=True)[0, 0]
    # MulT buffered_future_mask: query i sees keys j <= i + |5 - 3|
    want = torch.tensor([[j <= i + 2 for j in range(5)] for i in range(3)])
    assert torch.equal(allowed, want)
    assert attention_mask(4, 4) is None  # nothing to mask: no mask at all (no causal mask by default)


def test_causal_self_attention_ignores_the_future():
    torch.manual_seed(0)
    blk = PostLNBlock(32, 2, 64, dropout=0.0).eval()
    x = torch.randn(1, 6, 32)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 32)
    assert torch.allclose(blk(x, causal=True)[:, :4], blk(y, causal=True)[:, :4], atol=1e-6)
    assert not torch.allclose(blk(x)[:, :4], blk(y)[:, :4])  # not causal by default


def test_fully_padded_keys_give_no_nan():
    blk = PostLNBlock(32, 2, 64).eval()
    out = blk(torch.randn(2, 3, 32), torch.randn(2, 4, 32), kv_mask=torch.tensor([[False] * 4, [True] * 4]))
    assert torch.isfinite(out).all()


def test_sinusoidal_positions_values():
    pe = sinusoidal_positions(7, 32)
    assert pe.shape == (7, 32)
    pos, i = 5, 3
    assert math.isclose(pe[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 32)), abs_tol=1e-6)
    assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 32)), abs_tol=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(16)) and torch.equal(pe[0, 1::2], torch.ones(16))
    odd = sinusoidal_positions(4, 5)
    assert odd.shape == (4, 5) and torch.equal(odd[:, -1], torch.zeros(4))


def test_fairseq_positions_as_mult():
    pe = sinusoidal_positions(4, 30, style="fairseq", offset=1)
    half = 15
    freq = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    pos = torch.arange(1, 5).float()[:, None]
    assert torch.allclose(pe, torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], 1), atol=1e-6)
    with pytest.raises(ValueError, match="style"):
        sinusoidal_positions(2, 4, style="rope")
