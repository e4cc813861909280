import os
import sys

import numpy as np
import pytest
import torch

from emofuse.encoders import EncoderError, create_encoder, get_encoder_spec, resolve_encoder
from emofuse.encoders import handcrafted as hc
from emofuse.encoders.handcrafted import SpectralConfig, SpectralEncoder, clear_glove_cache, tokenize_words
from emofuse.encoders.spectral import compute_deltas, num_frames
from emofuse.utils.optional import MissingDependencyError, is_available

SR = 16000
HANDCRAFTED = ["mfcc", "mfcc-thesis", "logmel", "egemaps", "compare", "emobase", "is09-emotion", "glove"]
needs_opensmile = pytest.mark.skipif(
    not is_available("opensmile"), reason="opensmile not installed (pip install 'emofuse[features]')"
)


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Plain NumPy reference (independent of emofuse.encoders.spectral)


def np_power_spectrogram(x, n_fft, hop, win_length=None, window="hann"):
    win_length = win_length or n_fft
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    n = np.arange(win_length)
    a = 0.5 if window == "hann" else 0.54
    w = a - (1 - a) * np.cos(2 * np.pi * n / win_length)  # periodic window
    wf = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    wf[left : left + win_length] = w
    n_frames = 1 + (len(xp) - n_fft) // hop
    frames = np.stack([xp[t * hop : t * hop + n_fft] * wf for t in range(n_frames)])  # (T, n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)


def np_mel_filterbank(n_freqs, n_mels, sr):
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    corners = hz(np.linspace(mel(0.0), mel(sr / 2), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_freqs)
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lo, c, hi = corners[m : m + 3]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[k, m] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[k, m] = (hi - f) / (hi - c)
    return fb


def np_dct_ortho(n_mfcc, n_mels):
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    c = np.sqrt(2.0 / n_mels) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels))
    c[0] /= np.sqrt(2.0)
    return c  # (n_mfcc, n_mels)


def np_log(x, kind, top_db=80.0):
    if kind == "natural":
        return np.log(x + 1e-6)
    db = 10.0 * np.log10(np.maximum(x, 1e-10))
    return np.maximum(db, db.max() - top_db)


def np_features(x, n_fft, hop, n_mels, log, n_mfcc=None, window="hann"):
    power = np_power_spectrogram(x, n_fft, hop, window=window)
    logmel = np_log(power @ np_mel_filterbank(n_fft // 2 + 1, n_mels, SR), log)
    return logmel if n_mfcc is None else logmel @ np_dct_ortho(n_mfcc, n_mels).T


# ------------------------------------------------------------------------------------------------
# MFCC / log-mel


def test_mfcc_default_matches_numpy_reference():
    x = _signal(12345)
    enc = create_encoder("mfcc")
    out = enc.encode([x])
    ref = np_features(x, n_fft=400, hop=200, n_mels=128, log="db", n_mfcc=80)
    assert enc.output_dim == 80 and enc.frame_rate == 80.0
    assert out.hidden.shape == (1, ref.shape[0], 80) and ref.shape[0] == 1 + 12345 // 200
    np.testing.assert_allclose(out.hidden[0].numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("log", ["natural", "db"])
def test_logmel_matches_numpy_reference(log):
    x = _signal(9999, seed=1)
    enc = create_encoder("logmel", log=log)
    ref = np_features(x, n_fft=400, hop=160, n_mels=80, log=log)
    out = enc.encode([x])
    assert out.hidden.shape == (1, ref.shape[0], 80)
    np.testing.assert_allclose(out.hidden[0].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_mfcc_thesis_deltas_and_reference():
    x = _signal(8000, seed=2)
    enc = create_encoder("mfcc-thesis")
    out = enc.encode([x])
    assert enc.output_dim == 120 and out.hidden.shape == (1, 51, 120)
    base = np_features(x, n_fft=400, hop=160, n_mels=64, log="natural", n_mfcc=40, window="hamming")
    np.testing.assert_allclose(out.hidden[0, :, :40].numpy(), base, rtol=1e-4, atol=1e-4)
    d1 = compute_deltas(torch.from_numpy(base))
    np.testing.assert_allclose(out.hidden[0, :, 40:80].numpy(), d1.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.hidden[0, :, 80:].numpy(), compute_deltas(d1).numpy(), rtol=1e-4, atol=1e-4)


def test_deltas_hand_computed():
    # x_t = t^2, N = 2, denominator 2 * (1 + 4) = 10, edges repeated.
    x = torch.tensor([[0.0], [1.0], [4.0], [9.0], [16.0]])
    expected = torch.tensor([[0.9], [2.2], [4.0], [4.2], [3.1]])
    assert torch.allclose(compute_deltas(x, width=2), expected)
    assert torch.equal(compute_deltas(torch.ones(1, 3)), torch.zeros(1, 3))


def test_frame_counts_centred():
    assert num_frames(16000, 160) == 101
    enc = create_encoder("logmel")
    out = enc.encode([np.zeros(16000, np.float32) + 0.1, _signal(100), _signal(1)])  # short ones: zero-padded
    assert out.mask.sum(1).tolist() == [101, 1, 1]
    assert out.hidden.shape == (3, 101, 80)
    assert torch.isfinite(out.hidden).all()


def test_thesis_max_frames():
    enc = create_encoder("mfcc-thesis")
    out = enc.encode([_signal(12 * SR)])
    assert out.hidden.shape == (1, 1000, 120) and bool(out.mask.all())
    assert enc.max_input == pytest.approx(10.0)


@pytest.mark.parametrize("name", ["mfcc", "mfcc-thesis", "logmel"])
def test_padding_invariance_and_pooled(name):
    enc = create_encoder(name)
    a, b = _signal(16000, seed=3), torch.from_numpy(_signal(5000, seed=4))
    both = enc.encode([a, b])
    alone_a, alone_b = enc.encode([a]), enc.encode([b])
    tb = alone_b.hidden.shape[1]
    assert both.mask[1].sum() == tb and not both.mask[1, tb:].any()
    assert torch.equal(both.hidden[0], alone_a.hidden[0])
    assert torch.equal(both.hidden[1, :tb], alone_b.hidden[0])
    assert torch.equal(both.hidden[1, tb:], torch.zeros_like(both.hidden[1, tb:]))
    assert torch.allclose(both.pooled[1], alone_b.hidden[0].mean(0), atol=1e-5)


def test_waveform_errors_name_the_index():
    enc = create_encoder("mfcc")
    with pytest.raises(EncoderError, match="waveform 1 is empty"):
        enc.encode([_signal(400), np.zeros(0, np.float32)])
    with pytest.raises(EncoderError, match="waveform 0 must be 1-D"):
        enc.encode([np.zeros((2, 400), np.float32)])
    with pytest.raises(ValueError, match="n_mfcc"):
        create_encoder("mfcc", n_mels=40)
    with pytest.raises(EncoderError, match="unexpected keyword"):
        create_encoder("mfcc", bogus=1)


def test_fingerprint_tracks_settings():
    a, b = create_encoder("mfcc"), create_encoder("mfcc")
    assert a.provenance.fingerprint == b.provenance.fingerprint != ""
    assert create_encoder("mfcc", hop_length=160).provenance.fingerprint != a.provenance.fingerprint
    assert create_encoder("logmel").provenance.fingerprint != a.provenance.fingerprint
    enc = SpectralEncoder("custom", SpectralConfig(kind="logmel", n_mels=40))
    assert enc.output_dim == 40 and list(enc.parameters()) == []


@pytest.mark.parametrize("name", HANDCRAFTED)
def test_registry_names_resolve_handcrafted(name):
    spec = get_encoder_spec(name)
    assert spec.pretrained is False
    assert resolve_encoder(name).resolved == "handcrafted"
    assert spec.modality == ("text" if name == "glove" else "audio")


# ------------------------------------------------------------------------------------------------
# openSMILE


@needs_opensmile
def test_egemaps_functionals_and_lld_on_tone():
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * (200 + 20 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
    enc = create_encoder("egemaps")
    out = enc.encode([tone, tone[: SR // 2]])
    assert enc.output_dim == 88 and out.hidden.shape == (2, 1, 88) and out.mask.all()
    assert torch.equal(out.pooled, out.hidden[:, 0])
    assert torch.isfinite(out.hidden).all() and enc.frame_rate is None
    prov = enc.provenance
    assert prov.resolved == "handcrafted" and "opensmile" in prov.source and "eGeMAPSv02" in prov.architecture
    assert prov.fingerprint
    lld = create_encoder("egemaps", level="lld")
    o = lld.encode([tone, tone[: SR // 2]])
    assert lld.output_dim == 25 and lld.frame_rate == 100.0
    n = o.mask.sum(1).tolist()
    assert 90 <= n[0] <= 101 and 40 <= n[1] <= 51 and o.hidden.shape == (2, n[0], 25)
    assert lld.provenance.fingerprint != prov.fingerprint


@needs_opensmile
def test_compare_dims_and_short_signal_error():
    tone = _signal(SR // 2)
    assert create_encoder("compare").encode([tone]).hidden.shape == (1, 1, 6373)
    assert create_encoder("compare", level="lld").output_dim == 65
    with pytest.raises(EncoderError, match="waveform 1 .* too short"):
        create_encoder("egemaps", level="lld").encode([tone, tone[:100]])


def test_opensmile_missing_names_features_extra(monkeypatch):
    hc._smile.cache_clear()
    monkeypatch.setitem(sys.modules, "opensmile", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"emofuse\[features\]"):
            create_encoder("egemaps")
    finally:
        hc._smile.cache_clear()


# ------------------------------------------------------------------------------------------------
# GloVe

GLOVE_LINES = [
    "the 1.0 2.0 3.0",
    "cat 0.5 0.5 -0.5",
    "Sat 3.0 0.0 -3.0",
    "sat 9 9 9",  # later casing of the same lower-case word: the first (most frequent) wins
    "at name@domain.com 1 1 1",  # multi-word key (as in 840B): skipped
    "don't 0.1 0.2 0.3",
]


@pytest.fixture
def glove_file(tmp_path):
    clear_glove_cache()
    p = tmp_path / "glove.tiny.3d.txt"
    p.write_text("\n".join(GLOVE_LINES) + "\n")
    yield p
    clear_glove_cache()


def test_glove_lookup_unknown_and_pooled(glove_file):
    enc = create_encoder("glove", path=glove_file)
    assert enc.output_dim == 3 and enc.modality == "text" and enc.vocab_size == 4
    assert tokenize_words("The cat sat, on THE mat!") == ["the", "cat", "sat", "on", "the", "mat"]
    out = enc.encode(["The cat sat, on THE mat!", "don't"])
    the, cat, sat, zero = [1.0, 2.0, 3.0], [0.5, 0.5, -0.5], [3.0, 0.0, -3.0], [0.0, 0.0, 0.0]
    expected = torch.tensor([the, cat, sat, zero, the, zero])
    assert out.hidden.shape == (2, 6, 3)
    assert torch.equal(out.hidden[0], expected)
    assert out.mask.tolist() == [[True] * 6, [True] + [False] * 5]
    pooled0 = torch.tensor([(1 + 0.5 + 3 + 1) / 6, (2 + 0.5 + 0 + 2) / 6, (3 - 0.5 - 3 + 3) / 6])
    assert torch.allclose(out.pooled[0], pooled0)
    assert torch.allclose(out.pooled[1], torch.tensor([0.1, 0.2, 0.3]))
    assert enc.provenance.resolved == "handcrafted" and enc.provenance.fingerprint


def test_glove_vocab_subset_and_cache(glove_file):
    sub = create_encoder("glove", path=glove_file, vocab=["Cat"])
    assert sub.vocab_size == 1
    assert torch.equal(sub.encode(["the cat"]).hidden[0], torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, -0.5]]))
    a = create_encoder("glove", path=glove_file)
    b = create_encoder("glove", path=str(glove_file))
    assert a.vectors is b.vectors  # parsed once per (path, mtime)
    assert a.provenance.fingerprint == b.provenance.fingerprint != sub.provenance.fingerprint
    glove_file.write_text("\n".join(GLOVE_LINES[:2]) + "\n")
    st = glove_file.stat()
    os.utime(glove_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = create_encoder("glove", path=glove_file)
    assert c.vectors is not a.vectors and c.vocab_size == 2


@pytest.mark.parametrize(("line", "found"), [("dog 1.0 2.0", 2), ("dog 1 2 3 4", 4), ("dog", 0)])
def test_glove_malformed_line_names_file_and_line(tmp_path, line, found):
    clear_glove_cache()
    p = tmp_path / "bad.txt"
    p.write_text("\n".join([*GLOVE_LINES[:2], line]) + "\n")
    with pytest.raises(EncoderError, match=rf"bad\.txt:3: .*expected 3 values .*found {found}"):
        create_encoder("glove", path=p)


def test_glove_errors(tmp_path, glove_file):
    with pytest.raises(EncoderError, match="GloVe file not found: .*missing.txt"):
        create_encoder("glove", path=tmp_path / "missing.txt")
    with pytest.raises(EncoderError, match="needs path="):
        create_encoder("glove")
    bad = tmp_path / "nan.txt"
    bad.write_text("the 1 2 3\ncat 1 x 3\n")
    with pytest.raises(EncoderError, match=r"nan\.txt:2"):
        create_encoder("glove", path=bad)
    enc = create_encoder("glove", path=glove_file)
    with pytest.raises(EncoderError, match="transcript 1 is empty"):
        enc.encode(["the cat", " ... "])
