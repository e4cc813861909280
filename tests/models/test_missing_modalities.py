"""Missing modalities in the other fusion models: CMD leaves an absent modality out of its probability average."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from emofuse.encoders import create_encoder  # noqa: E402
from emofuse.models import create_model  # noqa: E402
from emofuse.pipeline.missing import drop_modality  # noqa: E402


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.slow
def test_cmd_absent_modality_is_left_out_of_the_probability_average():
    audio = quiet(create_encoder, "tiny-wav2vec2", allow_random=True)
    text = quiet(create_encoder, "tiny-bert", allow_random=True)
    g = torch.Generator().manual_seed(0)
    batch = {
        "audio": audio.preprocess([0.1 * torch.randn(n, generator=g) for n in (16000, 8000)]),
        "text": text.preprocess(["what a day", "no"]),
    }
    torch.manual_seed(0)
    model = quiet(create_model, "cmd_student", audio_teacher="tiny-wav2vec2", text_teacher="tiny-bert").eval()
    kappa = model.temperature
    with torch.no_grad():
        full = model(batch)
        both = torch.stack([(z / kappa).softmax(-1) for z in full.modality_logits.values()]).mean(0)
        assert torch.allclose(full.probs, both, atol=1e-5)
        # audio absent from the first sample only: its probabilities are the text branch's alone
        rows = torch.tensor([True, False])
        out = model(drop_modality(batch, "audio", "absent", rows=rows))
        text_only = (out.modality_logits["text"][0] / kappa).softmax(-1)
        assert torch.allclose(out.probs[0], text_only, atol=1e-5)
        assert torch.allclose(out.probs[1], full.probs[1], atol=1e-5)
        assert torch.allclose(out.probs.sum(-1), torch.ones(2), atol=1e-5)
        # zero mode keeps the (zeroed) audio in the average
        z = model(drop_modality(batch, "audio", "zero"))
        avg = torch.stack([(v / kappa).softmax(-1) for v in z.modality_logits.values()]).mean(0)
        assert torch.allclose(z.probs, avg, atol=1e-5)
        # nothing present: the plain average, never NaN
        none = drop_modality(drop_modality(batch, "audio", "absent"), "text", "absent")
        assert torch.isfinite(model(none).probs).all()
