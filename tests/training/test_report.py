"""results.md: standard per-class F1 always, MulT's where the system's paper uses it, each labelled."""

from emofuse.metrics import aggregate
from emofuse.metrics.tables import f1_conventions, headline_metric
from emofuse.training.report import render_markdown, results_document

CLASSES = ["neutral", "fear", "disgust"]


def _metrics(seed):
    # a 7-class MELD-like run: rare classes never predicted (standard F1 0) but MulT's one-vs-rest F1 is high
    return {
        "wa": 0.6,
        "ua": 0.3,
        "weighted_f1": 0.55 + seed / 100,
        "macro_f1": 0.2,
        "per_class_f1": {"neutral": 0.7, "fear": 0.0, "disgust": 0.03},
        "mult_f1": {"per_class": {"neutral": 0.6, "fear": 0.97, "disgust": 0.96}, "macro": 0.84},
    }


def _doc(model, labels):
    runs = [{"fold": "official", "seed": s, "metrics": _metrics(s)} for s in (0, 1)]
    return results_document(
        "x", CLASSES, runs, f1_conventions=f1_conventions(model), headline=headline_metric(model, labels)
    )


def test_meld_style_run_leads_with_weighted_f1_and_shows_standard_per_class_f1():
    md = render_markdown(_doc("cm_roberta", "meld7"))
    assert "## Per-class F1 (standard: each class's precision and recall)" in md
    assert "| x | 0.7000 (0.0000) | 0.0000 (0.0000) | 0.0300 (0.0000) | 0.2000 (0.0000) |" in md
    assert "MulT" not in md and "0.97" not in md  # CM-RoBERTa's Table 2 uses standard per-class F1
    assert "| Experiment | Weighted F1 | WA | UA | Macro F1 |" in md
    assert "Headline: Weighted F1 0.5550 (0.0071)." in md


def test_cmd_run_shows_both_conventions_labelled():
    md = render_markdown(_doc("cmd_student", "iemocap4-cmd"))
    standard, mult = md.index("(standard:"), md.index("(MulT convention: one-vs-rest, support-weighted")
    assert standard < mult and "0.9700 (0.0000)" in md[mult:] and "0.0000 (0.0000)" in md[standard:mult]
    assert "| Experiment | WA | UA | Weighted F1 | Macro F1 |" in md and "Headline" not in md
    older = render_markdown({"name": "old", "classes": CLASSES, "aggregate": aggregate([_metrics(0)]), "runs": []})
    assert "(standard:" in older and "(MulT convention" in older  # results.json of earlier versions: both
