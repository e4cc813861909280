"""``emofuse models``: every registered model with total and per-branch parameter counts."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typer.testing import CliRunner  # noqa: E402

from emofuse.cli.main import app  # noqa: E402
from emofuse.models import list_models  # noqa: E402

runner = CliRunner()


def test_models_json_lists_every_model_with_paper_counts():
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert set(rows) == set(list_models())
    for row in rows.values():
        assert "error" not in row, row
        assert row["total"] == sum(row["branches"].values())
    cmd = rows["cmd_student"]
    assert cmd["branches"] == {"audio": 4_696_256, "text": 23_937_984, "head": 1_188}
    assert cmd["built_on"] == "meta"
    # unimodal students: embedding + conv + 3 self-attention blocks (no cross-attention)
    assert rows["cmd_student_audio"]["branches"] == {"audio": 4_595_456 + 24_576 + 3 * 12_704, "head": 1_188}
    assert rows["cmd_student_text"]["branches"] == {"text": 23_837_184 + 24_576 + 3 * 12_704, "head": 1_188}
    assert set(rows["mult"]["branches"]) == {"audio", "text", "head"}
    # declared capabilities and what each family serves / exports
    assert rows["cmd_student"]["capabilities"]["input_kind"] == "raw" and rows["cmd_student"]["export"] == "yes"
    assert rows["mult"]["capabilities"]["input_kind"] == "features"
    assert rows["mult"]["export"] == "yes: encoder features in"
    assert rows["cm_roberta"]["export"].startswith("no: ") and rows["mgcma"]["export"].startswith("no: ")
    assert rows["cm_roberta"]["capabilities"]["level"] == "dialogue"
    assert rows["conflictnet"]["capabilities"]["target"] == "regression"
    assert rows["tri_fusion_cross"]["predict"].startswith("no: reads video")
    assert all(row["export"].startswith(("yes", "no: ")) for row in rows.values())


def test_models_filter_and_table():
    r = runner.invoke(app, ["models", "--filter", "mult", "--json"])
    assert r.exit_code == 0, r.output
    assert [row["name"] for row in json.loads(r.output)] == ["mult", "mult_audio", "mult_text"]
    r = runner.invoke(app, ["models", "--filter", "cmd_student_text"])
    assert r.exit_code == 0 and "cmd_student_text" in r.output and "23,901,060" in r.output
    r = runner.invoke(app, ["models", "--filter", "nothing-like-this"])
    assert r.exit_code == 0 and "no registered model" in r.output
