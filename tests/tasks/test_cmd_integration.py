"""End to end on tiny teachers: manifest -> teacher cache -> dynamic batches -> Stage 1 -> Stage 2."""

import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from emofuse.data.sampling import DynamicBatchSampler
from emofuse.models import create_model, list_models
from emofuse.pipeline import MultimodalDataset
from emofuse.tasks.classification import ClassificationTask
from emofuse.tasks.distillation import DistillationTask

pytestmark = pytest.mark.skipif("cmd_student" not in list_models(), reason="CMD student not registered")

CLASSES = ("neutral", "happy", "sad", "angry")
TINY = dict(audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert")


def test_cmd_two_stages_on_tiny_teachers(tmp_path):
    from emofuse.encoders import create_encoder
    from emofuse.features import extract_features
    from emofuse.testing.dummies import make_wav_corpus

    torch.manual_seed(0)
    records = make_wav_corpus(tmp_path, 6, seconds=0.5, labels=CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teachers = {
            "audio": create_encoder("tiny-wav2vec2", allow_random=True),
            "text": create_encoder("tiny-bert", allow_random=True),
        }
        student = create_model("cmd_student", with_head=False, **TINY)
    stores = {
        m: extract_features(records, enc, tmp_path / "cache", progress=False, root=tmp_path, dtype="float32")
        for m, enc in teachers.items()
    }
    ds = MultimodalDataset(records, CLASSES, teachers["audio"], teachers["text"], teacher_stores=stores, root=tmp_path)
    assert ds.validate() == {}
    loader = DataLoader(ds, batch_sampler=DynamicBatchSampler(ds.lengths(), max_samples=30_000), collate_fn=ds.collate)

    dims = {m: enc.output_dim for m, enc in teachers.items()}
    task = DistillationTask(student, dims, temperature=0.05, student_dims=32)
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    for batch in loader:
        out = task(batch)
        assert set(out) == {"loss", "loss_audio", "loss_text"} and torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()

    # the cache and the frozen teachers run online give the same Stage-1 loss (frame-for-frame alignment)
    task.eval()
    online = DistillationTask(student, dims, temperature=0.05, teachers=teachers)
    online.load_state_dict(task.state_dict())
    online.eval()
    batch = ds.collate([ds[i] for i in range(4)])
    cached_loss = task(batch)["loss"]
    del batch["teacher"]
    assert online(batch)["loss"].item() == pytest.approx(cached_loss.item(), rel=1e-4)

    # Stage 2 starts from the distilled student; only the classifier is new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finetune = create_model("cmd_student", with_head=True, temperature=0.05, **TINY)
    missing, unexpected = finetune.load_state_dict(task.model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("head.") for k in missing)
    cls = ClassificationTask(finetune)
    out = cls(ds.collate([ds[i] for i in range(4)]))
    assert out["probs"].shape == (4, 4) and out["labels"].tolist() == [0, 1, 2, 3]
    out["loss"].backward()
    assert finetune.head.fc1.weight.grad is not None
