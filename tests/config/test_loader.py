import pytest
from pydantic import BaseModel, ConfigDict, Field

from emofuse.config import ConfigError, ExperimentConfig, dump_config, load_config, register_model_options


def test_defaults_and_yaml_overrides(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("name: iemocap-cmd\nseeds: [0, 1, 2]\noptim:\n  lr: 0.0005\n  scheduler: warmup_linear\n")
    cfg = load_config(p)
    assert cfg.name == "iemocap-cmd" and cfg.seeds == [0, 1, 2]
    assert cfg.optim.lr == 5e-4 and cfg.optim.scheduler == "warmup_linear"
    assert cfg.trainer.max_epochs == ExperimentConfig().trainer.max_epochs  # untouched default


def test_dotted_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(
        None,
        [
            "data.protocol=iemocap-loso",
            "data.protocol_options.seed=3",
            "trainer.devices=2",
            "data.folds=[Session1, Session2]",
            "data.max_batch_samples=640000",
        ],
    )
    assert cfg.data.protocol == "iemocap-loso"
    assert cfg.data.protocol_options == {"seed": 3}
    assert cfg.trainer.devices == 2
    assert cfg.data.folds == ["Session1", "Session2"]
    assert cfg.data.max_batch_samples == 640_000


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.1\n  name: sgd\nseeds: [1]\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.optim.lr == 0.2 and cfg.optim.name == "sgd" and cfg.seeds == [1]


def test_typo_key_in_yaml_names_file_key_and_suggestion(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("optim:\n  learning_rat: 0.1\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "typo.yaml: unknown key 'optim.learning_rat'" in msg
    assert "unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)" in msg


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lr=-1", r"bad value for 'optim.lr'.*greater than 0"),
        ("optim.name=rmsprop", r"bad value for 'optim.name'"),
        ("seeds=[1, 1]", r"seeds must be unique"),
        ("trainer.max_epochs=many", r"bad value for 'trainer.max_epochs'"),
        ("lr", r"must look like section.key=value"),
        ("optim.lr.x=1", r"bad value for 'optim.lr'"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(p)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_model_options_checked_against_registered_schema():
    class TinyOpts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        d_model: int = Field(32, gt=0)

    register_model_options("tiny-test-model", TinyOpts)
    cfg = load_config(None, ["model.name=tiny-test-model", "model.d_model=64"])
    assert cfg.model.options == {"d_model": 64}
    with pytest.raises(ConfigError, match="unknown key 'model.d_modle' \\(did you mean 'model.d_model'\\?\\)"):
        load_config(None, ["model.name=tiny-test-model", "model.d_modle=64"])
    with pytest.raises(ConfigError, match="d_model"):
        load_config(None, ["model.name=tiny-test-model", "model.d_model=0"])
    # unregistered models keep free-form options until their schema is registered
    assert load_config(None, ["model.name=other", "model.anything=1"]).model.options == {"anything": 1}


def test_dump_roundtrip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "model.d_model=8"])
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


STAGED = (
    "trainer: {max_epochs: 50, monitor: val/loss}\n"
    "optim: {lr: 0.001}\n"
    "stages:\n"
    "  - {name: distill, task: distill, model: {with_head: false}, trainer: {max_epochs: 10}, optim: {lr: 0.01}}\n"
    "  - {name: finetune, task: classify, trainer: {max_epochs: 30}}\n"
)


def _epochs(cfg: ExperimentConfig) -> dict[str, int]:
    return {s.name: s.resolve(cfg.optim, cfg.trainer)[1].max_epochs for s in cfg.stages}


def test_stage_override_by_name_reaches_only_that_stage(tmp_path):
    p = tmp_path / "staged.yaml"
    p.write_text(STAGED)
    cfg = load_config(p, ["stages.distill.trainer.max_epochs=1", "stages.finetune.optim.lr=0.5"])
    assert _epochs(cfg) == {"distill": 1, "finetune": 30}
    assert cfg.stages[1].resolve(cfg.optim, cfg.trainer)[0].lr == 0.5
    cfg = load_config(p, ["stages.1.trainer.monitor=val/wa"])  # by index too
    assert cfg.stages[1].trainer["monitor"] == "val/wa"


def test_top_level_trainer_override_is_not_shadowed_by_stage_settings(tmp_path, caplog):
    p = tmp_path / "staged.yaml"
    p.write_text(STAGED)
    cfg = load_config(p, ["trainer.max_epochs=1", "optim.lr=0.2"])
    assert _epochs(cfg) == {"distill": 1, "finetune": 1}
    assert [s.resolve(cfg.optim, cfg.trainer)[0].lr for s in cfg.stages] == [0.2, 0.2]
    assert "also replaces the stages' own trainer.max_epochs (distill: 10, finetune: 30)" in caplog.text
    assert load_config(p).stages[0].trainer == {"max_epochs": 10}  # the file's own values are untouched


def test_shadowed_model_override_and_unknown_stage_are_refused(tmp_path):
    p = tmp_path / "staged.yaml"
    p.write_text(STAGED)
    with pytest.raises(ConfigError, match=r"stages.distill.model.with_head=True"):
        load_config(p, ["model.with_head=true"])
    with pytest.raises(ConfigError, match=r"no stage named 'distil'; the config's stages: distill, finetune"):
        load_config(p, ["stages.distil.trainer.max_epochs=1"])
    with pytest.raises(ConfigError, match=r"no stage named 'train'; the config's stages: none"):
        load_config(None, ["stages.train.trainer.max_epochs=1"])


def test_paper_config_epochs_follow_the_command_line():
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs/cmd/iemocap.yaml"
    assert set(_epochs(load_config(config, ["trainer.max_epochs=1"])).values()) == {1}
    assert _epochs(load_config(config, ["stages.distill.trainer.max_epochs=2"]))["distill"] == 2


def test_base_cycle_and_non_utf8_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(
        ConfigError, match=r"a\.yaml: 'base:' files name each other in a cycle \(.*a\.yaml -> .*b\.yaml"
    ):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: ./self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "odd.yaml").write_text("base: [x]\n")
    with pytest.raises(ConfigError, match=r"odd\.yaml: 'base:' must be the path of another YAML file"):
        load_config(tmp_path / "odd.yaml")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml:1: not UTF-8 text \(byte 0xe9\)"):
        load_config(tmp_path / "latin1.yaml")


def test_bad_stage_setting_names_the_stage_not_the_whole_config(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("description: " + "x" * 300 + "\nstages:\n  - name: ft\n    trainer: {max_epochs: -1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: stage 'ft': max_epochs: Input should be greater than 0"
    with pytest.raises(ConfigError, match=r"bad value for 'name': .* \(got \[.{60,}\.\.\.\)$"):
        load_config(None, ["name=[" + ", ".join(["1"] * 60) + "]"])
