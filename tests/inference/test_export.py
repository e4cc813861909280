"""ONNX export: onnxruntime vs PyTorch on several lengths, dynamic axes, metadata, no silent overwrite, bad models."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.data.audio import load_audio
from emofuse.data.manifest import read_manifest
from emofuse.inference.export import (
    ExportError,
    OnnxStudent,
    _masked_group_norm,
    example_inputs,
    export_onnx,
    onnx_inputs,
    onnx_session,
    verify_onnx,
)
from emofuse.inference.predictor import Predictor
from emofuse.models import create_model
from emofuse.models.checkpoint import save_checkpoint
from emofuse.testing.checkpoints import train_tiny_cmd

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

runner = CliRunner()


# every test here shares one tiny CMD training per session (a few seconds on a free CPU)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_checkpoint(run)


@pytest.fixture(scope="module")
def exported(predictor, tmp_path_factory):
    return export_onnx(predictor.model, tmp_path_factory.mktemp("onnx") / "student.onnx", meta={"classes": "x"})


def test_masked_group_norm_equals_per_utterance_group_norm():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, 20)
    lengths = torch.tensor([20, 13, 5])
    valid = torch.arange(20)[None] < lengths[:, None]
    got = _masked_group_norm(x, norm, valid)
    for i, n in enumerate(lengths.tolist()):
        ref = F.group_norm(x[i : i + 1, :, :n], 4, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(got[i : i + 1, :, :n], ref, atol=1e-5, rtol=1e-5)


def test_eager_export_form_equals_the_model(predictor):
    student = OnnxStudent(predictor.model).eval()
    assert student.input_names == ["input_values", "audio_mask", "input_ids", "attention_mask", "token_type_ids"]
    for b, s, t in ((1, 0.5, 3), (3, 1.3, 9)):
        inputs = example_inputs(student, b, s, t)
        with torch.inference_mode():
            ref = predictor.model(
                {
                    "audio": {"input_values": inputs[0], "attention_mask": inputs[1]},
                    "text": {"input_ids": inputs[2], "attention_mask": inputs[3], "token_type_ids": inputs[4]},
                }
            ).probs
            torch.testing.assert_close(student(*inputs), ref, atol=1e-6, rtol=1e-5)


def test_onnxruntime_matches_pytorch_on_several_lengths(run, predictor, exported):
    import onnx

    diff = verify_onnx(predictor.model, exported, cases=((1, 0.5, 3), (2, 1.3, 9), (4, 2.6, 21), (1, 4.0, 40)))
    assert diff < 1e-4
    # real inputs as the predictor builds them (different lengths in one batch, real token ids)
    root = run.parent / "corpus"
    records = read_manifest(root / "manifest.jsonl")[:5]
    waves = [load_audio(root / r.audio) for r in records]
    texts = [r.text for r in records]
    batch = predictor.batch(waves, texts)
    session = onnx_session(exported)
    got = session.run(["probs"], onnx_inputs(batch, OnnxStudent(predictor.model).input_names))[0]
    for i, (w, t) in enumerate(zip(waves, texts, strict=True)):
        ref = predictor.predict(w, t).probabilities
        np.testing.assert_allclose(got[i], [ref[c] for c in predictor.classes], atol=1e-4)
    # batch and time axes are symbolic in the graph; the classes are in the metadata
    proto = onnx.load(str(exported))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert all(isinstance(d, str) and d for shape in dims.values() for d in shape), dims
    assert {p.key: p.value for p in proto.metadata_props}["classes"] == "x"


def test_never_overwrites_without_permission(predictor, exported):
    before = exported.stat().st_mtime_ns
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_onnx(predictor.model, exported)
    assert exported.stat().st_mtime_ns == before


def test_unexportable_models(tmp_path):
    context = create_model("cm_roberta", audio_dim=8, text_dim=12, hidden=8, num_heads=2, ffn_dim=16, head_hidden=8)
    with pytest.raises(ExportError, match="cannot be exported to ONNX: reads frozen encoder features"):
        export_onnx(context, tmp_path / "c.onnx")
    probe = create_model("probe", modality="text", input_dim=8, num_classes=4)
    with pytest.raises(ExportError, match="only CMD students"):  # feature-input models: export_feature_model
        export_onnx(probe, tmp_path / "p.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stage1 = create_model("cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert", with_head=False)
    with pytest.raises(ExportError, match="no classifier"):
        export_onnx(stage1, tmp_path / "s.onnx")
    assert not list(tmp_path.iterdir())


def test_unimodal_audio_student(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("cmd_student_audio", audio_teacher="tiny-wav2vec2", num_classes=3).eval()
    path = export_onnx(model, tmp_path / "audio.onnx")
    assert [i.name for i in onnx_session(path).get_inputs()] == ["input_values", "audio_mask"]
    assert verify_onnx(model, path, cases=((1, 0.7, 1), (3, 1.9, 1))) < 1e-4


def test_export_command(run, tmp_path):
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(run), "--onnx", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{") :])
    assert doc["max_abs_diff"] < 1e-4 and doc["classes"] == ["angry", "happy", "neutral", "sad"] and out.is_file()
    # tiny-bert's tokenizer gives no segment ids, so neither does the graph
    assert doc["inputs"] == ["input_values", "audio_mask", "input_ids", "attention_mask"]
    res = runner.invoke(app, ["export", str(run), "--onnx", str(out)])
    assert res.exit_code == 2 and "already exists; pass --overwrite" in res.output
    res = runner.invoke(app, ["export", str(run), "--onnx", str(out), "--overwrite", "--no-check"])
    assert res.exit_code == 0 and "wrote" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    context = create_model("cm_roberta", audio_dim=32, text_dim=32, hidden=8, num_heads=2, num_classes=2)
    meta = {"classes": ["a", "b"], "inputs": {"audio": "tiny-wav2vec2", "text": "tiny-bert", "allow_random": True}}
    path = save_checkpoint(context, tmp_path / "context" / "best.safetensors", meta)
    res = runner.invoke(app, ["export", str(path), "--onnx", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "cannot be exported to ONNX: reads frozen encoder features" in res.output
    assert len(res.output.splitlines()) <= 3


def test_whisper_student(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("cmd_student", audio_teacher="tiny-whisper", text_teacher="tiny-bert", num_classes=3)
    path = save_checkpoint(model.eval(), tmp_path / "w" / "best.safetensors", {"classes": ["x", "y", "z"]})
    p = Predictor.from_checkpoint(path)
    out = export_onnx(p.model, tmp_path / "w.onnx", token_types=False)
    names = [i.name for i in onnx_session(out).get_inputs()]
    assert names == ["input_features", "feature_lengths", "input_ids", "attention_mask"]
    assert verify_onnx(p.model, out, cases=((1, 0.6, 5), (3, 1.7, 12), (2, 9.5, 30))) < 1e-4
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(int(16000 * s)).astype(np.float32) for s in (0.37, 1.234, 2.5)]
    texts = ["hi", "hello there you", "a b c d e f"]
    got = onnx_session(out).run(["probs"], onnx_inputs(p.batch(waves, texts), names))[0]
    for row, w, t in zip(got, waves, texts, strict=True):
        ref = p.predict(w, t).probabilities
        np.testing.assert_allclose(row, [ref[c] for c in p.classes], atol=1e-4)


def test_whisper_student_with_a_narrow_front_end(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("cmd_student_audio", audio_teacher="tiny-whisper", front_end_channels=8, num_classes=3)
    path = save_checkpoint(model.eval(), tmp_path / "n" / "best.safetensors", {"classes": ["x", "y", "z"]})
    p = Predictor.from_checkpoint(path)
    out = export_onnx(p.model, tmp_path / "n.onnx")
    assert [i.name for i in onnx_session(out).get_inputs()] == ["input_features", "feature_lengths"]
    assert verify_onnx(p.model, out, cases=((1, 0.6, 5), (3, 1.7, 12), (2, 9.5, 30))) < 1e-4


def test_parity_check_fails_on_nan_output(predictor, exported):
    hook = predictor.model.register_forward_hook(lambda m, i, o: o.__class__(**{**vars(o), "probs": o.probs * np.nan}))
    try:
        with pytest.raises(ExportError, match=r"student\.onnx: PyTorch gave NaN or infinite probabilities"):
            verify_onnx(predictor.model, exported, cases=((1, 0.5, 3),))
    finally:
        hook.remove()


FEATURE_MODELS = {
    "mult": dict(audio_dim=32, text_dim=32, dim=10, num_heads=2, num_layers=2),
    "probe": dict(modality="text", input_dim=32),
}


@pytest.mark.parametrize("name", sorted(FEATURE_MODELS))
def test_feature_models_export_with_their_standardisation(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **FEATURE_MODELS[name])
    g = torch.Generator().manual_seed(1)
    model.feature_stats = {  # z-scoring with the training split's statistics is part of the graph
        m: {"mean": (torch.randn(32, generator=g)).tolist(), "std": (torch.rand(32, generator=g) + 0.5).tolist()}
        for m in model.modalities
    }
    meta = {"classes": ["x", "y", "z"], "inputs": {"audio": "tiny-wav2vec2", "text": "tiny-bert", "allow_random": True}}
    meta["feature_stats"] = model.feature_stats
    path = save_checkpoint(model.eval(), tmp_path / name / "best.safetensors", meta)
    res = runner.invoke(app, ["export", str(path), "--onnx", str(tmp_path / "m.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{") :])
    assert doc["inputs"] == [n for m in model.modalities for n in (f"{m}_features", f"{m}_mask")]
    assert doc["max_abs_diff"] < 1e-5 and doc["classes"] == ["x", "y", "z"]
    # without the standardisation the graph would disagree: the check is not vacuous
    from emofuse.inference.export_features import verify_feature_onnx

    plain = create_model(name, num_classes=3, **FEATURE_MODELS[name])
    plain.load_state_dict(model.state_dict())
    assert verify_feature_onnx(plain.eval(), tmp_path / "m.onnx") > 1e-3
