"""`emofuse evaluate RUN --drop M [--drop-mode ...]`: argument checks (the scoring itself: tests/training)."""

from typer.testing import CliRunner

from emofuse.cli.main import app

runner = CliRunner()


def test_drop_options_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--out", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "--manifest is required" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--drop", "video", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a training run folder" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--drop", "video", "--drop-mode", "nan", "--out", "o"])
    assert res.exit_code == 2 and "zero', 'absent', 'knn'" in res.output
    assert "--drop-mode" in runner.invoke(app, ["evaluate", "--help"]).output


def test_knn_is_refused_up_front_for_a_model_that_reads_raw_inputs(tmp_path_factory):
    from emofuse.testing.checkpoints import train_tiny_cmd

    run = train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")  # shared with the predictor tests
    out = tmp_path_factory.mktemp("knn")
    res = runner.invoke(app, ["evaluate", str(run), "--drop", "audio", "--drop-mode", "knn", "--out", str(out)])
    msg = res.output.replace("\n", " ")
    assert res.exit_code == 2 and "Traceback" not in res.output and not (out / "missing.json").exists()
    assert "--drop-mode knn imputes feature vectors, but model 'cmd_student' reads raw audio and text" in msg
    assert "--drop-mode zero or absent" in msg
    res = runner.invoke(app, ["evaluate", str(run), "--drop", "audio", "--drop-mode", "zero", "--out", str(out)])
    assert res.exit_code == 0 and (out / "missing.json").is_file()  # any run scores with modalities zeroed
