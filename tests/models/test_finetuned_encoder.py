"""finetuned_encoder: a tiny Whisper / BERT trained end to end with a pooling head; freezing; declared layer depths."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.models import create_model  # noqa: E402
from emofuse.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def _batch(model, n=2):
    g = torch.Generator().manual_seed(0)
    if model.modality == "audio":
        raw = [0.1 * torch.randn(s, generator=g) for s in (8000, 5600)][:n]
    else:
        raw = ["what a day it is", "no"][:n]
    return {model.modality: model.encoder.preprocess(raw), "labels": torch.tensor([0, 2])[:n]}


@pytest.mark.parametrize(
    ("encoder", "layer", "pooling"),
    [("tiny-whisper", "weighted", "mean_std"), ("tiny-bert", None, "mean"), ("tiny-roberta", 1, "first")],
)
def test_forward_backward_reaches_every_trainable_parameter(encoder, layer, pooling):
    torch.manual_seed(0)
    model = create_model("finetuned_encoder", encoder=encoder, num_classes=3, layer=layer, pooling=pooling)
    model.train()
    out = model(_batch(model))
    width = model.encoder.output_dim * (2 if pooling == "mean_std" else 1)
    m = model.modality
    assert out.logits.shape == (2, 3) and out.pooled[m].shape == (2, width)
    assert torch.allclose(out.probs.sum(-1), torch.ones(2))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unused_layers = layer not in (None, "weighted")  # a middle layer: the blocks above it get no gradient
    missing = [n for n, p in trainable if p.grad is None]
    if unused_layers:
        assert missing and all(".layer.1." in n for n in missing), missing
    else:
        assert not missing, missing
    assert model.encoder.modality == m and model.modalities == (m,)


def test_freezing_the_front_end_and_the_first_blocks():
    model = create_model("finetuned_encoder", encoder="tiny-whisper", freeze_front_end=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"encoder.model.conv1.weight", "encoder.model.conv2.bias", "encoder.model.embed_positions.weight"} <= frozen
    assert not any(".layers." in n for n in frozen)

    model = create_model("finetuned_encoder", encoder="tiny-bert", freeze_layers=1, num_classes=3)
    depth = model.encoder_layer_ids()
    assert set(depth.values()) == {0, 1, 2}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    torch.nn.functional.cross_entropy(model(_batch(model)).logits, torch.tensor([0, 2])).backward()
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if depth.get(name, 99) <= 1:  # embeddings (0) and block 1: frozen, never updated
            assert not p.requires_grad and not changed, name
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if depth.get(n) == 2)
    assert not torch.equal(model.head[-1].weight, before["head.1.weight"])
    with pytest.raises(ValueError, match="freeze_layers must be in 0..2"):
        create_model("finetuned_encoder", encoder="tiny-bert", freeze_layers=3)


def test_layer_depths_follow_the_blocks():
    depth = create_model("finetuned_encoder", encoder="tiny-whisper").encoder_layer_ids()
    assert depth["encoder.model.conv1.weight"] == 0
    assert depth["encoder.model.layers.0.fc1.weight"] == 1 and depth["encoder.model.layers.1.fc1.weight"] == 2
    assert depth["encoder.model.layer_norm.weight"] == 2  # after the last block: its depth
    assert not any(n.startswith("head") for n in depth)
    weighted = create_model("finetuned_encoder", encoder="tiny-wav2vec2", layer="weighted").encoder_layer_ids()
    assert "encoder.selector.weights" not in weighted  # the layer weighting is trained with the head
    assert weighted["encoder.model.feature_extractor.conv_layers.0.conv.weight"] == 0


def test_checkpoint_rebuilds_the_fine_tuned_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("finetuned_encoder", encoder="tiny-bert", num_classes=3, head_hidden=8).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(model, tmp_path / "best.safetensors", {"classes": ["a", "b", "c"]})
    rebuilt, meta = load_checkpoint(path)
    batch = _batch(model)
    assert meta["model_config"]["modality"] == "text"
    torch.testing.assert_close(rebuilt(batch).logits, model(batch).logits)
    assert rebuilt.input_encoders()["text"] is rebuilt.encoder


def test_any_local_hugging_face_checkpoint_of_a_registered_family(tmp_path):
    """A user's own BERT-family folder (here: tiny, 3 blocks) fine-tunes under a registered name via weights_dir."""
    from transformers import BertConfig, BertModel

    from emofuse.encoders.hf_text import char_tokenizer

    tok = char_tokenizer("bert")
    config = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "mine")
    tok.save_pretrained(tmp_path / "mine")
    model = create_model(
        "finetuned_encoder", encoder="bert-base-uncased", weights_dir=str(tmp_path / "mine"), num_classes=2
    )
    prov = model.encoder_provenance["text"]
    assert prov["resolved"] == "local" and prov["stand_in"]  # not bert-base's size: recorded as such
    assert max(model.encoder_layer_ids().values()) == 3 and model.encoder.output_dim == 16
    out = model({"text": model.encoder.preprocess(["hello there", "no"])})
    assert out.logits.shape == (2, 2)
    rebuilt, _ = load_checkpoint(save_checkpoint(model, tmp_path / "ft" / "best.safetensors", {"classes": ["a", "b"]}))
    assert rebuilt.config["weights_dir"] == str(tmp_path / "mine")
