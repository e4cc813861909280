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
