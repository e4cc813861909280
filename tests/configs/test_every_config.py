"""Every config under configs/ builds on this install, or stops with a one-line error that names the fix.

"Builds" means what ``emofuse train`` does before its first step: load the config, build each stage's model
(teachers included) and the encoders whose features it reads, with the feature sizes read from those encoders.
Where weights or files are missing (wav2vec2-base has no packaged stand-in; GloVe is a user file) the error is
one line naming the missing weights and the exact command-line fix (``--set ...`` or ``EMOFUSE_MODELS_DIR``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from emofuse.config import load_config
from emofuse.data.labels import get_scheme
from emofuse.encoders import EncoderError, MissingWeightsError
from emofuse.training.components import DefaultComponents

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("_"))
COMPONENTS = DefaultComponents(progress=False)  # one per module: each encoder is loaded once


def _build(path: Path) -> dict[str, int]:
    """Build every stage's model and the encoders it reads; the feature sizes it was built with."""
    cfg = load_config(path)
    classes = list(get_scheme(cfg.data.labels).classes) if cfg.data.labels else ["a", "b", "c", "d"]
    sizes: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stand-in notes
        for stage in cfg.resolved_stages():
            model = COMPONENTS.model(cfg, stage, classes)
            if cfg.encoders.inputs != "features" and stage.task != "distill":
                continue
            for m, name in COMPONENTS.encoder_names(cfg, model).items():
                dim = int(COMPONENTS.encoder(cfg, m, name).output_dim)
                if cfg.encoders.inputs == "features" and f"{m}_dim" in model.config:
                    assert model.config[f"{m}_dim"] == dim, f"{path}: model.{m}_dim != encoders.{m} ({name}) size"
                sizes[m] = dim
    return sizes


def _skip_unless_bert_is_the_minilm_stand_in() -> None:
    from emofuse.encoders import resolve_encoder

    try:
        packaged = resolve_encoder("bert-base-uncased").packaged
    except MissingWeightsError:
        packaged = None
    if packaged != "minilm-l6":
        pytest.skip("bert-base-uncased does not resolve to the packaged MiniLM stand-in here")


def test_there_are_configs_of_every_family():
    assert len(CONFIGS) > 150
    assert {p.relative_to(ROOT / "configs").parts[0] for p in CONFIGS} >= {"cmd", "mgcma", "cm_roberta", "thesis"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_builds_or_names_the_command_line_fix(path):
    try:
        _build(path)
    except (MissingWeightsError, EncoderError) as e:
        msg = str(e)
        assert "\n" not in msg and "Traceback" not in msg
        assert "--set " in msg or "EMOFUSE_MODELS_DIR" in msg, msg
        if isinstance(e, MissingWeightsError):  # the weights are named, and both fixes given
            assert repr(e.name) in msg and "EMOFUSE_MODELS_DIR=DIR" in msg and "--set " in msg
            assert "allow_random=True" not in msg  # the Python spelling is for the library, not the command line


def test_feature_sizes_are_read_from_the_encoders_not_hard_coded():
    for path in CONFIGS:
        for key, value in load_config(path).model.options.items():
            if key in ("audio_dim", "text_dim"):
                assert value is None, f"{path}: model.{key} is hard-coded to {value}; set it to null"
    _skip_unless_bert_is_the_minilm_stand_in()
    assert _build(ROOT / "configs/cmd/meld/bert.yaml") == {"text": 384}  # bert-base-uncased -> MiniLM stand-in


def test_a_hard_coded_size_that_differs_from_the_encoder_is_a_one_line_error(tmp_path):
    _skip_unless_bert_is_the_minilm_stand_in()
    config = tmp_path / "bert768.yaml"
    config.write_text(f"base: {ROOT / 'configs/cmd/meld/bert.yaml'}\nmodel: {{text_dim: 768}}\n")
    with pytest.raises(ValueError, match=r"model.text_dim is 768, but encoders.text 'bert-base-uncased' gives 384-d"):
        _build(config)


def test_missing_weights_name_the_override_of_the_place_that_builds_them(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOFUSE_MODELS_DIR", str(tmp_path))  # empty: nothing resolves from there
    from emofuse.encoders import resolve_encoder

    try:
        resolve_encoder("facebook/wav2vec2-base")
    except MissingWeightsError:
        pass
    else:
        pytest.skip("facebook/wav2vec2-base weights are in this machine's Hugging Face cache")
    with pytest.raises(MissingWeightsError, match=r"--set model.allow_random=true$"):
        _build(ROOT / "configs/cmd/iemocap/wav2-distill.yaml")  # the CMD student copies the teacher's embeddings
    with pytest.raises(MissingWeightsError, match=r"--set encoders.allow_random=true$"):
        _build(ROOT / "configs/cmd/iemocap/wav2.yaml")  # MulT reads the encoder's cached features


def test_a_config_can_refuse_stand_ins(tmp_path):
    _skip_unless_bert_is_the_minilm_stand_in()
    strict = tmp_path / "strict.yaml"
    strict.write_text(f"base: {ROOT / 'configs/cmd/meld/bert.yaml'}\nencoders: {{allow_stand_in: false}}\n")
    with pytest.raises(ValueError, match=r"'bert-base-uncased' would run as a STAND-IN here \(BertModel L6/H384"):
        _build(strict)
    own = tmp_path / "own.yaml"  # all-MiniLM-L6-v2's packaged weights are that very model: not a stand-in
    own.write_text(
        f"base: {ROOT / 'configs/evidence/synthetic-tri-fusion-intra.yaml'}\nencoders: {{allow_stand_in: false}}\n"
    )
    assert _build(own)["text"] == 384
