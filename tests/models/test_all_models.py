"""Every registered model (timm-style): builds from a tiny config, runs forward + backward, rebuilds from its config."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.models import EmotionModel, ModelOutput, create_model, get_model_entry, list_models  # noqa: E402

# tiny overrides by name prefix (longest match wins); models not listed are built with their defaults
TINY = {
    "cmd_student": dict(audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert"),
    "mult": dict(audio_dim=8, text_dim=12, dim=10, num_heads=2, num_layers=2),
    "probe": dict(input_dim=12),
    "conflictnet": dict(window=8000, filters=(4, 8, 8), lstm_sizes=(8, 4)),
    "paranet": dict(window=8000, filters=(4, 8, 8), lstm_sizes=(8, 4)),
    "sew": dict(weak_dim=8, strong_dim=12, weak_hidden=(6,), strong_hidden=(10,), latent=4, regressor_hidden=5),
    "seqsew": dict(weak_dim=8, strong_dim=12, dim=8, ffn_dim=16, head_hidden=8, decoder_units=6),
    "seqsew_unimodal": dict(modality="audio", input_dim=8, dim=8, ffn_dim=16, head_hidden=8),
    "cm_roberta": dict(audio_dim=8, text_dim=12, hidden=8, num_heads=2, ffn_dim=16, head_hidden=8),
    "mgcma": dict(audio_encoder="tiny-wav2vec2", text_encoder="tiny-bert", num_heads=2, tam_layers=2),
    "finetuned_encoder": dict(encoder="tiny-wav2vec2", layer="weighted", pooling="mean_std"),
    "tri_fusion": dict(
        audio_dim=8, text_dim=12, video_dim=5, audio_len=8, audio_short=4, text_len=6, video_len=3, video_short=2
    )
    | dict(hidden=4, num_heads=2),
}
B = 2


def tiny_kwargs(name):
    keys = [k for k in TINY if name.startswith(k)]
    return dict(TINY[max(keys, key=len)]) if keys else {}


def extra_tensors(obj):
    """Floating tensors anywhere in ``ModelOutput.extras`` (inputs of a task's auxiliary losses)."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() and obj.requires_grad else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    return [t for v in obj for t in extra_tensors(v)] if isinstance(obj, (list, tuple)) else []


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def batch():
    audio = quiet(create_encoder, "tiny-wav2vec2", allow_random=True)
    text = quiet(create_encoder, "tiny-bert", allow_random=True)
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=g) for n in (8000, 5000)]
    dims = {"audio": 8, "text": 12}
    lengths = {"audio": torch.tensor([6, 4]), "text": torch.tensor([5, 3])}
    features = {}
    for m, d in dims.items():
        t = int(lengths[m].max())
        features[m] = torch.randn(B, t, d, generator=g)
        features[f"{m}_mask"] = torch.arange(t)[None] < lengths[m][:, None]
    return {
        "ids": ["u0", "u1"],
        "labels": torch.tensor([0, 3]),
        "audio": audio.preprocess(waves),
        "text": text.preprocess(["what a day", "no"]),
        "features": features,
    }


def for_model(model, batch):
    """Dialogue-level models (CM-RoBERTa) get dialogues: (B, N, D) utterance vectors, one label per valid turn."""
    if not model.dialogue_level:
        return batch
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])  # 2 dialogues, 6 utterances
    feats = {}
    for m, d in (("audio", 8), ("text", 12)):
        feats[m], feats[f"{m}_mask"] = torch.randn(B, 4, d, generator=g) * mask[..., None], mask
    return {"ids": [f"u{i}" for i in range(6)], "labels": torch.tensor([0, 3, 1, 2, 0, 1]), "features": feats}


def test_registry_is_populated():
    names = list_models()
    for required in ("cmd_student", "cmd_student_late", "cmd_student_audio", "cmd_student_text"):
        assert required in names
    for required in ("mult", "mult_audio", "mult_text", "probe"):
        assert required in names


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name, batch):
    torch.manual_seed(0)
    model = quiet(create_model, name, **tiny_kwargs(name))
    assert isinstance(model, EmotionModel) and model.model_name == name
    model.train()
    batch = for_model(model, batch)
    n = len(batch["labels"])  # B utterances (or the valid turns of B dialogues)
    out = model(batch)
    assert isinstance(out, ModelOutput)
    for m, h in out.hidden.items():
        assert h.shape[:2] == out.masks[m].shape
    if out.values is not None:  # regression models (ConflictNET): continuous outputs, no class scores
        assert out.values.shape[0] == n and out.values.ndim == 2 and torch.isfinite(out.values).all()
        loss = out.values.pow(2).mean()
    else:
        assert out.logits is not None and out.logits.shape[0] == n and out.logits.ndim == 2
        assert torch.isfinite(out.logits).all()
        assert torch.allclose(out.probs.sum(-1), torch.ones(n), atol=1e-5)
        loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    # parameters only an auxiliary loss reaches (e.g. MGCMA's sigma branch) count through the extras
    sum((t.mean() for t in extra_tensors(out.extras)), loss).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    counts = model.branch_parameters()
    assert sum(counts.values()) == model.num_parameters()


@pytest.mark.parametrize("name", list_models())
def test_rebuild_from_config_and_declared_capabilities(name, batch):
    model = quiet(create_model, name, **tiny_kwargs(name)).eval()
    rebuilt = quiet(get_model_entry(name), **model.config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert rebuilt.config == model.config
    batch = for_model(model, batch)
    assert torch.allclose(_scores(rebuilt(batch)), _scores(model(batch)), atol=1e-5)
    _check_declared_capabilities(model, batch)


def _check_declared_capabilities(model, batch):
    """The declared capabilities match the forward: a model reads only what its input kind says, outputs its target."""
    caps = model.capabilities()
    assert caps.modalities == tuple(model.modalities) and set(caps.encoders) <= set(caps.modalities)
    assert caps.level == ("dialogue" if model.dialogue_level else "utterance")
    drop = ("features",) if caps.input_kind == "raw" else ("audio", "text")  # the other inputs are removed
    out = model({k: v for k, v in batch.items() if k not in drop})
    assert (out.values is not None) == (caps.target == "regression")
    assert (out.logits is not None) == (caps.target == "classification")


def _scores(out):
    return out.values if out.values is not None else out.logits
