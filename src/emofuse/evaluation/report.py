"""``emofuse report``: one or many run folders as a Markdown file and one self-contained HTML page.

:func:`write_report` reads each ``RUN_DIR`` written by ``emofuse train`` (:mod:`emofuse.evaluation.report_data`)
and writes into ``out_dir``:

* ``report.html``: a single page with every figure inline (base64 PNG), no external resources, all text escaped;
* ``report.md``: the same tables, with the figures as files in ``report_figures/``.

Sections (:data:`SECTIONS`, in this order): the runs compared; the paper-style results (the CMD tables, spec
``cmd.md`` §6, as in ``results.md``: MulT per-class F1 and its macro average, then WA / UA / weighted F1 /
macro F1, each as mean (std, ``ddof = 1``) over folds × seeds, one row per run folder, and per fold when there
are several);
confusion matrices summed over runs (row-normalised view); per-class F1 bars; box plots of the test macro F1
over seeds / folds (Fig. 6/7); training curves; encoder provenance (RANDOM and stand-in weights flagged at the
top of the page too); and, for CMD runs analysed with ``emofuse analyze RUN_DIR --out RUN_DIR/analysis``,
the modality-dominance table (Table 6) and token-importance highlights (Table 7).

Overwriting: ``out_dir`` may exist and hold other files (they are left alone), but a report already in it
(``report.md``, ``report.html`` or ``report_figures/``) is only replaced with ``overwrite=True``.

Example:
    >>> from emofuse.evaluation.report import write_report
    >>> paths = write_report(["runs/cmd", "runs/text-only"], "reports/cmd")  # doctest: +SKIP
    >>> paths["html"]  # doctest: +SKIP
    PosixPath('reports/cmd/report.html')
"""

from __future__ import annotations

import base64
import html
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emofuse
from emofuse.evaluation.analysis import _CSS as _TOKEN_CSS
from emofuse.evaluation.analysis import _span, dominance_table_markdown
from emofuse.evaluation.report_data import ExperimentRuns, ReportError, load_experiments
from emofuse.evaluation.report_plots import confusion_figure, curves_figure, metric_boxplot, per_class_f1_figure
from emofuse.metrics import aggregate
from emofuse.metrics.tables import F1Table, encoder_flags, markdown_table, mean_std_cell, per_class_f1_tables
from emofuse.utils.io import atomic_write

__all__ = ["REPORT_FILES", "SECTIONS", "ReportError", "render_report", "write_report"]

#: ``(anchor, heading)`` of every section, in page order.
SECTIONS = (
    ("runs", "Runs"),
    ("results", "Results"),
    ("confusion", "Confusion matrices"),
    ("per-class-f1", "Per-class F1"),
    ("macro-f1", "Macro F1 over seeds and folds"),
    ("curves", "Training curves"),
    ("provenance", "Encoder provenance"),
    ("dominance", "Modality dominance"),
    ("tokens", "Token importance"),
)
#: What a report writes into ``out_dir`` (refused when present unless ``overwrite``).
REPORT_FILES = ("report.md", "report.html", "report_figures")

_DIGITS = 4
_OVERALL = (("WA", "wa"), ("UA", "ua"), ("Weighted F1", "weighted_f1"), ("Macro F1", "macro_f1"))
_TOKENS_PER_CLASS = 3


@dataclass
class _Figure:
    key: str  # file stem in report_figures/
    caption: str
    png: bytes


def _md(text: Any) -> str:
    """Text for a Markdown table cell or line: Markdown / HTML special characters escaped, one line."""
    s = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        s = s.replace(ch, "\\" + ch)
    return s


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], raw: bool = False) -> str:
    """An HTML table (cells escaped unless ``raw``: then they are trusted HTML fragments)."""
    cell = (lambda v: v) if raw else _h
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dominance_rows(summary: Mapping[str, Any], data: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of :func:`~emofuse.evaluation.analysis.dominance_table_markdown` (Table 6) for ``data``."""
    placeholder = "DATA"  # the table's own cells hold no "|"; the name goes in after the split
    lines = [ln.strip() for ln in dominance_table_markdown(summary, placeholder).splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return cells[0], [[data if c == placeholder else c for c in row] for row in cells[2:]]


# -------------------------------------------------------------------------------------------- content


def _warnings(exps: Sequence[ExperimentRuns]) -> list[str]:
    out = []
    for exp in exps:
        random = [f"{k} ({p.get('name')})" for k, p in sorted(exp.encoders.items()) if p.get("resolved") == "random"]
        stand = [f"{k} ({p.get('name')})" for k, p in sorted(exp.encoders.items()) if p.get("stand_in")]
        if random:
            out.append(
                f"{exp.name}: RANDOM encoder weights ran for {', '.join(random)} — its numbers say nothing about "
                "the method (test configuration or missing weights)"
            )
        if stand:
            out.append(f"{exp.name}: STAND-IN weights for {', '.join(stand)} — not comparable to the paper")
        if exp.provenance_mismatch:
            out.append(
                f"{exp.name}: encoder weights differ between its runs ({', '.join(exp.provenance_mismatch)}; "
                "see env.json)"
            )
    return out


def _runs_rows(exps: Sequence[ExperimentRuns]) -> tuple[list[str], list[list[str]]]:
    header = ["Experiment", "Run folder", "Protocol", "Folds", "Seeds", "Runs", "Description"]
    rows = []
    for exp in exps:
        folds = sorted({r.fold for r in exp.runs})
        seeds = sorted({r.seed for r in exp.runs})
        rows.append(
            [
                exp.name,
                str(exp.dir),
                str(exp.doc.get("protocol", "–")),
                ", ".join(folds),
                ", ".join(map(str, seeds)),
                str(len(exp.runs)),
                str(exp.doc.get("description") or ""),
            ]
        )
    return header, rows


def _agg(exp: ExperimentRuns) -> Mapping[str, Any]:
    agg = exp.doc.get("aggregate")
    return agg if isinstance(agg, Mapping) and agg else aggregate([r.metrics for r in exp.runs])


def _f1_tables(exps: Sequence[ExperimentRuns]) -> list[F1Table]:
    """The labelled per-class F1 tables: standard always, MulT's where any experiment's paper uses it."""
    wanted = {c for exp in exps for c in (exp.doc.get("f1_conventions") or ("standard", "mult"))}
    return per_class_f1_tables([c for c in ("standard", "mult") if c in wanted])


def _per_class_rows(exps: Sequence[ExperimentRuns], table: F1Table) -> tuple[list[str], list[list[str]]]:
    classes = exps[0].classes
    header = ["Experiment", *[c.capitalize() for c in classes], "Macro-F1"]
    return header, [[exp.name, *table.row(_agg(exp), classes, _DIGITS)] for exp in exps]


def _overall_rows(exps: Sequence[ExperimentRuns]) -> tuple[list[str], list[list[str]]]:
    header = ["Experiment", *[h for h, _ in _OVERALL]]
    rows = [[exp.name, *[mean_std_cell(_agg(exp), k, digits=_DIGITS) for _, k in _OVERALL]] for exp in exps]
    return header, rows


def _fold_rows(exps: Sequence[ExperimentRuns]) -> tuple[list[str], list[list[str]]] | None:
    if all(len({r.fold for r in exp.runs}) < 2 for exp in exps):
        return None
    header = ["Experiment", "Fold", "Runs", "MulT Macro-F1", "WA", "UA", "Macro F1"]
    keys = (("mult_f1", "macro"), ("wa",), ("ua",), ("macro_f1",))
    rows = []
    for exp in exps:
        for fold in sorted({r.fold for r in exp.runs}):
            runs = [r.metrics for r in exp.runs if r.fold == fold]
            fagg = aggregate(runs)
            rows.append([exp.name, fold, str(len(runs)), *[mean_std_cell(fagg, *k, digits=_DIGITS) for k in keys]])
    return header, rows


def _confusion_rows(exp: ExperimentRuns) -> tuple[list[str], list[list[str]]]:
    cm = exp.confusion()
    header = ["true \\ predicted", *exp.classes, "recall"]
    rows = []
    for i, c in enumerate(exp.classes):
        total = int(cm[i].sum())
        recall = f"{cm[i, i] / total:.3f}" if total else "–"
        rows.append([c, *[str(int(v)) for v in cm[i]], recall])
    return header, rows


def _provenance_rows(exps: Sequence[ExperimentRuns]) -> tuple[list[str], list[list[str]]]:
    header = ["Experiment", "Encoder", "Requested", "Ran (resolved)", "Source", "Architecture", "Fingerprint", "Flags"]
    rows = []
    for exp in exps:
        if not exp.encoders:
            rows.append([exp.name, "–", "–", "–", "no encoder provenance recorded", "", "", ""])
        for key, prov in sorted(exp.encoders.items()):
            flags = encoder_flags(prov)
            if key in exp.provenance_mismatch:
                flags.append("weights differ between runs")
            rows.append(
                [
                    exp.name,
                    key,
                    str(prov.get("name", "")),
                    str(prov.get("resolved", "")),
                    str(prov.get("source", "")),
                    str(prov.get("architecture", "")),
                    str(prov.get("fingerprint", "")),
                    "; ".join(flags) or "ok",
                ]
            )
    return header, rows


def _env_rows(exps: Sequence[ExperimentRuns]) -> tuple[list[str], list[list[str]]]:
    header = ["Experiment", "emofuse", "torch", "lightning", "Accelerator", "Platform"]
    rows = []
    for exp in exps:
        env = next((r.env for r in exp.runs if r.env), None) or {}
        versions, devices = env.get("versions") or {}, env.get("devices") or {}
        rows.append(
            [
                exp.name,
                str(versions.get("emofuse", "–")),
                str(versions.get("torch", "–")),
                str(versions.get("lightning", "–")),
                f"{devices.get('accelerator', '–')} × {devices.get('devices', '–')}",
                str(env.get("platform", "–")),
            ]
        )
    return header, rows


def _token_items(tokens: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = [it for it in tokens.get("items") or [] if isinstance(it, Mapping)]
    by_label: dict[str, list[Mapping[str, Any]]] = {}
    for it in items:
        by_label.setdefault(str(it.get("label")), []).append(it)
    return [it for group in by_label.values() for it in group[:_TOKENS_PER_CLASS]]


def _analysis_source(exp: ExperimentRuns, where: str, doc: Mapping[str, Any]) -> str:
    run = f"{doc.get('fold')}/seed{doc.get('seed')}" if doc.get("fold") is not None else "checkpoint"
    return (
        f"{exp.name} — {where}: {doc.get('model', '?')} ({run}), {doc.get('n_utterances', '?')} utterances "
        f"of split {doc.get('split', '?')}"
    )


# -------------------------------------------------------------------------------------------- figures


def _figures(exps: Sequence[ExperimentRuns]) -> dict[str, list[_Figure]]:
    figs: dict[str, list[_Figure]] = {
        "confusion": [
            _Figure(
                "confusion",
                "Confusion matrices summed over folds × seeds (colour: row-normalised)",
                confusion_figure(exps),
            )
        ],
        "per-class-f1": [
            _Figure("per_class_f1", "Per-class F1 (standard), mean ± std over runs", per_class_f1_figure(exps))
        ],
        "macro-f1": [_Figure("macro_f1_box", "Test macro F1 over seeds and folds", metric_boxplot(exps))],
        "curves": [],
    }
    for i, exp in enumerate(exps, 1):
        png = curves_figure(exp)
        if png is not None:
            figs["curves"].append(_Figure(f"curves_{i}", f"Training curves: {exp.name}", png))
    return figs


# -------------------------------------------------------------------------------------------- Markdown


def _md_tables(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return markdown_table([_md(h) for h in header], [[_md(c) for c in r] for r in rows])


def _render_markdown(exps: Sequence[ExperimentRuns], title: str, figs: Mapping[str, list[_Figure]], figdir: str) -> str:
    out = [
        f"# {_md(title)}",
        "",
        f"Generated by emofuse {emofuse.__version__} on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    for w in _warnings(exps):
        out += [f"> **WARNING** {_md(w)}", ""]

    def images(key: str) -> list[str]:
        return [f"![{_md(f.caption)}]({figdir}/{f.key}.png)" for f in figs.get(key, [])] + [""]

    for anchor, heading in SECTIONS:
        out += [f"## {heading}", ""]
        if anchor == "runs":
            out += _md_tables(*_runs_rows(exps)) + [""]
        elif anchor == "results":
            out += ["Mean (std) over every fold × seed run, ddof = 1.", ""]
            for table in _f1_tables(exps):
                out += [f"### {table.title}", ""]
                out += _md_tables(*_per_class_rows(exps, table)) + [""]
            out += ["### Overall", ""] + _md_tables(*_overall_rows(exps)) + [""]
            folds = _fold_rows(exps)
            if folds is not None:
                out += ["### Per fold (mean (std) over seeds)", ""] + _md_tables(*folds) + [""]
            out += ["WA = overall accuracy; UA = mean per-class recall (the Rajan thesis swaps the two names).", ""]
        elif anchor == "confusion":
            out += images("confusion")
            for exp in exps:
                out += [f"**{_md(exp.name)}** (counts, summed over {len(exp.runs)} run(s))", ""]
                out += _md_tables(*_confusion_rows(exp)) + [""]
        elif anchor in ("per-class-f1", "macro-f1"):
            out += images(anchor)
        elif anchor == "curves":
            out += images("curves") if figs.get("curves") else ["No run has a curves.csv.", ""]
        elif anchor == "provenance":
            out += _md_tables(*_provenance_rows(exps)) + ["", "### Environment", ""]
            out += _md_tables(*_env_rows(exps)) + [""]
        elif anchor == "dominance":
            out += _md_dominance(exps)
        elif anchor == "tokens":
            out += _md_tokens(exps)
    return "\n".join(out)


_NO_ANALYSIS = "No analysis outputs found (CMD runs: `emofuse analyze RUN_DIR --out RUN_DIR/analysis`)."


def _md_dominance(exps: Sequence[ExperimentRuns]) -> list[str]:
    out: list[str] = []
    for exp in exps:
        for a in exp.analyses:
            if a.dominance is None or "summary" not in a.dominance:
                continue
            out += [f"**{_md(_analysis_source(exp, a.where, a.dominance))}**", ""]
            out += _md_tables(*_dominance_rows(a.dominance["summary"], exp.name)) + [""]
    return out or [_NO_ANALYSIS, ""]


def _md_tokens(exps: Sequence[ExperimentRuns]) -> list[str]:
    out: list[str] = []
    for exp in exps:
        for a in exp.analyses:
            if a.tokens is None:
                continue
            out += [
                f"**{_md(_analysis_source(exp, a.where, a.tokens))}**, method {_md(a.tokens.get('method'))}; "
                "tokens scoring ≥ 0.5 of the sentence maximum in bold.",
                "",
            ]
            for it in _token_items(a.tokens):
                words = [
                    f"**{_md(t)}**" if float(s) >= 0.5 else _md(t)
                    for t, s in zip(it.get("tokens", []), it.get("scores", []), strict=False)
                ]
                out.append(f"- {_md(it.get('id'))} ({_md(it.get('label'))} → {_md(it.get('pred'))}): {' '.join(words)}")
            out.append("")
    return out or [_NO_ANALYSIS, ""]


# -------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em;
       color: #111; background: #fff; }
h1 { border-bottom: 2px solid #333; padding-bottom: 0.2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
.warning { background: #fde2e2; border: 2px solid #c00; color: #700; padding: 0.6em 1em; margin: 0.6em 0;
           font-weight: bold; }
.flag { color: #c00; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""


def _img(fig: _Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_h(fig.caption)}">'
        f"<figcaption>{_h(fig.caption)}</figcaption></figure>"
    )


def _render_html(exps: Sequence[ExperimentRuns], title: str, figs: Mapping[str, list[_Figure]]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{_h(title)}</title><style>{_CSS}{_TOKEN_CSS}</style></head>',
        "<body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="note">Generated by emofuse {_h(emofuse.__version__)} on {_h(when)}.</p>',
    ]
    parts += [f'<div class="warning">WARNING: {_h(w)}</div>' for w in _warnings(exps)]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{_h(h)}</a>' for a, h in SECTIONS) + "</nav>")
    for anchor, heading in SECTIONS:
        parts.append(f'<section id="{anchor}"><h2>{_h(heading)}</h2>')
        parts += _html_section(anchor, exps, figs)
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _html_section(anchor: str, exps: Sequence[ExperimentRuns], figs: Mapping[str, list[_Figure]]) -> list[str]:
    out: list[str] = []
    if anchor == "runs":
        out.append(_html_table(*_runs_rows(exps)))
    elif anchor == "results":
        out.append('<p class="note">Mean (std) over every fold × seed run, ddof = 1.</p>')
        for table in _f1_tables(exps):
            out += [f"<h3>{html.escape(table.title)}</h3>", _html_table(*_per_class_rows(exps, table))]
        out += ["<h3>Overall: WA / UA / weighted F1 / macro F1</h3>", _html_table(*_overall_rows(exps))]
        folds = _fold_rows(exps)
        if folds is not None:
            out += ["<h3>Per fold (mean (std) over seeds)</h3>", _html_table(*folds)]
        out.append(
            '<p class="note">WA = overall accuracy; UA = mean per-class recall (the Rajan thesis swaps the two '
            "names).</p>"
        )
    elif anchor == "confusion":
        out += [_img(f) for f in figs.get("confusion", [])]
        for exp in exps:
            out.append(f"<h3>{_h(exp.name)}: counts summed over {len(exp.runs)} run(s)</h3>")
            out.append(_html_table(*_confusion_rows(exp)))
    elif anchor in ("per-class-f1", "macro-f1"):
        out += [_img(f) for f in figs.get(anchor, [])]
    elif anchor == "curves":
        out += [_img(f) for f in figs.get("curves", [])] or ['<p class="note">No run has a curves.csv.</p>']
    elif anchor == "provenance":
        header, rows = _provenance_rows(exps)
        cells = [[_h(c) for c in r[:-1]] + [_flag_cell(r[-1])] for r in rows]
        out += [_html_table(header, cells, raw=True), "<h3>Environment</h3>", _html_table(*_env_rows(exps))]
    elif anchor == "dominance":
        for exp in exps:
            for a in exp.analyses:
                if a.dominance is None or "summary" not in a.dominance:
                    continue
                out.append(f"<h3>{_h(_analysis_source(exp, a.where, a.dominance))}</h3>")
                out.append(_html_table(*_dominance_rows(a.dominance["summary"], exp.name)))
        out = out or [f'<p class="note">{_h(_NO_ANALYSIS)}</p>']
    elif anchor == "tokens":
        for exp in exps:
            for a in exp.analyses:
                if a.tokens is None:
                    continue
                out.append(f"<h3>{_h(_analysis_source(exp, a.where, a.tokens))}</h3>")
                out.append(
                    f'<p class="note">Method {_h(a.tokens.get("method"))}; background opacity = token importance '
                    "divided by the sentence maximum.</p>"
                )
                for it in _token_items(a.tokens):
                    meta = f"{it.get('id')} · {it.get('label')} → predicted {it.get('pred')}"
                    spans = " ".join(
                        _span(str(t), float(s))
                        for t, s in zip(it.get("tokens", []), it.get("scores", []), strict=False)
                    )
                    out.append(f'<div class="utt"><div class="meta">{_h(meta)}</div><div>{spans}</div></div>')
        out = out or [f'<p class="note">{_h(_NO_ANALYSIS)}</p>']
    return out


def _flag_cell(flags: str) -> str:
    return _h(flags) if flags == "ok" else f'<span class="flag">{_h(flags)}</span>'


# -------------------------------------------------------------------------------------------- API


def render_report(exps: Sequence[ExperimentRuns], title: str | None = None) -> tuple[str, str, dict[str, bytes]]:
    """Markdown, HTML and the figures (``{file name: PNG}``) of a report over loaded run folders."""
    title = title or "emofuse report: " + ", ".join(e.name for e in exps)
    figs = _figures(exps)
    md = _render_markdown(exps, title, figs, REPORT_FILES[2])
    page = _render_html(exps, title, figs)
    files = {f"{f.key}.png": f.png for group in figs.values() for f in group}
    return md, page, files


def write_report(
    run_dirs: Sequence[Path], out_dir: Path, *, title: str | None = None, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``report.md`` (+ ``report_figures/``) and the self-contained ``report.html`` for run folders.

    Args:
        run_dirs: Run folders written by ``emofuse train`` (one or more, same label set), in table order.
        out_dir: Folder for the report (created; other files in it are left alone).
        title: Page title (default ``"emofuse report: <experiment names>"``).
        overwrite: Replace a report already in ``out_dir`` (otherwise that is an error).

    Returns:
        ``{"markdown": out_dir / "report.md", "html": out_dir / "report.html"}``.

    Raises:
        ReportError: A folder is not a run folder, has no results yet, or the label sets differ.
        FileExistsError: ``out_dir`` already holds a report and ``overwrite`` is false, or is a file.
    """
    exps = load_experiments([Path(p) for p in run_dirs])  # bad input fails before anything is written
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file, not a folder")
    present = [n for n in REPORT_FILES if (out_dir / n).exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a report ({', '.join(present)}): use --overwrite to replace it, "
            "or choose another --out"
        )
    md, page, files = render_report(exps, title)
    figdir = out_dir / REPORT_FILES[2]
    if figdir.is_dir():
        shutil.rmtree(figdir)
    figdir.mkdir(parents=True)
    for name, png in files.items():
        atomic_write(figdir / name, png).chmod(0o644)
    paths = {"markdown": out_dir / REPORT_FILES[0], "html": out_dir / REPORT_FILES[1]}
    atomic_write(paths["markdown"], md).chmod(0o644)  # a report is for sharing (atomic_write makes 0600 files)
    atomic_write(paths["html"], page).chmod(0o644)
    return paths
