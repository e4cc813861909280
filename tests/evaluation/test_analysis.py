"""Modality dominance and token importance (spec cmd.md §5.4–5.5) on a tiny CMD student and hand-made fakes."""

import math
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from emofuse.evaluation import (
    dominance_summary,
    dominance_table_markdown,
    modality_dominance,
    render_token_importance_html,
    token_importance,
)
from emofuse.layers.pooling import masked_mean
from emofuse.models.base import EmotionModel, ModelOutput

TEXTS = ["i can not believe you did that", "okay so what", "oh no", "yes it is great you know"]
SECONDS = [0.4, 0.3, 0.25, 0.35]


@pytest.fixture(scope="module")
def tiny():
    from emofuse.encoders import create_encoder
    from emofuse.models import create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = create_model("cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert").eval()
        audio = create_encoder("tiny-wav2vec2", allow_random=True)
        text = create_encoder("tiny-bert", allow_random=True)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) for s in SECONDS]
    return model, audio, text, waves


def make_batch(tiny, idx, labels=None):
    _, audio, text, waves = tiny
    return {
        "ids": [f"u{i}" for i in idx],
        "labels": torch.tensor([labels[i] if labels else i % 4 for i in idx]),
        "audio": audio.preprocess([waves[i] for i in idx]),
        "text": text.preprocess([TEXTS[i] for i in idx]),
    }


class TextSaturated(EmotionModel):
    """Fake fused model: audio logits from the batch, text logits saturated on class 0 (their gradient is 0)."""

    modalities = ("audio", "text")

    def __init__(self, temperature=0.1):
        super().__init__()
        self.temperature = temperature
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        za = batch["a"] * self.w  # (B, C)
        zt = torch.zeros_like(za)
        zt[:, 0] = 1000.0
        probs = torch.stack([(z / self.temperature).softmax(-1) for z in (za, zt)]).mean(0)
        return ModelOutput(logits=probs.log(), probs=probs, modality_logits={"audio": za, "text": zt})


def test_audio_dominates_when_the_text_softmax_is_saturated():
    torch.manual_seed(1)
    batch = {
        "ids": [f"x{i}" for i in range(6)],
        "labels": torch.tensor([0, 1, 2, 3, 0, 1]),
        "a": 0.1 * torch.randn(6, 4),
        "text": {"input_ids": torch.ones(6, 7, dtype=torch.long), "attention_mask": torch.ones(6, 7)},
    }
    batch["text"]["attention_mask"][1, 4:] = 0
    res = modality_dominance(TextSaturated(), [batch], texts={"x0": "one two  three"})
    recs, summary = res["records"], res["summary"]
    assert [r["dominant"] for r in recs] == ["audio"] * 6
    assert all(r["grad_text"] == 0.0 and r["grad_audio"] > 0 for r in recs)
    assert summary["share"] == {"audio": 1.0, "text": 0.0} and summary["count"]["audio"] == 6
    # without a tokenizer: valid positions minus [CLS] and [SEP]
    assert [r["text_tokens"] for r in recs] == [5, 2, 5, 5, 5, 5]
    assert recs[0]["words"] == 3 and recs[1]["words"] is None and "words" not in summary
    md = dominance_table_markdown(summary, "fake")
    assert "| fake | Audio | 100.0% | 4.50 (±1.22) |" in md and "| fake | Text | 0.0% | – |" in md


def test_gradient_norms_equal_per_sample_autograd(tiny):
    model = tiny[0]
    batch = make_batch(tiny, [0, 1, 2, 3], labels=[1, 0, 3, 2])
    res = modality_dominance(model, [batch], tiny[2].tokenizer)
    out = model(batch)  # grad mode: differentiate the raw per-modality logits by hand
    za, zt = out.modality_logits["audio"], out.modality_logits["text"]
    kappa = model.temperature
    for i, rec in enumerate(res["records"]):
        y = int(batch["labels"][i])
        p = 0.5 * ((za[i] / kappa).softmax(-1)[y] + (zt[i] / kappa).softmax(-1)[y])
        ga, gt = torch.autograd.grad(-torch.log(p), [za, zt], retain_graph=True)
        assert rec["grad_audio"] == pytest.approx(float(ga[i].norm()), rel=1e-4, abs=1e-8)
        assert rec["grad_text"] == pytest.approx(float(gt[i].norm()), rel=1e-4, abs=1e-8)
        assert rec["dominant"] == ("audio" if rec["grad_audio"] > rec["grad_text"] else "text")
        assert rec["text_tokens"] == len(tiny[2].tokenizer.tokenize(TEXTS[i]))
    # a sample's gradients do not depend on the batch it is in
    alone = modality_dominance(model, [make_batch(tiny, [2], labels=[1, 0, 3, 2])], tiny[2].tokenizer)["records"][0]
    assert alone["grad_text"] == pytest.approx(res["records"][2]["grad_text"], rel=1e-4)
    assert alone["grad_audio"] == pytest.approx(res["records"][2]["grad_audio"], rel=1e-4)


def test_unlabelled_samples_are_skipped(tiny):
    batch = make_batch(tiny, [0, 1])
    batch["labels"] = torch.tensor([-100, 2])
    res = modality_dominance(tiny[0], [batch], tiny[2].tokenizer)
    assert [r["id"] for r in res["records"]] == ["u1"] and res["summary"]["skipped_unlabelled"] == 1


@pytest.mark.parametrize("method", ["grad_x_input", "grad_cam", "grad_norm"])
def test_token_importance_padding_invariant_and_normalised(tiny, method):
    model, _, text, _ = tiny
    batched = token_importance(model, make_batch(tiny, [0, 1, 2, 3]), text.tokenizer, method=method)
    for i in (1, 2):  # short sentences: padded in the batch, unpadded alone
        alone = token_importance(model, make_batch(tiny, [i]), text.tokenizer, method=method)[0]
        assert alone["tokens"] == batched[i]["tokens"] == text.tokenizer.tokenize(TEXTS[i])
        np.testing.assert_allclose(alone["raw"], batched[i]["raw"], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(alone["scores"], batched[i]["scores"], rtol=1e-4, atol=1e-6)
    for item in batched:
        s = item["scores"]
        assert len(s) == len(item["tokens"]) == len(item["raw"]) and all(0.0 <= v <= 1.0 for v in s)
        assert max(s) == 1.0 or (method == "grad_cam" and max(s) == 0.0)
        assert "[CLS]" not in item["tokens"] and "[SEP]" not in item["tokens"] and "[PAD]" not in item["tokens"]
    if method == "grad_norm":  # c_text only reaches the loss through the mean: the same gradient at every token
        assert all(v == pytest.approx(1.0, rel=1e-5) for item in batched for v in item["scores"])


def test_token_gradients_match_a_manual_recomputation_from_hidden(tiny):
    """hidden['text'] is the masked c_text: re-pool it through the head and differentiate by hand."""
    model, _, text, _ = tiny
    batch = make_batch(tiny, [0, 1, 3], labels=[2, 1, 3, 0])
    out = model(batch)
    hidden = out.hidden["text"].detach().requires_grad_(True)  # (B, T, d)
    mask = out.masks["text"]
    zt = model.head(masked_mean(hidden, mask))
    za = out.modality_logits["audio"].detach()
    k = model.temperature
    y = batch["labels"]
    p = 0.5 * ((za / k).softmax(-1) + (zt / k).softmax(-1)).gather(1, y[:, None]).squeeze(1)
    (g,) = torch.autograd.grad(-torch.log(p).sum(), hidden)
    ids = batch["text"]["input_ids"]
    for method, ref in (("grad_norm", g.norm(dim=-1)), ("grad_x_input", (g * hidden).norm(dim=-1))):
        items = token_importance(model, batch, text.tokenizer, classes=list("nhsa"), method=method)
        for i, item in enumerate(items):
            keep = mask[i] & (ids[i] != text.tokenizer.cls_token_id) & (ids[i] != text.tokenizer.sep_token_id)
            np.testing.assert_allclose(item["raw"], ref[i][keep].detach().numpy(), rtol=1e-4, atol=1e-8)
            assert item["label"] == "nhsa"[int(y[i])] and item["method"] == method


def test_token_importance_without_labels_explains_the_prediction(tiny):
    batch = make_batch(tiny, [0, 2])
    del batch["labels"]
    items = token_importance(tiny[0], batch, tiny[2].tokenizer)
    assert [it["label"] for it in items] == [None, None] and all(isinstance(it["pred"], int) for it in items)


class _Checker(HTMLParser):
    VOID = {"meta", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_every_token_and_parses():
    items = [
        {"id": "a&b", "tokens": ["<script>", "x", "##ie", '"q"'], "scores": [1.0, 0.0, 0.5, 0.25], "label": "<happy>"},
        {"id": "c", "tokens": ["fine", "&amp;"], "scores": [0.2, 1.0], "label": "<happy>", "pred": "sad"},
        {"id": "d", "tokens": ["oh"], "scores": [1.0], "label": "neutral"},
    ]
    page = render_token_importance_html(items, title="T <7>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp;amp;" in page
    assert "rgba(220, 38, 38, 0.500)" in page and "rgba(220, 38, 38, 1.000)" in page
    parser = _Checker()
    parser.feed(page)
    parser.close()
    assert not parser.errors and parser.stack == []
    text = "".join(parser.text)
    for it in items:
        for tok in it["tokens"]:
            assert tok in text
    assert "T <7>" in text and text.count("<happy>") == 1  # one section per label
    assert "0.25" in text and "1.00" in text  # the legend


def test_summary_statistics_and_paper_table():
    recs = [{"dominant": "audio", "text_tokens": n} for n in (2, 4, 6)] + [{"dominant": "text", "text_tokens": 9}]
    s = dominance_summary(recs)
    assert s["share"] == {"audio": 0.75, "text": 0.25} and s["text_tokens"]["audio"]["mean"] == 4.0
    assert s["text_tokens"]["audio"]["std"] == pytest.approx(2.0) and s["text_tokens"]["text"]["std"] is None
    table = dominance_table_markdown(s, "IEMOCAP").splitlines()
    assert table[0] == "| Data | Dominant modality | Selection ratio | μ(±σ) raw text-token length |"
    assert table[2:] == ["| IEMOCAP | Audio | 75.0% | 4.00 (±2.00) |", "| IEMOCAP | Text | 25.0% | 9.00 (–) |"]
    paper = {
        "share": {"audio": 0.095, "text": 0.905},
        "text_tokens": {"audio": {"mean": 5.38, "std": 3.48, "n": 9}, "text": {"mean": 16.85, "std": 13.04, "n": 86}},
    }
    assert "| Audio | 9.5% | 5.38 (±3.48) |" in dominance_table_markdown(paper)
    assert dominance_summary([])["n"] == 0 and not math.isnan(dominance_summary([])["share"]["audio"])


def test_models_without_probability_fusion_are_refused():
    class Plain(EmotionModel):
        modalities = ("audio", "text")

        def forward(self, batch):
            z = batch["a"]
            return ModelOutput(logits=z, probs=z.softmax(-1), modality_logits={"audio": z, "text": -z})

    batch = {"ids": ["x"], "labels": torch.tensor([0]), "a": torch.randn(1, 4)}
    with pytest.raises(ValueError, match="temperature"):
        modality_dominance(Plain(), [batch])
    with pytest.raises(ValueError, match="input_ids"):
        token_importance(TextSaturated(), batch, tokenizer=None)


def test_token_importance_with_frozen_weights(tiny):
    model, _, text, _ = tiny
    batch = make_batch(tiny, [0, 1])
    ref = token_importance(model, batch, text.tokenizer)
    state = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    try:
        frozen = token_importance(model, batch, text.tokenizer)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(state[n])
    for a, b in zip(ref, frozen, strict=True):
        np.testing.assert_allclose(a["raw"], b["raw"], rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())
