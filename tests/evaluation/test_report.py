"""`write_report` on real run folders: a tiny CMD student (2 seeds, analysed) and a text-only student (2 seeds)."""

import base64
import io
import json
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from emofuse.data.manifest import write_manifest
from emofuse.evaluation.report import REPORT_FILES, SECTIONS, write_report
from emofuse.evaluation.report_data import ReportError
from emofuse.metrics import format_mean_std
from emofuse.models import list_models

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("cmd_student" not in list_models(), reason="CMD student not registered"),
]

CLASSES = ("neutral", "happy", "sad", "angry")

BASE = """
seeds: [0, 1]
data:
  manifest: {manifest}
  protocol: random-stratified
  max_batch_samples: 40000
encoders:
  allow_random: true
  cache_dir: {cache}
optim: {{lr: 0.001, scheduler: warmup_linear, warmup_epochs: 1, decay: 0.9}}
trainer: {{max_epochs: 2, accelerator: cpu, devices: 1}}
"""
CMD = """
name: tiny-cmd
model: {name: cmd_student, audio_teacher: tiny-wav2vec2, text_teacher: tiny-bert, temperature: 0.05}
"""  # fine-tuned without the distillation stage (two-stage curves: tests/cli/test_report.py), to keep this fast
TEXT = """
name: tiny-text
model: {name: cmd_student_text, audio_teacher: tiny-wav2vec2, text_teacher: tiny-bert, temperature: 0.05}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from typer.testing import CliRunner

    from emofuse.cli.main import app
    from emofuse.config import load_config
    from emofuse.testing.dummies import make_wav_corpus
    from emofuse.training import run_experiment

    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "corpus"
    write_manifest(make_wav_corpus(root, 16, seconds=0.3, labels=CLASSES), root / "manifest.jsonl")
    base = BASE.format(manifest=root / "manifest.jsonl", cache=tmp / "cache")
    out = {}
    for key, extra in (("cmd", CMD), ("text", TEXT)):
        cfg_file = tmp / f"{key}.yaml"
        cfg_file.write_text(base + extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_experiment(load_config(cfg_file), tmp / key, progress=False)
        out[key] = tmp / key
    res = CliRunner().invoke(app, ["analyze", str(out["cmd"]), "--out", str(out["cmd"] / "analysis"), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


class _Page(HTMLParser):
    """Headings, images, links, scripts and table cells of a page."""

    def __init__(self):
        super().__init__()
        self.h2, self.imgs, self.refs, self.tags, self.cells = [], [], [], set(), []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self._tag = tag
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.refs.append(a[key])
        if tag in ("td", "h2"):
            (self.cells if tag == "td" else self.h2).append("")

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.h2[-1] += data
        elif self._tag == "td":
            self.cells[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _seed_metrics(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("*/seed*/metrics.json"))]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_out") / "report"
    paths = write_report([runs["cmd"], runs["text"]], out, title="CMD <vs> text-only & co")
    return paths, runs


def test_html_has_every_section_and_inline_pngs(report):
    paths, _ = report
    assert set(paths) == {"markdown", "html"} and paths["html"].name == "report.html"
    page = _parse(paths["html"])
    assert page.h2 == [h for _, h in SECTIONS]
    # confusion, per-class F1, box plot and one curves figure per run folder
    assert len(page.imgs) == 5
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        w, h = _png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert w > 100 and h > 100
    assert all(r.startswith("#") for r in page.refs)  # only in-page anchors: nothing external
    assert not page.tags & {"script", "link", "iframe"}
    html = paths["html"].read_text()
    assert "CMD &lt;vs&gt; text-only &amp; co" in html and "<vs>" not in html


def test_markdown_rows_match_the_runs(report):
    paths, runs = report
    md = paths["markdown"].read_text()
    for name, run in (("tiny-cmd", runs["cmd"]), ("tiny-text", runs["text"])):
        ms = _seed_metrics(run)
        assert len(ms) == 2
        cells = [format_mean_std(np.mean(v), np.std(v, ddof=1), 4) for v in ([m[k] for m in ms] for k in ("wa", "ua"))]
        f1 = [[m[k] for m in ms] for k in ("weighted_f1", "macro_f1")]
        cells += [format_mean_std(np.mean(v), np.std(v, ddof=1), 4) for v in f1]
        assert f"| {name} | " + " | ".join(cells) + " |" in md
        mult = [
            format_mean_std(*(lambda v: (np.mean(v), np.std(v, ddof=1)))([m["mult_f1"]["per_class"][c] for m in ms]), 4)
            for c in sorted(CLASSES)
        ]
        assert f"| {name} | " + " | ".join(mult) in md
        # confusion counts: the sum over both seeds, in the report's class order
        labels = ms[0]["labels"]
        cm = sum(np.asarray(m["confusion"]) for m in ms)
        assert int(cm.sum()) == sum(
            len((p.parent / "predictions.jsonl").read_text().splitlines()) for p in run.glob("*/seed*/metrics.json")
        )
        row = f"| {labels[0]} | " + " | ".join(str(int(v)) for v in cm[0])
        assert row in md
    assert "| Experiment | Angry | Happy | Neutral | Sad | Macro-F1 |" in md
    for f in ("confusion", "per_class_f1", "macro_f1_box", "curves_1", "curves_2"):
        assert f"]({REPORT_FILES[2]}/{f}.png)" in md
        assert (paths["markdown"].parent / REPORT_FILES[2] / f"{f}.png").is_file()


def test_random_weights_flagged_and_provenance_listed(report):
    paths, _ = report
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert html.count('<div class="warning">WARNING: ') == 2  # both runs used random tiny teachers
    assert "RANDOM encoder weights ran for" in md and "tiny-wav2vec2" in md
    cells = _parse(paths["html"]).cells
    assert "8412d987439b1c5f" in " ".join(cells) or "tiny-wav2vec2" in cells


def test_cmd_analyses_are_included(report):
    paths, runs = report
    dom = json.loads((runs["cmd"] / "analysis" / "dominance.json").read_text())
    tok = json.loads((runs["cmd"] / "analysis" / "token_importance.json").read_text())
    cells = _parse(paths["html"]).cells
    share = f"{100 * dom['summary']['share']['audio']:.1f}%"
    assert share in cells and "Audio" in cells and "Text" in cells
    html = paths["html"].read_text()
    first = tok["items"][0]
    assert first["id"] in html and 'class="tok"' in html
    assert html.count('class="utt"') == min(len(tok["items"]), 3 * len(CLASSES))
    md = paths["markdown"].read_text()
    assert "| tiny-cmd | Audio | " + share in md


def test_existing_report_is_not_overwritten(report, tmp_path):
    paths, runs = report
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    write_report([runs["text"]], out)
    before = (out / "report.md").read_text()
    with pytest.raises(FileExistsError, match="already holds a report.*--overwrite"):
        write_report([runs["cmd"]], out)
    assert (out / "report.md").read_text() == before
    write_report([runs["cmd"]], out, overwrite=True)
    assert "tiny-cmd" in (out / "report.md").read_text() and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / REPORT_FILES[2]).iterdir()) == [
        "confusion.png",
        "curves_1.png",
        "macro_f1_box.png",
        "per_class_f1.png",
    ]


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.ckpt", "logs"))
    return dest


def test_text_is_escaped(runs, tmp_path):
    run = _copy(runs["text"], tmp_path / "evil")
    doc = json.loads((run / "results.json").read_text())
    doc["name"] = "<script>alert(1)</script>"
    doc["description"] = "a | b & <i>c</i>"
    (run / "results.json").write_text(json.dumps(doc))
    paths = write_report([run], tmp_path / "out")
    html = paths["html"].read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<i>c</i>" not in html
    md = paths["markdown"].read_text()
    assert "a \\| b & \\<i\\>c\\</i\\>" in md


def test_bad_run_folders(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="is not an emofuse run folder"):
        write_report([tmp_path / "empty"], tmp_path / "o")
    with pytest.raises(ReportError, match="run folder not found"):
        write_report([tmp_path / "missing"], tmp_path / "o")
    unfinished = _copy(runs["text"], tmp_path / "unfinished")
    (unfinished / "results.json").unlink()
    with pytest.raises(ReportError, match=r"has no results yet \(no results.json; 2 of 2 started run"):
        write_report([unfinished], tmp_path / "o")
    other = _copy(runs["text"], tmp_path / "other")
    results = other / "results.json"
    results.write_text(results.read_text().replace('"angry"', '"frustrated"'))  # a 4-class run over another set
    with pytest.raises(ReportError, match=r"different label sets: .*'angry'.*\['frustrated', 'happy'"):
        write_report([runs["cmd"], other], tmp_path / "o")
    with pytest.raises(ReportError, match="given twice"):
        write_report([runs["cmd"], runs["cmd"]], tmp_path / "o")
    assert not (tmp_path / "o").exists()  # bad input writes nothing


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def test_page_renders_in_headless_chromium(report, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("headless Chromium not installed (/usr/bin/chromium or 'chromium' on PATH)")
    paths, _ = report
    shot = tmp_path / "shot.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        paths["html"].resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(shot.read_bytes()))[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1200)
    gray = pixels.mean(-1)
    assert gray.std() > 0.05 and (gray < 0.5).mean() > 0.005  # not blank: text, tables and figures drawn
