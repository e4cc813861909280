"""CM-RoBERTa: shapes, widths, parameter counts, masks (padding never changes a valid output), context, learning."""

import copy

import pytest
import torch
from torch import nn

from emofuse.config.schema import ExperimentConfig
from emofuse.models import create_model, get_model_entry
from emofuse.models.cm_roberta import CMRoberta, MaskedBiLSTM, MaskedZScore

NAMES = ("cm_roberta", "cm_roberta_no_sca", "cm_roberta_audio", "cm_roberta_text")
TINY = dict(audio_dim=6, text_dim=10, hidden=8, num_heads=2, ffn_dim=16, head_hidden=8, num_classes=3)
SWITCHES = (
    {},
    {"causal": True},
    {"cross_direction": "as_printed"},
    {"sublayer_merge": "concat"},
    {"mid_lstm": "separate", "residual": "sum", "lstm_units": "project"},
    {"input_norm": "none", "lstm_layers": 1, "sca_layers": 1},
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and a shared CI core is not oversubscribed)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dialogues(lengths, n=None, seed=0, pad_value=0.0):
    """Random dialogue batch: (B, N, D) features with the given valid lengths (padding filled with pad_value)."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]  # (B, N)
    feats = {}
    for m, d in (("audio", 6), ("text", 10)):
        x = torch.randn(len(lengths), n, d, generator=g)
        x[~mask] = pad_value
        feats[m], feats[f"{m}_mask"] = x, mask
    return {"features": feats}


def tiny(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **kw})


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_flattening(name):
    model = tiny(name).eval()
    batch = dialogues([5, 3, 1])
    out = model(batch)
    mask = batch["features"]["text_mask"]
    assert out.logits.shape == (9, 3) and out.extras["dialogue_logits"].shape == (3, 5, 3)
    assert torch.equal(out.logits, out.extras["dialogue_logits"][mask])  # row-major over valid turns
    assert torch.allclose(out.probs.sum(-1), torch.ones(9))
    for m in model.modalities:
        assert out.hidden[m].shape == (3, 5, 8) and torch.equal(out.masks[m], mask)
        assert (out.hidden[m][~mask] == 0).all()


def test_widths_of_the_seven_branches():
    d = 8
    assert tiny("cm_roberta").head_input_dim == 7 * d  # H_a^c, H_t^c, H_a^s, H_t^s, H_mid, H_a^r, H_t^r
    assert tiny("cm_roberta_no_sca").head_input_dim == 3 * d  # H_mid, H_a^r, H_t^r
    assert tiny("cm_roberta_text").head_input_dim == 2 * d  # BiLSTM + residual block
    # literal "⊕ = concatenation": each attention layer quadruples the width (8 → 32 → 128 per stream)
    assert tiny("cm_roberta", sublayer_merge="concat").head_input_dim == 4 * 128 + 3 * d
    assert CMRoberta(audio_dim=12696, text_dim=4096).head_input_dim == 896  # the paper's 7 × 128


def lstm_params(inp, h, layers):
    """nn.LSTM bidirectional: per layer and direction 4h(in + h) + 8h (two bias vectors)."""
    total = 0
    for k in range(layers):
        i = inp if k == 0 else 2 * h
        total += 2 * (4 * h * (i + h) + 8 * h)
    return total


def test_parameter_count_of_the_unimodal_model_by_hand():
    d, dt, hh, c = 8, 10, 8, 3
    model = tiny("cm_roberta_text")
    expected = (
        lstm_params(dt, d // 2, 2)  # context BiLSTM, 4 units per direction
        + (dt * d + d)
        + 2 * d  # residual Linear + LayerNorm
        + (2 * d * hh + hh)
        + (hh * c + c)  # FC, FC
    )
    assert model.num_parameters() == expected
    assert sum(p.numel() for p in model.norm.parameters()) == 0  # the z-score has buffers only


def test_parameter_count_of_the_full_model_at_paper_size():
    model = create_model("cm_roberta")  # defaults: the paper's 12696-d audio, 4096-d text, 7 classes
    d = 128
    post_ln = 4 * (d * d + d) + (d * 256 + 256) + (256 * d + d) + 4 * d  # PostLNBlock(128, 4 heads, FFN 256)
    expected = (
        lstm_params(12696, 64, 2)
        + lstm_params(4096, 64, 2)
        + (12696 * d + d + 2 * d)
        + (4096 * d + d + 2 * d)
        + 2 * 2 * 2 * post_ln  # 2 branches x 2 layers x 2 modalities
        + lstm_params(2 * d, 64, 1)
        + (d * d + d)  # mid-level fusion BiLSTM + FeedForward
        + (896 * 128 + 128)
        + (128 * 7 + 7)
    )
    assert model.num_parameters() == expected


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_a_valid_output(name, switches):
    model = tiny(name, **switches).eval()
    lengths = [5, 3, 2]
    ref = model(dialogues(lengths, pad_value=0.0)).logits
    # garbage in the padding, and more of it
    noisy = dialogues(lengths, n=9, pad_value=0.0)
    clean = dialogues(lengths, pad_value=0.0)
    for key in ("audio", "text"):
        x = torch.randn(3, 9, clean["features"][key].shape[-1]) * 100
        x[:, :5] = clean["features"][key]
        mask = noisy["features"][f"{key}_mask"]
        x[mask] = clean["features"][key][clean["features"][f"{key}_mask"]]
        noisy["features"][key] = x
    assert torch.allclose(model(noisy).logits, ref, atol=1e-5)
    # each dialogue alone gives the same outputs as inside the batch
    alone = torch.cat(
        [
            model({"features": {k: v[i : i + 1, :n] for k, v in clean["features"].items()}}).logits
            for i, n in enumerate(lengths)
        ]
    )
    assert torch.allclose(alone, ref, atol=1e-5)


def test_padding_never_changes_a_valid_output_in_training_mode():
    model = tiny("cm_roberta", dropout=0.0).train()
    other = copy.deepcopy(model)
    clean = dialogues([4, 2], n=6)
    noisy = copy.deepcopy(clean)
    for key in ("audio", "text"):
        mask = noisy["features"][f"{key}_mask"]
        noisy["features"][key][~mask] = 1e3
    assert torch.allclose(model(clean).logits, other(noisy).logits, atol=1e-5)
    for a, b in zip(model.buffers(), other.buffers(), strict=True):  # normalisation statistics too
        assert torch.allclose(a.float(), b.float())


def test_context_is_bidirectional_by_default_and_past_only_when_causal():
    batch = dialogues([6])
    changed = copy.deepcopy(batch)
    changed["features"]["text"][0, 4] += 3.0  # change turn 4
    for causal in (False, True):
        model = tiny("cm_roberta", causal=causal, input_norm="none").eval()
        a, b = model(batch).logits, model(changed).logits
        diff = (a - b).abs().amax(-1)  # (6,)
        assert diff[4] > 1e-4 and diff[5] > 1e-4
        # the BiLSTM carries the future backwards, so even with causal attention turn 0 sees turn 4 ...
        assert diff[0] > 1e-6
    # ... but causal attention alone never looks ahead
    unit = tiny("cm_roberta", causal=True).eval().sca_unit
    h_a, h_t = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    h_t2 = h_t.clone()
    h_t2[0, 4] += 3.0
    mask = torch.ones(1, 6, dtype=torch.bool)
    o1, o2 = unit(h_a, h_t, mask), unit(h_a, h_t2, mask)
    assert torch.allclose(o1["audio_cross"][0, :4], o2["audio_cross"][0, :4], atol=1e-6)
    assert not torch.allclose(o1["audio_cross"][0, 4:], o2["audio_cross"][0, 4:], atol=1e-4)


def test_masked_bilstm_matches_an_unpadded_lstm():
    lstm = MaskedBiLSTM(5, 6, num_layers=2)
    x = torch.randn(1, 4, 5)
    ref = lstm(x, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(1, 3, 5)], 1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    out = lstm(padded, mask)
    assert torch.allclose(out[:, :4], ref, atol=1e-6) and (out[:, 4:] == 0).all()
    full, _ = lstm.lstm(x)
    assert torch.allclose(ref, full, atol=1e-6)


def test_zscore_uses_training_statistics_at_evaluation():
    norm = MaskedZScore(2).train()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 4, 2, generator=g) * 5 + 7 for _ in range(3)]
    masks = [torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()] * 3
    means, vars_ = [], []
    for x, m in zip(batches, masks, strict=True):
        y = norm(x, m)
        rows = x[m]
        assert torch.allclose(y[m], (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + 1e-5), atol=1e-4)
        assert (y[~m] == 0).all()
        means.append(rows.mean(0))
        vars_.append(rows.var(0, unbiased=True))
    # momentum=None-style cumulative average of the batch statistics
    assert torch.allclose(norm.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, torch.stack(vars_).mean(0), atol=1e-4)
    norm.eval()
    x = torch.randn(1, 2, 2)
    m = torch.ones(1, 2, dtype=torch.bool)
    expected = (x - norm.running_mean) / torch.sqrt(norm.running_var + 1e-5)
    assert torch.allclose(norm(x, m), expected, atol=1e-5)


def test_bad_inputs_are_named():
    model = tiny("cm_roberta").eval()
    batch = dialogues([3, 2])
    batch["features"]["audio_mask"] = batch["features"]["audio_mask"].clone()
    batch["features"]["audio_mask"][1, 2] = True
    with pytest.raises(ValueError, match="masks differ"):
        model(batch)
    with pytest.raises(ValueError, match="expects 10"):
        model({"features": {**dialogues([2])["features"], "text": torch.randn(1, 2, 7)}})
    with pytest.raises(KeyError, match="features"):
        tiny("cm_roberta_audio")({"audio": torch.zeros(1)})
    with pytest.raises(ValueError, match="text_dim"):
        CMRoberta(audio_dim=4, text_dim=None)
    with pytest.raises(ValueError, match="sublayer_merge"):
        CMRoberta(audio_dim=4, text_dim=4, sublayer_merge="mix")


def test_option_schema_checks_configs():
    cfg = ExperimentConfig.model_validate({"model": {"name": "cm_roberta", "hidden": 64, "audio_dim": None}})
    assert cfg.model.options == {"hidden": 64, "audio_dim": None}
    with pytest.raises(ValueError, match="sublayer_merge"):
        ExperimentConfig.model_validate({"model": {"name": "cm_roberta_no_sca", "sublayer_merge": "mix"}})
    with pytest.raises(ValueError, match="hiden"):
        ExperimentConfig.model_validate({"model": {"name": "cm_roberta_text", "hiden": 64}})


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_from_config_restores_normalisation(name):
    model = tiny(name).train()
    model(dialogues([4, 3]))  # updates the running statistics
    model.eval()
    rebuilt = get_model_entry(name)(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    batch = dialogues([4, 2], seed=3)
    assert torch.allclose(rebuilt(batch).logits, model(batch).logits, atol=1e-6)


def synthetic_dialogues(n_dialogues, seed, n_classes=4, dim=12):
    """Dialogues whose utterance labels follow a per-dialogue 'mood' (context helps); both modalities noisy."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(123)) * 1.5
    lengths = torch.randint(3, 9, (n_dialogues,), generator=g).tolist()
    n = max(lengths)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    mood = torch.randint(0, n_classes, (n_dialogues, 1), generator=g)
    flip = torch.rand(n_dialogues, n, generator=g) < 0.3
    labels = torch.where(flip, torch.randint(0, n_classes, (n_dialogues, n), generator=g), mood.expand(-1, n))
    text = protos[labels] + 1.5 * torch.randn(n_dialogues, n, dim, generator=g)
    audio = protos[labels][..., :6] + 2.0 * torch.randn(n_dialogues, n, 6, generator=g)
    text[~mask], audio[~mask] = 0, 0
    feats = {"audio": audio, "audio_mask": mask, "text": text, "text_mask": mask}
    return {"features": feats}, labels[mask]


@pytest.mark.parametrize("name", [pytest.param("cm_roberta", marks=pytest.mark.slow), "cm_roberta_text"])
def test_learns_a_synthetic_dialogue_task(name):
    torch.manual_seed(0)
    model = create_model(
        name, audio_dim=6, text_dim=12, hidden=16, num_heads=2, ffn_dim=32, head_hidden=16, num_classes=4, dropout=0.1
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=3e-4)
    train = [synthetic_dialogues(16, seed) for seed in range(6)]
    for _epoch in range(4):
        model.train()
        for batch, labels in train:
            loss = nn.functional.cross_entropy(model(batch).logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    batch, labels = synthetic_dialogues(64, seed=99)
    with torch.no_grad():
        acc = (model(batch).logits.argmax(-1) == labels).float().mean().item()
    assert acc > 0.7, acc  # chance is 0.25
