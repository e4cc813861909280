"""benchmarks/cmd_table4.py: seed rows pooled, paired differences matched on fold (and seed), checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _scripts import load_script
from scipy import stats


def _load():
    return load_script("cmd_table4.py", "cmd_table4")


def _row(name, values, seed=None):
    folds = []
    for i, v in enumerate(values):
        f = {"fold": f"group{i + 1}", "ua": v, "wa": v, "macro_f1": v - 0.01, "weighted_f1": v}
        if seed is not None:
            f["seed"] = seed
        folds.append(f)
    return {"row": {"name": name}, "folds": folds}


WAV2 = {0: [0.40, 0.50, 0.45, 0.42, 0.48], 1: [0.41, 0.52, 0.44, 0.40, 0.50]}
DISTILL = {0: [0.45, 0.49, 0.50, 0.47, 0.52], 1: [0.46, 0.55, 0.47, 0.41, 0.56]}
PROBE = [0.66, 0.71, 0.65, 0.70, 0.78]


@pytest.fixture
def rows():
    out = [_row(f"ravdess8/cmd-wav2-s{k}", v, k) for k, v in WAV2.items()]
    out += [_row(f"ravdess8/cmd-wav2-distill-s{k}", v, k) for k, v in DISTILL.items()]
    out += [_row("ravdess8/probe-unpadded", PROBE, 0), _row("ravdess8/lr-tiny-unpadded", PROBE)]
    out.append(_row("ravdess8/cmd-wav2-extra", [0.9] * 5, 0))  # another prefix: never pooled with cmd-wav2
    return out


def test_seed_rows_pool_into_one_system(rows):
    bench = _load()
    runs = bench.runs_of(rows, "ravdess8/cmd-wav2")
    assert len(runs) == 10 and {r["seed"] for r in runs} == {0, 1}
    s = bench.summarise(runs, "ua")
    every = WAV2[0] + WAV2[1]
    assert s == pytest.approx({"mean": np.mean(every), "std": np.std(every, ddof=1), "n": 10})


def test_paired_on_fold_and_seed_matches_scipy(rows):
    bench = _load()
    d = bench.paired(bench.runs_of(rows, "ravdess8/cmd-wav2-distill"), bench.runs_of(rows, "ravdess8/cmd-wav2"), "ua")
    a, b = DISTILL[0] + DISTILL[1], WAV2[0] + WAV2[1]
    diffs = np.subtract(a, b)
    assert d["n"] == 10 and d["matched_on"] == "fold, seed"
    assert d["mean_diff"] == pytest.approx(diffs.mean()) and d["std_diff"] == pytest.approx(diffs.std(ddof=1))
    assert (d["wins"], d["losses"]) == (int((diffs > 0).sum()), int((diffs < 0).sum()))
    assert d["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert d["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs).pvalue)


def test_a_one_seed_baseline_is_matched_on_the_fold_against_seed_means(rows):
    bench = _load()
    d = bench.paired(bench.runs_of(rows, "ravdess8/cmd-wav2-distill"), bench.runs_of(rows, "ravdess8/probe-unpadded"),
                     "ua")  # fmt: skip
    means = np.mean([DISTILL[0], DISTILL[1]], axis=0)
    assert d["n"] == 5 and d["matched_on"] == "fold"
    assert d["mean_diff"] == pytest.approx(np.mean(means - np.array(PROBE)))
    assert d["losses"] == 5 and d["wins"] == 0


def test_tables_and_files(rows, tmp_path, capsys):
    bench = _load()
    doc = bench.build(rows)
    names = [s["rows"] for s in doc["systems"]]
    assert names == ["ravdess8/cmd-wav2", "ravdess8/cmd-wav2-distill", "ravdess8/probe-unpadded",
                     "ravdess8/lr-tiny-unpadded"]  # fmt: skip
    text = bench.markdown(doc)
    assert "### ravdess8" in text and "meld7" not in text
    assert "`ravdess8/cmd-wav2-distill` − `ravdess8/cmd-wav2` | ua | 10 (fold, seed)" in text
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "rows").mkdir(parents=True)
    assert bench.main(["--work", str(work), "--out", str(out)]) == 0
    assert "skipped, no measured rows" in capsys.readouterr().out and not out.exists()
    for i, r in enumerate(rows):
        (work / "rows" / f"{i}.json").write_text(json.dumps(r))
    assert bench.main(["--work", str(work), "--out", str(out)]) == 0
    saved = json.loads((out / "cmd_table4.json").read_text())
    assert len(saved["comparisons"]) == 3  # distill vs wav2, distill vs probe, wav2 vs probe
    assert (out / "cmd_table4.md").read_text() == text
