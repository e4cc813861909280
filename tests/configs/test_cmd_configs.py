"""configs/cmd/: one config per row of CMD's Tables 3 and 4 (Kim & Kang 2022) for IEMOCAP, MELD and CMU-MOSEI.

Every file loads, its header names the table row it reproduces with the paper's macro-F1 (checked against the
numbers below, copied from the paper via specs/cmd.md §6), its settings are the paper's (spec §3.4-3.7, §2.9), and
each distinct architecture builds (once, with tiny random teachers in place of wav2vec2-base / bert-base-uncased).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emofuse.config import load_config
from emofuse.config.schema import ExperimentConfig
from emofuse.data.labels import get_scheme
from emofuse.encoders import get_encoder_spec

ROOT = Path(__file__).resolve().parents[2] / "configs" / "cmd"
DATASETS = {"iemocap": "IEMOCAP", "meld": "MELD", "mosei": "CMU-MOSEI"}
LABELS = {"iemocap": "iemocap4-cmd", "meld": "meld4", "mosei": "mosei4-cmd"}
KAPPA = {"iemocap": 0.05, "meld": 0.05, "mosei": 0.01}  # spec §3.4: selected temperatures

# file -> (table, row as printed, model, text field); the paper's macro-F1 per dataset below
ROWS = {
    "cmd": (3, "wav2 + bert(CMD)", "cmd_student", "text"),
    "mult-mfcc-glove": (3, "mfcc + glove", "mult", "text"),
    "mult-wav2-bert": (3, "wav2 + bert", "mult", "text"),
    "mfcc": (4, "mfcc", "mult_audio", "text"),
    "glove": (4, "glove", "mult_text", "text"),
    "wav2": (4, "wav2", "mult_audio", "text"),
    "bert": (4, "bert", "mult_text", "text"),
    "wav2-distill": (4, "wav2(distill)", "cmd_student_audio", "text"),
    "bert-distill": (4, "bert(distill)", "cmd_student_text", "text"),
    "bert-asr-distill": (4, "bert(asr)+(distill)", "cmd_student_text", "asr_text"),
    "cmd-asr": (4, "wav2 + bert(asr)+(CMD)", "cmd_student", "asr_text"),
    "cmd-late": (None, "late fusion (self -> cross)", "cmd_student_late", "text"),
}
# macro-F1 mean (std) over 10 runs, Tables 3 and 4 (IEMOCAP, MELD, CMU-MOSEI)
MACRO = {
    "cmd": ("0.8267 (0.0027)", "0.8341 (0.0047)", "0.8018 (0.0032)"),
    "mult-mfcc-glove": ("0.7438 (0.0521)", "0.7887 (0.0361)", "0.7315 (0.019)"),
    "mult-wav2-bert": ("0.7959 (0.0111)", "0.8046 (0.0384)", "0.7582 (0.0158)"),
    "mfcc": ("0.6438 (0.0271)", "0.7126 (0.0119)", "0.7166 (0.0154)"),
    "glove": ("0.6517 (0.0298)", "0.7441 (0.0188)", "0.733 (0.0077)"),
    "wav2": ("0.6802 (0.0197)", "0.7135 (0.0084)", "0.7285 (0.0169)"),
    "bert": ("0.7058 (0.0503)", "0.7683 (0.0096)", "0.7409 (0.0071)"),
    "wav2-distill": ("0.779 (0.0029)", "0.7611 (0.0043)", "0.7713 (0.0072)"),
    "bert-distill": ("0.7798 (0.0063)", "0.8283 (0.0025)", "0.7776 (0.0053)"),
    "bert-asr-distill": ("0.7563 (0.0066)", "0.7458 (0.0106)", "0.7675 (0.0111)"),
    "cmd-asr": ("0.8065 (0.0059)", "0.774 (0.0067)", "0.8014 (0.0048)"),
}
MULT_INPUTS = {  # file -> (audio encoder, audio dim), (text encoder, text dim)
    "mult-mfcc-glove": (("mfcc", 80), ("glove", 300)),
    "mult-wav2-bert": (("facebook/wav2vec2-base", 768), ("bert-base-uncased", 768)),
    "mfcc": (("mfcc", 80), None),
    "glove": (None, ("glove", 300)),
    "wav2": (("facebook/wav2vec2-base", 768), None),
    "bert": (None, ("bert-base-uncased", 768)),
}
CASES = [(ds, row) for ds in DATASETS for row in ROWS]
_HEADER = re.compile(r"^# reproduces: (Table (\d)|Fig\. A\.8) \| ([A-Z-]+) \| (.+?) \| (.+)$", re.M)


def _load(ds: str, row: str) -> tuple[ExperimentConfig, str]:
    path = ROOT / ds / f"{row}.yaml"
    return load_config(path), path.read_text(encoding="utf-8")


def test_one_config_per_row_and_nothing_else():
    for ds in DATASETS:
        assert sorted(p.stem for p in (ROOT / ds).glob("*.yaml")) == sorted(ROWS)
    assert sorted(p.name for p in ROOT.glob("*.yaml")) == ["iemocap.yaml", "meld.yaml", "mosei.yaml"]


@pytest.mark.parametrize(("ds", "row"), CASES)
def test_header_names_the_table_row_and_the_paper_number(ds, row):
    cfg, text = _load(ds, row)
    table, label, _, _ = ROWS[row]
    assert text.startswith("# CMD reproduction")
    m = _HEADER.search(text)
    assert m is not None, f"{ds}/{row}.yaml has no '# reproduces:' line"
    assert m.group(3) == DATASETS[ds] and m.group(4) == label
    if table is None:
        assert m.group(1) == "Fig. A.8" and "no numbers" in m.group(5)
    else:
        expected = MACRO[row][list(DATASETS).index(ds)]
        assert int(m.group(2)) == table and m.group(5) == f"macro-F1 {expected}"
        assert "paper per-class F1" in text and expected in cfg.description
    assert cfg.name == f"cmd-{ds}-{row}"


@pytest.mark.parametrize(("ds", "row"), CASES)
def test_settings_are_the_papers(ds, row):
    cfg, text_of_file = _load(ds, row)
    _, _, model, field = ROWS[row]
    assert cfg.model.name == model and cfg.seeds == list(range(10))  # 10 runs per row (§3.6)
    assert cfg.data.labels == LABELS[ds] and get_scheme(cfg.data.labels).classes == ("neutral", "happy", "sad", "angry")
    if ds == "iemocap":  # random stratified 60/20/20, one fixed split (A9)
        assert cfg.data.protocol == "random-stratified"
        assert cfg.data.protocol_options == {"ratios": [0.6, 0.2, 0.2], "seed": 0}
    else:
        assert cfg.data.protocol == "official"
    assert cfg.data.text_field == field
    assert str(cfg.data.manifest).startswith(f"data/{ds}/manifest")
    assert ("asr" in str(cfg.data.manifest)) == (field == "asr_text")
    if model.startswith("cmd_student"):
        opts = cfg.model.options
        assert cfg.data.max_batch_samples == 1_280_000 and cfg.encoders.inputs == "raw"
        assert opts["temperature"] == KAPPA[ds] and opts["allow_random"] is False
        assert (opts["dim"], opts["num_heads"], opts["ffn_dim"], opts["num_self"]) == (32, 2, 128, 3)
        if model in ("cmd_student", "cmd_student_late"):
            assert opts["num_cross"] == 3
        if model != "cmd_student_text":
            assert opts["audio_teacher"] == "facebook/wav2vec2-base"
        if model != "cmd_student_audio":
            assert opts["text_teacher"] == "bert-base-uncased"
        distill, finetune = cfg.resolved_stages()
        assert (distill.task, finetune.task, finetune.init) == ("distill", "classify", "previous")
        assert distill.model == {"with_head": False} and distill.task_options["temperature"] == KAPPA[ds]
        assert distill.task_options["time_axis"] == "per_step"
        for stage in (distill, finetune):
            optim, trainer = stage.resolve(cfg.optim, cfg.trainer)
            assert (optim.name, optim.lr, optim.scheduler, optim.warmup_epochs) == ("adam", 1e-4, "warmup_linear", 10)
            assert trainer.max_epochs == 50 and trainer.monitor == "val/loss"  # keep the lowest validation loss
    else:
        audio, text = MULT_INPUTS[row]
        assert cfg.encoders.inputs == "features" and cfg.data.max_batch_samples is None
        assert cfg.encoders.audio == (audio[0] if audio else None)
        assert cfg.encoders.text == (text[0] if text else None)
        opts = cfg.model.options
        for m, enc in (("audio", audio), ("text", text)):  # sizes come from the encoders; the header names the paper's
            assert (f"{m}_dim" in opts and opts[f"{m}_dim"] is None) == (enc is not None)
            if enc is not None:
                assert f"{m}_dim: null  # read from encoders.{m} (the paper's: {enc[1]})" in text_of_file
        assert (opts["dim"], opts["num_heads"], opts["num_layers"]) == (30, 5, 5)  # MulT repo defaults (A22)
        if text and text[0] == "glove":
            assert str(cfg.encoders.text_options["path"]).endswith("glove.840B.300d.txt")
        (stage,) = cfg.resolved_stages()
        assert stage.task == "classify"
    for name in {cfg.encoders.audio, cfg.encoders.text, cfg.model.options.get("audio_teacher")} - {None}:
        get_encoder_spec(name)  # every encoder the config names is registered


def test_dataset_shortcuts_are_the_cmd_rows():
    for ds in DATASETS:
        top = load_config(ROOT / f"{ds}.yaml")
        row, _ = _load(ds, "cmd")
        assert top.model_dump() == row.model_dump()
        assert "# reproduces: Table 3 | " + DATASETS[ds] in (ROOT / f"{ds}.yaml").read_text(encoding="utf-8")


def _tiny(cfg: ExperimentConfig, glove: Path) -> ExperimentConfig:
    """The same config with tiny random teachers and a tiny GloVe file (the real ones are checked by name above)."""
    over = {"audio_teacher": "tiny-wav2vec2", "text_teacher": "tiny-bert", "allow_random": True}
    opts = {k: over.get(k, v) for k, v in cfg.model.options.items()}
    tiny = {"facebook/wav2vec2-base": "tiny-wav2vec2", "bert-base-uncased": "tiny-bert"}
    enc = cfg.encoders.model_copy(
        update={
            "audio": tiny.get(cfg.encoders.audio or "", cfg.encoders.audio),
            "text": tiny.get(cfg.encoders.text or "", cfg.encoders.text),
        }
    )
    if cfg.encoders.text == "glove":
        enc.text_options = {"path": str(glove)}
    model = cfg.model.model_validate({"name": cfg.model.name, **opts})
    return cfg.model_copy(update={"model": model, "encoders": enc})


@pytest.mark.slow
def test_every_architecture_builds(tmp_path):
    import torch

    from emofuse.training.components import DefaultComponents

    comps = DefaultComponents(progress=False)
    built: dict[tuple, tuple[str, ...]] = {}
    batch = {"features": {}}
    for ds, row in CASES:
        cfg, _ = _load(ds, row)
        key = (
            cfg.model.name,
            cfg.encoders.audio,
            cfg.encoders.text,
            tuple(sorted((k, str(v)) for k, v in cfg.model.options.items() if k != "temperature")),
        )
        if key in built:
            continue
        glove = tmp_path / "glove.txt"
        glove.write_text("hello 0.1 0.2 0.3\nworld 0.4 0.5 0.6\n")
        tiny = _tiny(cfg, glove)
        classes = get_scheme(cfg.data.labels).classes
        for stage in tiny.resolved_stages():
            model = comps.model(tiny, stage, classes)
            assert model.model_name == cfg.model.name
            built[key] = tuple(model.modalities)
            if cfg.model.name.startswith("mult"):  # frozen features of the configured sizes go through
                for m in model.modalities:
                    dim = model.config[f"{m}_dim"]  # read from the encoder
                    batch["features"][m] = torch.randn(2, 5, dim)
                out = model.eval()(batch)
                assert out.logits is not None and out.logits.shape == (2, 4)
            else:
                assert (model.head is None) == (stage.name == "distill")
    assert len(built) == 10  # 4 CMD students (early, late, audio, text); mult x 2 inputs; mult_audio x 2; mult_text x 2
