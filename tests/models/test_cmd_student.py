"""CMD student: parameter arithmetic (specs/cmd.md §2.3), embedding adapters, fusion order, masks, probabilities."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import RandomInitWarning, create_encoder, list_encoders  # noqa: E402
from emofuse.layers.transformer import PostLNBlock  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models._embedding import InputEmbedding  # noqa: E402
from emofuse.models.cmd_student import CMDStudent, build_teacher  # noqa: E402

TINY = dict(audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert")
TEXTS = ["i can not believe you did that", "okay"]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return fn(*args, **kwargs)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def waves(*seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) for s in seconds]


@pytest.fixture(scope="module")
def encoders():
    return {
        "audio": quiet(create_encoder, "tiny-wav2vec2", allow_random=True),
        "text": quiet(create_encoder, "tiny-bert", allow_random=True),
    }


@pytest.fixture(scope="module")
def batch(encoders):
    return {"audio": encoders["audio"].preprocess(waves(1.0, 0.5)), "text": encoders["text"].preprocess(TEXTS)}


def single(encoders, i):
    """Sample ``i`` of the module batch, on its own (no padding)."""
    return {
        "audio": encoders["audio"].preprocess(waves(1.0, 0.5)[i : i + 1]),
        "text": encoders["text"].preprocess(TEXTS[i : i + 1]),
    }


def tiny(name="cmd_student", **kw):
    torch.manual_seed(0)
    return quiet(create_model, name, **{**TINY, **kw}).eval()


# ----------------------------------------------------------------------------- parameter counts (§2.3)


@pytest.fixture(scope="module")
def base_student():
    with torch.device("meta"):  # nothing allocated, no weights read: the named base architectures
        return create_model("cmd_student")


def test_base_parameter_counts_match_the_paper(base_student):
    b = {m: base_student.branch(m) for m in ("audio", "text")}
    assert n_params(b["audio"].embedding) == 4_595_456  # wav2vec2 CNN 4,200,448 + feature projection 395,008
    assert n_params(b["text"].embedding) == 23_837_184  # BERT word + position + segment embeddings + LN
    for m in b:
        assert n_params(b[m].conv) == 768 * 32 == 24_576  # k = 1, no bias (the spec's 24,608 adds a 32-d bias)
        assert len(b[m].cross) == 3 and len(b[m].self_blocks) == 3
        assert n_params(b[m].cross) + n_params(b[m].self_blocks) == 6 * 12_704 == 76_224
    counts = base_student.branch_parameters()
    assert counts == {"audio": 4_696_256, "text": 23_937_984, "head": 32 * 32 + 32 + 32 * 4 + 4}
    assert abs(counts["audio"] / 1e6 - 4.70) < 0.01 and abs(counts["text"] / 1e6 - 23.94) < 0.01
    assert base_student.num_parameters() == 4_696_256 + 23_937_984 + 1_188


def test_sizes_come_from_the_teacher():
    teacher = build_teacher("facebook/wav2vec2-base", "random", fast=True)
    assert n_params(teacher.input_embedding()) == 4_595_456
    student = tiny()
    assert student.branch("audio").conv.in_channels == 32 and student.branch("text").conv.in_channels == 32
    with torch.device("meta"):
        with_bias = create_model("cmd_student_audio", conv_bias=True)
    assert n_params(with_bias.branch("audio").conv) == 24_608  # the spec's figure


# ----------------------------------------------------------------------------- input-embedding adapter


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_text_adapter_equals_the_teacher_embedding_states(name):
    teacher = quiet(create_encoder, name, allow_random=True, layer=0)  # hidden_states[0] = embedding output
    inputs = teacher.preprocess(TEXTS)
    emb = InputEmbedding(teacher).eval()
    x, mask = emb(inputs)
    ref = teacher(**inputs)
    assert emb.family == "text" and emb.output_dim == teacher.output_dim
    assert x.shape == ref.hidden.shape and torch.equal(mask, ref.mask)
    assert torch.allclose(x * mask[..., None], ref.hidden, atol=1e-6)


def test_wav2vec2_adapter_frames_and_mask_equal_the_teacher(encoders):
    teacher = encoders["audio"]
    inputs = teacher.preprocess(waves(1.0, 0.5, 0.3))
    emb = InputEmbedding(teacher).eval()
    x, mask = emb(inputs)
    ref = teacher(**inputs)
    assert emb.family == "wav2vec2" and emb.output_dim == 32
    assert x.shape[:2] == ref.hidden.shape[:2] and torch.equal(mask, ref.mask)
    # valid frames are the CNN + projection of each utterance on its own (GroupNorm never sees padding)
    for i, w in enumerate(waves(1.0, 0.5, 0.3)):
        own, own_mask = emb(teacher.preprocess([w]))
        assert own_mask.all() and torch.allclose(x[i, : own.shape[1]], own[0], atol=1e-5)


@pytest.mark.skipif("tiny-whisper" not in list_encoders(), reason="whisper encoder not available")
def test_whisper_adapter_equals_the_teacher_embedding_states():
    teacher = quiet(create_encoder, "tiny-whisper", allow_random=True, layer=0)  # states[0] = embedding output
    emb = InputEmbedding(teacher).eval()
    assert emb.family == "whisper" and emb.output_dim == teacher.output_dim
    for clips in (waves(1.0, 0.5, 0.27), waves(31.0, 2.0)):  # the second needs two 30 s windows
        inputs = teacher.preprocess(clips)
        x, mask = emb(inputs)
        ref = teacher(**inputs)
        assert x.shape == ref.hidden.shape and torch.equal(mask, ref.mask)
        assert torch.allclose(x * mask[..., None], ref.hidden, atol=1e-5)


def test_embedding_weights_are_copied_not_shared(encoders):
    teacher = quiet(create_encoder, "tiny-bert", allow_random=True)
    emb = InputEmbedding(teacher)
    word = teacher.model.embeddings.word_embeddings.weight
    assert torch.equal(emb.module.word_embeddings.weight, word)  # the teacher's weights ...
    assert emb.module.word_embeddings.weight.data_ptr() != word.data_ptr()  # ... in a copy
    assert all(p.requires_grad for p in emb.parameters()) and not word.requires_grad  # teacher stays frozen
    before = emb.module.word_embeddings.weight.clone()
    with torch.no_grad():
        word.add_(1.0)
    assert torch.equal(emb.module.word_embeddings.weight, before)
    # the student holds the same copied values as a freshly built (seeded) teacher
    fresh = quiet(create_encoder, "tiny-bert", allow_random=True)
    student = tiny()
    assert torch.equal(
        student.branch("text").embedding.module.word_embeddings.weight, fresh.model.embeddings.word_embeddings.weight
    )
    assert not any(p.requires_grad is False for p in student.parameters())
    assert not any(p.requires_grad for p in tiny(freeze_embedding=True).branch("text").embedding.parameters())


# ----------------------------------------------------------------------------- forward, variants, fusion


@pytest.mark.parametrize(
    "name, mods, n_cross",
    [
        ("cmd_student", ("audio", "text"), 3),
        ("cmd_student_late", ("audio", "text"), 3),
        ("cmd_student_audio", ("audio",), 0),
        ("cmd_student_text", ("text",), 0),
    ],
)
def test_variant_shapes(name, mods, n_cross, batch):
    model = tiny(name)
    out = model(batch)
    assert tuple(model.modalities) == mods and set(out.hidden) == set(mods)
    assert out.logits.shape == out.probs.shape == (2, 4)
    assert torch.allclose(out.probs.sum(-1), torch.ones(2))
    lengths = {"audio": 49, "text": batch["text"]["input_ids"].shape[1]}
    for m in mods:
        assert out.hidden[m].shape == (2, lengths[m], 32) and out.masks[m].shape == (2, lengths[m])
        assert out.pooled[m].shape == (2, 32) and out.modality_logits[m].shape == (2, 4)
        assert len(model.branch(m).cross) == n_cross and len(model.branch(m).self_blocks) == 3
        assert torch.all(out.hidden[m][~out.masks[m]] == 0)


def test_unimodal_has_no_cross_attention_and_needs_one_modality(batch):
    model = tiny("cmd_student_text")
    assert not any("cross" in n for n, _ in model.named_parameters())
    assert model(dict(text=batch["text"])).logits.shape == (2, 4)
    deep = tiny("cmd_student_audio", num_self=6)
    assert len(deep.branch("audio").self_blocks) == 6
    assert set(deep.branch_parameters()) == {"audio", "head"}


def _record_calls(model):
    calls = []
    for m in model.modalities:
        for kind in ("cross", "self_blocks"):
            for i, blk in enumerate(getattr(model.branch(m), kind)):
                blk.register_forward_hook(lambda mod, args, out, key=(m, kind, i): calls.append((key, args, out)))
    return calls


@pytest.mark.parametrize("fusion, first, then", [("early", "cross", "self_blocks"), ("late", "self_blocks", "cross")])
def test_fusion_order(fusion, first, then, batch):
    model = tiny(fusion=fusion)
    calls = _record_calls(model)
    model(batch)
    for m in ("audio", "text"):
        kinds = [k for (mm, k, _), _, _ in calls if mm == m]
        assert kinds == [first] * 3 + [then] * 3


def test_cross_keys_are_the_fixed_other_input_or_lockstep(batch):
    model = tiny()
    calls = _record_calls(model)
    model(batch)
    text_in = model.branch("text").embed(batch["text"])[0]
    kv = [args[1] for (m, k, _), args, _ in calls if m == "audio" and k == "cross"]
    assert all(torch.equal(x, text_in) for x in kv)  # MulT-style: every block sees the text embedding
    lock = tiny(cross_kv="lockstep")
    calls = _record_calls(lock)
    lock(batch)
    text_out = [out for (m, k, _), _, out in calls if m == "text" and k == "cross"]
    kv = [args[1] for (m, k, _), args, _ in calls if m == "audio" and k == "cross"]
    assert torch.equal(kv[1], text_out[0]) and torch.equal(kv[2], text_out[1])


def test_padding_never_changes_valid_outputs(encoders, batch):
    model = tiny()
    out = model(batch)
    for i in range(2):
        alone = model(single(encoders, i))
        for m in ("audio", "text"):
            n = int(out.masks[m][i].sum())
            assert alone.hidden[m].shape[1] == n
            assert torch.allclose(out.hidden[m][i, :n], alone.hidden[m][0], atol=1e-4)
        assert torch.allclose(out.probs[i], alone.probs[0], atol=1e-4)


def test_probability_averaging_by_hand(batch):
    model = tiny(temperature=0.5)
    out = model(batch)
    z = {m: model.head(out.pooled[m]) for m in ("audio", "text")}
    for m in z:
        assert torch.allclose(out.modality_logits[m], z[m])
        assert torch.allclose(out.pooled[m], out.hidden[m].sum(1) / out.masks[m].sum(1, keepdim=True))
    by_hand = (torch.softmax(z["audio"] / 0.5, -1) + torch.softmax(z["text"] / 0.5, -1)) / 2
    assert torch.allclose(out.probs, by_hand, atol=1e-6)
    assert torch.allclose(out.logits, by_hand.log(), atol=1e-5)


def test_probability_averaging_tiny_example(batch):
    # per-modality heads that output fixed scores: audio (2, 0, 0, 0), text (0, 1, 0, 0); kappa = 0.5
    model = tiny(shared_head=False, temperature=0.5)
    with torch.no_grad():
        for m, bias in (("audio", [2.0, 0, 0, 0]), ("text", [0, 1.0, 0, 0])):
            model.branch(m).head.fc2.weight.zero_()
            model.branch(m).head.fc2.bias.copy_(torch.tensor(bias))
    out = model(batch)
    e = math.e
    audio = torch.tensor([e**4, 1, 1, 1]) / (e**4 + 3)
    text = torch.tensor([1, e**2, 1, 1]) / (e**2 + 3)
    assert torch.allclose(out.probs, ((audio + text) / 2).expand(2, 4), atol=1e-6)
    assert torch.allclose(out.modality_logits["audio"], torch.tensor([2.0, 0, 0, 0]).expand(2, 4))
    assert out.probs.argmax(-1).tolist() == [0, 0]


def test_heads_shared_or_per_modality_and_stage1_without_head(batch):
    per = tiny(shared_head=False)
    assert per.head is None and per.branch("audio").head is not per.branch("text").head
    shared = tiny()
    assert per.num_parameters() == shared.num_parameters() + 1_188
    stage1 = tiny(with_head=False)
    out = stage1(batch)
    assert out.logits is None and out.probs is None and not out.modality_logits
    assert set(out.hidden) == {"audio", "text"} and "head" not in stage1.branch_parameters()


def test_kernel_size_switch_keeps_lengths(batch):
    model = tiny(kernel_size=3)
    assert model.branch("audio").conv.kernel_size == (3,)
    assert model(batch).hidden["audio"].shape == (2, 49, 32)
    with pytest.raises(ValueError, match="kernel_size"):
        tiny(kernel_size=2)


def test_gradients_reach_the_copied_embeddings(batch):
    model = tiny().train()
    out = model(batch)
    torch.nn.functional.nll_loss(out.logits, torch.tensor([0, 3])).backward()
    for m in ("audio", "text"):
        grads = [p.grad for p in model.branch(m).embedding.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_rebuild_from_config_and_state_dict(batch):
    model = tiny(fusion="late", temperature=0.1)
    assert model.config["fusion"] == "late" and model.config["audio_teacher"] == "tiny-wav2vec2"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)  # no random-init warning when rebuilding
        rebuilt = CMDStudent.from_config(model.config)
    for p in rebuilt.parameters():
        torch.nn.init.normal_(p)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(batch).probs, model(batch).probs, atol=1e-6)
    again = quiet(create_model, "cmd_student", **model.config)
    assert again.config == model.config


def test_bad_arguments():
    with pytest.raises(ValueError, match="fusion"):
        tiny(fusion="middle")
    with pytest.raises(ValueError, match="audio encoder"):
        tiny(text_teacher="tiny-wav2vec2")
    with pytest.raises(ValueError, match="modalities"):
        tiny(modalities=("video",))
    assert isinstance(tiny().branch("audio").self_blocks[0], PostLNBlock)


@pytest.mark.skipif("tiny-whisper" not in list_encoders(), reason="whisper encoder not available")
def test_student_with_a_whisper_teacher():
    model = tiny(audio_teacher="tiny-whisper")
    enc = quiet(create_encoder, "tiny-whisper", allow_random=True)
    text = quiet(create_encoder, "tiny-bert", allow_random=True)
    out = model({"audio": enc.preprocess(waves(1.0, 0.5)), "text": text.preprocess(TEXTS)})
    assert out.hidden["audio"].shape == (2, 50, 32) and out.masks["audio"].sum(1).tolist() == [50, 25]
    assert model.branch("audio").embedding.family == "whisper"


@pytest.mark.slow
def test_packaged_whisper_tiny_en_and_minilm_teachers():
    from emofuse.encoders import resolve_encoder

    names = {"audio": "openai/whisper-tiny.en", "text": "all-MiniLM-L6-v2"}
    if not set(names.values()) <= set(list_encoders()):
        pytest.skip("whisper encoder not available")
    if any(resolve_encoder(n, allow_random=True).resolved == "random" for n in names.values()):
        pytest.skip("packaged whisper-tiny.en / MiniLM weights not installed")
    model = create_model("cmd_student", audio_teacher=names["audio"], text_teacher=names["text"]).eval()
    teachers = {m: create_encoder(n) for m, n in names.items()}
    batch = {"audio": teachers["audio"].preprocess(waves(1.0, 0.5)), "text": teachers["text"].preprocess(TEXTS)}
    out = model(batch)
    for m, t in teachers.items():
        ref = t(**batch[m])
        assert out.masks[m].shape == ref.mask.shape and torch.equal(out.masks[m], ref.mask)
        assert model.branch(m).conv.in_channels == t.output_dim == 384
    assert model.teacher_provenance["text"]["resolved"] == "packaged"


def test_mean_std_pooling_feeds_mean_and_std_to_the_classifier(encoders):
    torch.manual_seed(0)
    model = quiet(CMDStudent, text_teacher="tiny-bert", modalities=("text",), pooling="mean_std", num_classes=3).eval()
    batch = {"text": encoders["text"].preprocess(TEXTS)}
    out = model(batch)
    h, mask = out.hidden["text"], out.masks["text"]
    for i in range(2):
        valid = h[i][mask[i]]  # (T_i, d)
        want = torch.cat([valid.mean(0), valid.std(0, unbiased=False)])
        torch.testing.assert_close(out.pooled["text"][i], want, atol=1e-5, rtol=1e-4)
    assert model.head.fc1.in_features == 2 * 32 and model.head.fc1.out_features == 32
    torch.testing.assert_close(out.modality_logits["text"], model.head(out.pooled["text"]))
    with pytest.raises(ValueError, match="pooling must be one of"):
        quiet(CMDStudent, text_teacher="tiny-bert", modalities=("text",), pooling="max")


@pytest.mark.skipif("tiny-whisper" not in list_encoders(), reason="whisper encoder not available")
def test_narrow_front_end_keeps_the_teacher_frames_at_a_fraction_of_the_weights():
    teacher = quiet(create_encoder, "tiny-whisper", allow_random=True)
    copied, narrow = InputEmbedding(teacher), InputEmbedding(teacher, narrow=6)
    conv1 = copied.module.conv1
    assert narrow.family == "whisper" and narrow.output_dim == 6
    # conv1 M x 6 x 3 + 6, conv2 6 x 6 x 3 + 6; no position table
    assert n_params(narrow) == conv1.in_channels * 6 * 3 + 6 + 6 * 6 * 3 + 6
    assert narrow.module.embed_positions is None and narrow.module.max_frames is None
    assert all(p.requires_grad for p in narrow.parameters())
    for clips in (waves(1.0, 0.5, 0.27), waves(31.0, 2.0)):  # past 30 s: one pass, no windows needed
        inputs = teacher.preprocess(clips)
        x, mask = narrow(inputs)
        ref = teacher(**inputs)
        assert x.shape == (*ref.hidden.shape[:2], 6) and torch.equal(mask, ref.mask)
        # each row's valid frames are those of the row embedded on its own: padding never leaks in
        for i, clip in enumerate(clips):
            own, _ = narrow(teacher.preprocess([clip]))
            n = int(mask[i].sum())
            assert torch.allclose(x[i, :n], own[0, :n], atol=1e-5)


def test_narrow_front_end_refuses_other_teachers_and_freezing():
    with pytest.raises(ValueError, match="Whisper teachers only, not a text embedding"):
        InputEmbedding(quiet(create_encoder, "tiny-bert", allow_random=True), narrow=8)
    if "tiny-whisper" in list_encoders():
        with pytest.raises(ValueError, match="cannot be frozen"):
            InputEmbedding(quiet(create_encoder, "tiny-whisper", allow_random=True), trainable=False, narrow=8)
    with pytest.raises(ValueError, match="front_end_channels needs teacher_layers=0"):
        tiny(audio_teacher="tiny-whisper", front_end_channels=8, teacher_layers=1)
    with pytest.raises(ValueError, match="front_end_channels must be >= 0"):
        tiny(front_end_channels=-1)


@pytest.mark.skipif("tiny-whisper" not in list_encoders(), reason="whisper encoder not available")
def test_student_with_a_narrow_front_end_is_smaller_and_rebuilds_from_its_config():
    full = tiny(audio_teacher="tiny-whisper", modalities=("audio",))
    model = tiny(audio_teacher="tiny-whisper", modalities=("audio",), front_end_channels=8)
    enc = quiet(create_encoder, "tiny-whisper", allow_random=True)
    out = model({"audio": enc.preprocess(waves(1.0, 0.5))})
    assert out.hidden["audio"].shape == (2, 50, 32) and out.masks["audio"].sum(1).tolist() == [50, 25]
    assert model.branch("audio").conv.in_channels == 8
    saved = n_params(full.branch("audio").embedding) - n_params(model.branch("audio").embedding)
    conv_saved = (enc.output_dim - 8) * 32  # the reducer reads 8 channels instead of D
    assert n_params(full) - n_params(model) == saved + conv_saved
    again = CMDStudent.from_config(model.config)
    again.load_state_dict(model.state_dict())
    assert torch.equal(
        again.eval()({"audio": enc.preprocess(waves(1.0))}).probs,
        model.eval()({"audio": enc.preprocess(waves(1.0))}).probs,
    )


@pytest.mark.skipif("tiny-whisper" not in list_encoders(), reason="whisper encoder not available")
def test_narrow_front_end_is_the_audio_branch_only_and_always_trained():
    model = tiny(audio_teacher="tiny-whisper", front_end_channels=8, freeze_embedding=True)
    audio, text = model.branch("audio").embedding, model.branch("text").embedding
    assert audio.output_dim == 8 and all(p.requires_grad for p in audio.parameters())
    assert text.family == "text" and not any(p.requires_grad for p in text.parameters())  # copied, frozen
    assert "narrow, 8 channels" in model.teacher_provenance["audio"]["notes"][-1]
