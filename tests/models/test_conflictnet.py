"""ConflictNET (Rajan thesis Ch. 3): parameter counts (Keras 420,418 / 896), shapes, Keras-LSTM, attention, schedule."""

import numpy as np
import pytest
import torch

from emofuse.encoders.waveform import WaveformEncoder
from emofuse.models import create_model
from emofuse.models.conflictnet import AdditiveSelfAttention, ConflictNet, KerasLSTM, keras_inverse_time_lr


def test_parameter_counts_match_the_thesis():
    model = create_model("conflictnet")
    counts = model.parameter_counts()
    assert counts == {"trainable": 420_418, "non_trainable": 896, "total": 421_314}
    assert model.num_parameters(trainable_only=True) == 420_418
    per_layer = {n: sum(p.numel() for p in m.parameters()) for n, m in model.features.named_children()}
    # conv1 448, BN1 2x64, conv2 32,896, BN2 2x128, conv3 131,328, BN3 2x256 (spec §2.2)
    assert [v for v in per_layer.values() if v] == [448, 128, 32_896, 256, 131_328, 512]
    assert model.branch_parameters() == {
        "features": 165_568,
        "lstm1": 197_120,
        "attention": 8_257,
        "lstm2": 49_408,
        "head": 65,
    }


def test_ablations_change_only_their_parts():
    para = create_model("paranet").parameter_counts()["trainable"]
    assert para == 420_418 - 8_257  # no attention; AP and GAP have no parameters
    assert ConflictNet(gap=True).parameter_counts()["trainable"] == 420_418


def test_window_crop_pad_and_rms_normalisation():
    model = ConflictNet()
    enc = WaveformEncoder()
    g = torch.Generator().manual_seed(0)
    batch = {"audio": enc.preprocess([3.0 * torch.randn(250_000, generator=g), torch.randn(100_000, generator=g)])}
    wave = model.waveform(batch["audio"])
    assert wave.shape == (2, 240_000)  # cropped / zero-padded to 30 s at 8 kHz
    assert torch.allclose(wave.pow(2).mean(-1), torch.ones(2), atol=1e-4)  # unit RMS over the window
    assert (wave[1, 100_000:] == 0).all()
    hf = {"input_values": torch.ones(1, 10), "attention_mask": torch.tensor([[1] * 5 + [0] * 5])}
    expected = torch.tensor([2**0.5] * 5 + [0.0] * 5)
    assert torch.allclose(ConflictNet(window=None).waveform(hf)[0], expected)  # padding is silence


@pytest.mark.slow
def test_full_window_shapes():
    model = ConflictNet().eval()
    batch = {"audio": {"waveforms": torch.randn(1, 240_000), "lengths": torch.tensor([240_000])}}
    with torch.no_grad():
        out = model(batch)
    assert out.values.shape == (1, 1) and out.logits is None
    assert out.hidden["audio"].shape == (1, 208, 128)  # 832 steps after the conv blocks, average-pooled by 4
    assert out.extras["attention"].shape == (1, 208, 208)
    para = ConflictNet(avg_pool=False, attention=False, window=24_000).eval()
    with torch.no_grad():
        assert para(batch).hidden["audio"].shape == (1, 82, 128)  # 23995 -> 2999 -> 2996 -> 499 -> 496 -> 82


def test_keras_lstm_equals_torch_lstm_with_one_bias():
    torch.manual_seed(0)
    ours = KerasLSTM(5, 4, return_sequences=True)
    ref = torch.nn.LSTM(5, 4, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.weight_ih)
        ref.weight_hh_l0.copy_(ours.weight_hh)
        ref.bias_ih_l0.copy_(0.3 * ours.bias)
        ref.bias_hh_l0.copy_(0.7 * ours.bias)  # only the sum matters: PyTorch's second bias is redundant
    x = torch.randn(3, 7, 5)
    assert torch.allclose(ours(x), ref(x)[0], atol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == 4 * (4 * (5 + 4) + 4)  # Keras: 4 (H (D + H) + H)
    assert ours.bias[4:8].tolist() == [1.0] * 4 and ours.bias[:4].tolist() == [0.0] * 4  # unit forget bias
    last = KerasLSTM(5, 4, return_sequences=False)
    last.load_state_dict(ours.state_dict())
    assert torch.allclose(last(x), ours(x)[:, -1])


def test_attention_matches_the_equation_by_hand():
    torch.manual_seed(0)
    att = AdditiveSelfAttention(3, units=2)
    h = torch.randn(1, 4, 3)
    out, a = att(h)
    hn = h[0].numpy().astype(np.float64)
    wt, wx, bh = att.w_t.detach().double().numpy(), att.w_x.detach().double().numpy(), att.b_h.detach().double().numpy()
    wa, ba = att.w_a.detach().double().numpy()[:, 0], float(att.b_a.detach())
    e = np.zeros((4, 4))
    for t in range(4):
        for s in range(4):
            e[t, s] = np.tanh(np.tanh(hn[t] @ wt + hn[s] @ wx + bh) @ wa + ba)
    ref_a = np.exp(e) / np.exp(e).sum(1, keepdims=True)
    np.testing.assert_allclose(a[0].detach().numpy(), ref_a, atol=1e-5)
    np.testing.assert_allclose(out[0].detach().numpy(), ref_a @ hn, atol=1e-5)
    assert sum(p.numel() for p in AdditiveSelfAttention(128).parameters()) == 8_257


def test_keras_decay_schedule_and_inverse_time_scheduler():
    from emofuse.config.schema import OptimConfig
    from emofuse.training.lit_module import build_scheduler

    assert keras_inverse_time_lr(0.01, 0.6, 0) == 0.01
    assert keras_inverse_time_lr(0.01, 0.6, 250) == pytest.approx(0.01 / 151)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = build_scheduler(opt, OptimConfig(lr=0.01, scheduler="inverse_time", decay=0.6), 10, "val/pcc", "max")
    assert sched["interval"] == "step"
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs == pytest.approx([keras_inverse_time_lr(0.01, 0.6, k) for k in range(4)])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="same"):
        ConflictNet(filters=(64, 128), kernels=(6, 4, 4))
    with pytest.raises(ValueError, match="too short"):
        ConflictNet(window=100)
    with pytest.raises(ValueError, match="normalize"):
        ConflictNet(normalize="peak")
    with pytest.raises(KeyError, match="waveforms"):
        ConflictNet(window=8000)({"audio": {"x": torch.zeros(1, 8000)}})


@pytest.mark.slow
def test_learns_a_raw_speech_target_with_the_pcc_loss():
    """Synthetic raw-speech regression: the target is the fraction of a 1 s window holding a loud burst."""
    from emofuse.tasks import RegressionTask

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n, length = 24, 3000
    frac = torch.rand(n, generator=g)
    waves = 0.05 * torch.randn(n, length, generator=g)
    for i in range(n):
        k = int(frac[i] * length)
        waves[i, :k] += torch.randn(k, generator=g)  # loud, "raised voice" part
    target = 2 * frac - 1  # in [-1, 1]
    model = ConflictNet(window=length, filters=(4, 8, 8), lstm_sizes=(8, 8), normalize="none")
    task = RegressionTask(model, loss="pcc")
    opt = torch.optim.Adam(task.parameters(), lr=0.01)
    batch = {"audio": {"waveforms": waves, "lengths": torch.full((n,), length)}, "targets": target}
    first = None
    for _ in range(30):
        opt.zero_grad()
        out = task(batch)
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss"].detach())
    model.eval()
    with torch.no_grad():
        pred = model(batch).values[:, 0]
    r = float(np.corrcoef(pred.numpy(), target.numpy())[0, 1])
    assert r > 0.9, (first, float(out["loss"]), r)
