"""Intra- / cross-attention tri-modal fusion (thesis Ch. 4): parameter counts, pieces by hand, absent modalities."""

import pytest
import torch

from emofuse.layers.fusion import TimeMixing, fix_length, statistical_pooling
from emofuse.models import create_model
from emofuse.models.tri_fusion import TriFusion, pair_modalities

TINY = dict(
    text_dim=6, video_dim=5, audio_dim=4, text_len=7, video_len=4, video_short=3, audio_len=9, audio_short=5
) | dict(hidden=4, num_heads=2, text_dropout=0.0, attn_dropout=0.0, num_classes=3)


def batch(B=3, lengths=None, seed=0, drop=()):
    g = torch.Generator().manual_seed(seed)
    dims = {"text": 6, "video": 5, "audio": 4}
    lengths = lengths or {"text": [7, 3, 5], "video": [4, 2, 4], "audio": [9, 6, 2]}
    feats = {}
    for m, d in dims.items():
        lens = torch.tensor(lengths[m][:B])
        t = int(lens.max())
        mask = torch.arange(t)[None] < lens[:, None]
        feats[m] = torch.randn(B, t, d, generator=g) * mask.unsqueeze(-1)
        feats[f"{m}_mask"] = mask
    for m in drop:  # drawn, then left out, so the other modalities are the same as without drop
        del feats[m], feats[f"{m}_mask"]
    return {"features": feats}


# ------------------------------------------------------------------------------------------ parameter counts


def test_parameter_counts_match_the_spec():
    intra = create_model("tri_fusion_intra")
    cross = create_model("tri_fusion_cross")
    # spec §3.2 arithmetic: GRUs 3 * 2 * (H (D + H) + 2 H) with H = 60; MHA(120) = 4 (120^2 + 120)
    gru = {m: 2 * 3 * (60 * (d + 60) + 2 * 60) for m, d in (("text", 300), ("video", 2048), ("audio", 120))}
    assert gru == {"text": 130_320, "video": 759_600, "audio": 65_520}
    counts = intra.branch_parameters()
    assert counts["text"] == 130_320
    assert counts["video"] == 759_600 + 825  # + Conv1d(32, 25, 1)
    assert counts["audio"] == 65_520 + 500_500  # + Conv1d(1000, 500, 1)
    assert counts["intra_text"] == counts["intra_video"] == counts["intra_audio"] == 58_080
    assert counts["head"] == 14_460 + 427
    assert intra.num_parameters() == 1_645_892
    assert cross.num_parameters() == 1_820_132
    assert sorted(k for k in cross.branch_parameters() if k.startswith("cross_")) == sorted(
        f"cross_{p}" for p in ("V2T", "A2T", "T2V", "A2V", "T2A", "V2A")
    )
    # ablation heads: noSP concatenates 3 / 6 vectors of 120; cross+intra concatenates two SP outputs
    assert create_model("tri_fusion_intra", pooling="concat").fc1.in_features == 360
    assert create_model("tri_fusion_cross", pooling="concat").fc1.in_features == 720
    assert create_model("tri_fusion_cross_intra").fc1.in_features == 480


def test_variant_parameter_counts():
    # bimodal T+V intra: drop the audio branch and its attention
    tv = create_model("tri_fusion_intra", modalities=["text", "video"])
    assert tv.num_parameters() == 1_645_892 - (65_520 + 500_500) - 58_080
    pair = create_model("tri_fusion_cross", pairs=["T2V"])
    assert pair.modalities == ("text", "video", "audio") and list(pair.cross) == ["T2V"]
    assert pair.fc1.in_features == 240  # SP of one vector: [v | 0]
    assert create_model("tri_fusion_cross", pairs=["T2V"], single_std="drop").fc1.in_features == 120


# ------------------------------------------------------------------------------------------ layers


def test_statistical_pooling_matches_torch_std_mean():
    v = torch.randn(4, 6, 5)
    std, mean = torch.std_mean(v, dim=1)
    assert torch.allclose(statistical_pooling(v), torch.cat([mean, std], -1), atol=1e-6)
    std_b, _ = torch.std_mean(v, dim=1, unbiased=False)
    assert torch.allclose(statistical_pooling(v, unbiased=False)[:, 5:], std_b, atol=1e-6)
    w = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6, [1] * 6])
    out = statistical_pooling(v, w)
    std0, mean0 = torch.std_mean(v[0, [0, 1, 3]], dim=0)
    assert torch.allclose(out[0], torch.cat([mean0, std0]), atol=1e-6)
    assert torch.allclose(out[1], torch.cat([v[1, 0], torch.zeros(5)]))  # one vector: std 0
    assert torch.equal(out[2], torch.zeros(10))  # none
    with pytest.raises(ValueError, match="weights must be"):
        statistical_pooling(v, w[:, :3])
    same = torch.ones(1, 3, 2, requires_grad=True)  # zero spread: std exactly 0 and finite gradients
    sp = statistical_pooling(same)
    assert torch.equal(sp[0, 2:], torch.zeros(2))
    sp.sum().backward()
    assert torch.isfinite(same.grad).all()


def test_time_mixing_is_a_matrix_over_frames():
    layer = TimeMixing(5, 3)
    x = torch.randn(2, 5, 4)
    W, b = layer.conv.weight[:, :, 0], layer.conv.bias  # (3, 5), (3,)
    assert torch.allclose(layer(x), torch.einsum("ot,btd->bod", W, x) + b[None, :, None], atol=1e-6)
    assert sum(p.numel() for p in TimeMixing(1000, 500).parameters()) == 500_500
    with pytest.raises(ValueError, match="expects 5 steps"):
        layer(torch.randn(2, 4, 4))


def test_fix_length_crops_and_pads():
    x = torch.arange(6.0).view(1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    y, m = fix_length(x, mask, 5)
    assert y.shape == (1, 5, 2) and m.tolist() == [[True, True, False, False, False]]
    assert torch.equal(y[0, 2:], torch.zeros(3, 2)) and torch.equal(y[0, :2], x[0, :2])
    y, m = fix_length(x, mask, 1)
    assert torch.equal(y, x[:, :1]) and m.tolist() == [[True]]


# ------------------------------------------------------------------------------------------ forward by hand


def test_intra_forward_by_hand():
    torch.manual_seed(0)
    model = TriFusion(attention="intra", **TINY).eval()
    b = batch()
    out = model(b)
    vecs = []
    for m in ("text", "video", "audio"):
        enc = model.encoders[m]
        x, _ = fix_length(b["features"][m], b["features"][f"{m}_mask"], model.lengths[m])
        if enc.shorten is not None:
            x = enc.shorten.conv(x)  # Conv1d with time as channels
        e, _ = enc.gru(x)
        assert torch.allclose(out.hidden[m], e, atol=1e-6)
        v = model.intra[m](e, e, e).mean(1)  # no masking: padded steps are averaged too
        assert torch.allclose(out.pooled[m], v, atol=1e-6)
        vecs.append(v)
    V = torch.stack(vecs, 1)
    std, mean = torch.std_mean(V, dim=1)
    want = model.fc2(model.fc1(torch.cat([mean, std], -1)))  # no activation between the layers
    assert torch.allclose(out.logits, want, atol=1e-5)
    assert out.hidden["video"].shape == (3, 3, 8) and out.hidden["audio"].shape == (3, 5, 8)
    assert out.hidden["text"].shape == (3, 7, 8)


def test_cross_pairs_query_the_target():
    torch.manual_seed(0)
    model = TriFusion(attention="cross", **TINY).eval()
    out = model(batch())
    assert list(out.extras["vectors"]) == ["V2T", "A2T", "T2V", "A2V", "T2A", "V2A"]
    h = out.hidden
    for p in ("T2V", "A2T"):
        src, tgt = pair_modalities(p)
        want = model.cross[p](h[tgt], h[src], h[src]).mean(1)  # query = target Y, key/value = source X
        assert torch.allclose(out.extras["vectors"][p], want, atol=1e-6)
    V = torch.stack(list(out.extras["vectors"].values()), 1)
    std, mean = torch.std_mean(V, dim=1)
    assert torch.allclose(out.logits, model.fc2(model.fc1(torch.cat([mean, std], -1))), atol=1e-5)


def test_absent_modality_is_left_out_of_pooling():
    torch.manual_seed(0)
    model = TriFusion(attention="intra", **TINY).eval()
    full = batch()
    no_key = batch(drop=("video",))
    all_false = batch()
    all_false["features"]["video_mask"] = torch.zeros_like(all_false["features"]["video_mask"])
    flagged = batch()
    flagged["present"] = {"video": torch.tensor([False, False, False])}
    outs = [model(b) for b in (no_key, all_false, flagged)]
    for o in outs[1:]:
        assert torch.allclose(o.logits, outs[0].logits, atol=1e-6)
    o = outs[0]
    assert o.extras["present"]["video"].tolist() == [False] * 3
    V = torch.stack([o.pooled["text"], o.pooled["audio"]], 1)  # only the present modalities
    std, mean = torch.std_mean(V, dim=1)
    assert torch.allclose(o.logits, model.fc2(model.fc1(torch.cat([mean, std], -1))), atol=1e-5)
    assert not torch.allclose(model(full).logits, o.logits)
    # per sample: only the first sample lacks its visual stream
    part = batch()
    part["present"] = {"video": torch.tensor([False, True, True])}
    p = model(part)
    assert torch.allclose(p.logits[0], o.logits[0], atol=1e-6)
    assert torch.allclose(p.logits[1:], model(full).logits[1:], atol=1e-6)


def test_missing_zero_feeds_zeros():
    torch.manual_seed(0)
    model = TriFusion(attention="cross", missing="zero", **TINY).eval()
    zeros = batch()
    zeros["features"]["audio"] = torch.zeros_like(zeros["features"]["audio"])
    zeros["features"]["audio_mask"] = torch.ones_like(zeros["features"]["audio_mask"])
    assert torch.allclose(model(batch(drop=("audio",))).logits, model(zeros).logits, atol=1e-6)


def test_masking_makes_padding_irrelevant():
    torch.manual_seed(0)
    model = TriFusion(attention="intra", masking=True, **TINY).eval()
    b = batch()
    out = model(b)
    noisy = batch()
    t = noisy["features"]["text"]
    noisy["features"]["text"] = torch.where(noisy["features"]["text_mask"].unsqueeze(-1), t, 1e3)
    assert torch.allclose(model(noisy).logits, out.logits, atol=1e-5)
    # without masking, padded steps (zeros) change the text vector of the short item
    plain = TriFusion(attention="intra", **TINY).eval()
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(b).pooled["text"][1], out.pooled["text"][1], atol=1e-4)


def test_latent_override_replaces_a_modality_vector():
    torch.manual_seed(0)
    model = TriFusion(attention="intra", **TINY).eval()
    b = batch(drop=("video",))
    v = torch.randn(3, 8)
    b["latent_override"] = {"video": v}
    o = model(b)
    assert torch.equal(o.pooled["video"], v) and o.extras["weights"]["video"].all()
    V = torch.stack([o.pooled["text"], v, o.pooled["audio"]], 1)
    std, mean = torch.std_mean(V, dim=1)
    assert torch.allclose(o.logits, model.fc2(model.fc1(torch.cat([mean, std], -1))), atol=1e-5)
    with pytest.raises(ValueError, match="needs intra attention"):
        TriFusion(attention="cross", **TINY)(b)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="no unimodal cross"):
        create_model("tri_fusion_cross", modalities=["text"])
    with pytest.raises(ValueError, match="needs modalities"):
        create_model("tri_fusion_cross", modalities=["text", "audio"], pairs=["T2V"])
    with pytest.raises(ValueError, match="like 'V2T'"):
        pair_modalities("T2T")
    with pytest.raises(ValueError, match="modalities must be"):
        create_model("tri_fusion_intra", modalities=["visual"])
    with pytest.raises(ValueError, match=r"must be \(B, T, 6\)"):
        TriFusion(**TINY)({"features": {"text": torch.randn(2, 3, 5)}})


@pytest.mark.slow
def test_learns_a_synthetic_task():
    """Class = sign pattern of the mean text and audio features; a tiny model fits it."""
    torch.manual_seed(0)
    n = 48
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (n,), generator=g)
    text = torch.randn(n, 7, 6, generator=g) * 0.5
    text[:, :, 0] += (y == 1).float()[:, None] * 2
    audio = torch.randn(n, 9, 4, generator=g) * 0.5
    audio[:, :, 1] += (y == 2).float()[:, None] * 2
    feats = {"text": text, "audio": audio, "text_mask": torch.ones(n, 7, dtype=torch.bool)}
    feats["audio_mask"] = torch.ones(n, 9, dtype=torch.bool)
    model = TriFusion(attention="cross", modalities=["text", "audio"], **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model({"features": feats}).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    acc = (model({"features": feats}).logits.argmax(-1) == y).float().mean()
    assert acc > 0.9, acc
