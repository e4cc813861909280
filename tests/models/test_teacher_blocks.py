"""Teacher layers copied into emofuse blocks: same states as the teacher, independent copies, clear errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import RandomInitWarning, create_encoder, list_encoders  # noqa: E402
from emofuse.layers.transformer import PostLNBlock, PreLNBlock  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.models._embedding import InputEmbedding  # noqa: E402
from emofuse.models._teacher_blocks import copy_teacher_blocks, teacher_layer_count  # noqa: E402
from emofuse.models.cmd_student import CMDStudent  # noqa: E402
from emofuse.tasks.distillation import DistillationTask  # noqa: E402

TEXTS = ["i can not believe you did that", "okay"]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return fn(*args, **kwargs)


def waves(*seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) for s in seconds]


def run_copy(encoder, inputs, k, final_norm):
    """Copied embedding → first ``k`` copied blocks (→ copied output norm)."""
    blocks, norm, _ = copy_teacher_blocks(encoder, k, dropout=0.0)
    x, mask = InputEmbedding(encoder)(inputs)
    for blk in blocks.eval():
        x = blk(x, q_mask=mask)
    return norm(x) if final_norm else x


CASES = [
    ("tiny-whisper", lambda enc: enc.preprocess(waves(1.0)), PreLNBlock),
    ("tiny-bert", lambda enc: enc.preprocess(TEXTS[:1]), PostLNBlock),
]


@pytest.mark.parametrize("name, make_inputs, block_type", CASES)
def test_copied_blocks_compute_the_teachers_hidden_state_at_every_depth(name, make_inputs, block_type):
    if name not in list_encoders():
        pytest.skip(f"{name} not available")
    torch.manual_seed(0)
    base = quiet(create_encoder, name, allow_random=True).eval()
    depth = teacher_layer_count(base)
    inputs = make_inputs(base)
    with torch.no_grad():
        for k in range(1, depth + 1):
            # the reference: the same weights, read at hidden state k (the last one after the final norm)
            ref = quiet(create_encoder, name, allow_random=True, layer=k if k < depth else None).eval()
            ref.model.load_state_dict(base.model.state_dict())
            got = run_copy(base, inputs, k, final_norm=k == depth)
            want = ref(**inputs).hidden
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    blocks, _, dims = copy_teacher_blocks(base, depth)
    assert all(isinstance(b, block_type) for b in blocks) and dims["dim"] == base.output_dim


def test_copied_blocks_are_independent_of_the_teacher():
    torch.manual_seed(0)
    enc = quiet(create_encoder, "tiny-bert", allow_random=True)
    blocks, _, _ = copy_teacher_blocks(enc, 1)
    before = blocks[0].fc1.weight.clone()
    with torch.no_grad():
        enc.model.encoder.layer[0].intermediate.dense.weight.add_(1.0)
    torch.testing.assert_close(blocks[0].fc1.weight, before)
    torch.testing.assert_close(before, enc.model.encoder.layer[0].intermediate.dense.weight - 1.0)


def test_unsupported_teacher_and_bad_depth_are_one_line_errors():
    enc = quiet(create_encoder, "tiny-wav2vec2", allow_random=True)
    with pytest.raises(ValueError, match="tiny-wav2vec2.*teacher_layers: 0"):
        copy_teacher_blocks(enc, 1)
    bert = quiet(create_encoder, "tiny-bert", allow_random=True)
    n = teacher_layer_count(bert)
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match=rf"teacher_layers must be in 1\.\.{n}"):
            copy_teacher_blocks(bert, bad)
    with pytest.raises(ValueError, match="teacher_layers must be >= 0"):
        quiet(CMDStudent, text_teacher="tiny-bert", modalities=("text",), teacher_layers=-1)


def test_student_with_teacher_layers_takes_the_teachers_width_and_declares_its_depths():
    torch.manual_seed(0)
    model = quiet(create_model, "cmd_student_text", text_teacher="tiny-bert", teacher_layers=2, num_classes=3)
    bert = quiet(create_encoder, "tiny-bert", allow_random=True)
    d = bert.output_dim
    assert model.config["dim"] == d and model.config["teacher_layers"] == 2
    branch = model.branch("text")
    assert len(branch.self_blocks) == 2 and isinstance(branch.conv, torch.nn.Identity)
    # parameters: the embedding + two copied layers, nothing else in the branch; head F is d -> d -> C
    layer = sum(p.numel() for p in bert.model.encoder.layer[0].parameters())
    emb = sum(p.numel() for p in bert.model.embeddings.parameters())
    assert model.branch_parameters() == {"text": emb + 2 * layer, "head": d * d + d + d * 3 + 3}
    ids = model.encoder_layer_ids()
    assert {v for k, v in ids.items() if ".embedding." in k} == {0}
    assert {v for k, v in ids.items() if ".self_blocks." in k} == {1, 2}
    assert not any(k.startswith("head.") for k in ids)
    assert quiet(create_model, "cmd_student_text", text_teacher="tiny-bert").encoder_layer_ids() == {}
    out = model({"text": bert.preprocess(TEXTS)})
    assert out.hidden["text"].shape[-1] == d and out.logits.shape == (2, 3)
    # the distillation task reads the student's width from the config
    task = DistillationTask(model, teacher_dims={"text": d}, student_dims=int(model.config["dim"]))
    assert task.student_proj["text"].in_features == d
    # a checkpoint restores into the architecture rebuilt from the config
    clone = CMDStudent.from_config(model.config)
    clone.load_state_dict(model.state_dict())
    batch = {"text": bert.preprocess(TEXTS)}
    torch.testing.assert_close(clone.eval()(batch).logits, model.eval()(batch).logits)


@pytest.mark.slow
def test_packaged_teachers_full_depth_students_equal_their_teachers():
    from emofuse.encoders import resolve_encoder

    names = {"audio": "openai/whisper-tiny.en", "text": "all-MiniLM-L6-v2"}
    if not set(names.values()) <= set(list_encoders()) or any(
        resolve_encoder(n, allow_random=True).resolved == "random" for n in names.values()
    ):
        pytest.skip("packaged whisper-tiny.en / MiniLM weights not installed")
    inputs = {"audio": waves(2.0), "text": TEXTS[:1]}
    for m, name in names.items():
        teacher = create_encoder(name)
        depth = teacher_layer_count(teacher)
        student = create_model(f"cmd_student_{m}", **{f"{m}_teacher": name}, teacher_layers=depth, with_head=False)
        batch = teacher.preprocess(inputs[m])
        with torch.no_grad():
            got = student.eval()({m: batch}).hidden[m]
            want = teacher(**batch).hidden
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
