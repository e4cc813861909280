"""``data.text_field`` (ASR transcripts as the text input) and ``encoders.{audio,text}_options``."""

import pytest
import torch

from emofuse.config import load_config
from emofuse.data.manifest import Utterance, write_manifest
from emofuse.training.components import DefaultComponents
from emofuse.training.rundir import select_text


def _recs() -> list[Utterance]:
    return [
        Utterance(id="a", text="happy day", label="happy", extra={"asr_text": "sad day"}),
        Utterance(id="b", text="sad night", label="sad", extra={"asr_text": "happy"}),
    ]


def test_select_text_reads_the_asr_field_and_names_missing_records():
    recs = _recs()
    assert select_text(recs, "text") == recs
    asr = select_text(recs, "asr_text", "m.jsonl")
    assert [r.text for r in asr] == ["sad day", "happy"] and [r.label for r in asr] == ["happy", "sad"]
    assert recs[0].text == "happy day"  # the originals are untouched
    assert [r.text for r in select_text(recs, "label")] == ["happy", "sad"]  # a record field works too
    broken = [*recs, Utterance(id="c", text="x", label="sad")]
    with pytest.raises(ValueError, match=r"m.jsonl: data.text_field='asr_text'.*1 record.*: c.*emofuse transcribe"):
        select_text(broken, "asr_text", "m.jsonl")


def test_text_field_and_encoder_options_reach_the_feature_cache(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("happy 1 0 0\nsad 0 1 0\nday 0 0 1\nnight 1 1 1\n")
    manifest = tmp_path / "m.jsonl"
    write_manifest(_recs(), manifest)
    over = [f"data.manifest={manifest}", "encoders.text=glove", f"encoders.text_options={{path: {glove}}}"]
    comps = {}
    for field in ("text", "asr_text"):
        cfg = load_config(None, [*over, f"data.text_field={field}"])
        assert cfg.data.text_field == field and cfg.encoders.text_options == {"path": str(glove)}
        c = DefaultComponents(progress=False)
        enc = c.encoder(cfg, "text", "glove")  # built with path= from encoders.text_options
        assert enc.output_dim == 3
        store = c.store(cfg, enc, select_text(_recs(), field))
        comps[field] = store
    gold, asr = comps["text"], comps["asr_text"]
    assert "text-asr_text" in str(asr.path) and "text-asr_text" not in str(gold.path)  # never mixed
    torch.testing.assert_close(gold.get("a"), torch.tensor([[1.0, 0, 0], [0, 0, 1]]))  # "happy day"
    torch.testing.assert_close(asr.get("a"), torch.tensor([[0.0, 1, 0], [0, 0, 1]]))  # "sad day"
    torch.testing.assert_close(asr.get("b"), torch.tensor([[1.0, 0, 0]]))  # "happy"


def test_missing_manifest_error_names_the_key_and_the_fix(tmp_path):
    from emofuse.training import run_experiment

    cfg = load_config(None, [f"data.manifest={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(
        FileNotFoundError, match=r"data.manifest: manifest not found: .*nope.jsonl.*--set data\.manifest"
    ):
        run_experiment(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
