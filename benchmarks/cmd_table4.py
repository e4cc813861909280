"""CMD's Table 4 on real data: frozen-teacher rows against distilled students, with paired comparisons.

Reads the rows that ``benchmarks/real_data.py`` measured (``WORK/rows/*.json``; the ``cmd-*`` rows run one seed
each, the probe / logistic-regression rows are deterministic) and writes ``OUT/cmd_table4.json`` and
``OUT/cmd_table4.md``:

* one line per system: mean (std) over every fold x seed run (RAVDESS: 5 speaker folds; MELD: the official
  split), with the number of runs;
* paired comparisons: runs matched on (fold, seed) when both rows ran the same seeds, else on the fold (each
  row's mean over its seeds; the probe and logistic-regression rows are deterministic). Mean difference,
  wins / losses, a paired t-test and a Wilcoxon signed-rank test (scipy; ``nan`` when there are too few pairs).

Usage (after the rows are measured)::

    python benchmarks/real_data.py --only 'ravdess8/cmd-*' --only 'meld7/cmd-*'   # hours on a 2-core CPU
    python benchmarks/cmd_table4.py

Skips with a message (exit 0) when no measured row is there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: (task, system label, row-name prefix): rows named ``<prefix>`` or ``<prefix>-s<k>`` are pooled.
SYSTEMS = [
    ("ravdess8", "wav2 (MulT on frozen Whisper tiny.en states)", "ravdess8/cmd-wav2"),
    (
        "ravdess8",
        "wav2 + distill (CMD audio student, tiny.en teacher; ravdess-wav-distill.yaml)",
        "ravdess8/cmd-wav2-distill",
    ),
    (
        "ravdess8",
        "wav2 + distill with the paper's settings (front-end trained, no augmentation)",
        "ravdess8/cmd-wav2-distill-paper",
    ),
    (
        "ravdess8",
        "wav2 + distill on a narrow 64-channel front-end (model.front_end_channels: 64)",
        "ravdess8/cmd-wav2-distill-narrow64",
    ),
    ("ravdess8", "probe: every tiny.en layer, unpadded (ravdess-probe.yaml)", "ravdess8/probe-unpadded"),
    ("ravdess8", "probe: every tiny.en layer, 30 s (ravdess-probe.yaml)", "ravdess8/probe"),
    ("ravdess8", "LR reference: last tiny.en layer, unpadded", "ravdess8/lr-tiny-unpadded"),
    ("ravdess8", "probe on the teacher's first 2 layers (no distillation)", "ravdess8/cmd-student-k2-probe"),
    ("meld7", "bert (MulT on frozen MiniLM token states)", "meld7/cmd-bert"),
    ("meld7", "bert + distill (CMD text student, MiniLM teacher)", "meld7/cmd-bert-distill"),
    ("meld7", "LR reference: mean-pooled MiniLM", "meld7/lr-minilm-mean"),
]
#: (task, candidate prefix, baseline prefix): "is the candidate better than the baseline?"
PAIRS = [
    ("ravdess8", "ravdess8/cmd-wav2-distill", "ravdess8/cmd-wav2"),
    ("ravdess8", "ravdess8/cmd-wav2-distill", "ravdess8/cmd-wav2-distill-paper"),
    ("ravdess8", "ravdess8/cmd-wav2-distill-narrow64", "ravdess8/cmd-wav2-distill"),
    ("ravdess8", "ravdess8/cmd-wav2-distill", "ravdess8/probe-unpadded"),
    ("ravdess8", "ravdess8/cmd-wav2", "ravdess8/probe-unpadded"),
    ("ravdess8", "ravdess8/cmd-student-k2-probe", "ravdess8/probe-unpadded"),
    ("meld7", "meld7/cmd-bert-distill", "meld7/cmd-bert"),
    ("meld7", "meld7/cmd-bert", "meld7/lr-minilm-mean"),
]
METRICS = {"ravdess8": ("ua", "macro_f1"), "meld7": ("weighted_f1", "macro_f1")}


def _belongs(name: str, prefix: str) -> bool:
    if name == prefix:
        return True
    rest = name[len(prefix) :]
    return name.startswith(prefix) and rest.startswith("-s") and rest[2:].isdigit()


def runs_of(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Every fold x seed result of the rows pooled under ``prefix`` (``seed`` is ``None`` for deterministic rows)."""
    out = []
    for r in rows:
        if _belongs(r["row"]["name"], prefix):
            out += [{"seed": f.get("seed"), **f} for f in r.get("folds") or []]
    return out


def summarise(runs: list[dict[str, Any]], metric: str) -> dict[str, float]:
    """Mean, std (ddof 1) and count of ``metric`` over runs."""
    vals = np.array([r[metric] for r in runs], dtype=float)
    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(vals.mean()), "std": std, "n": int(len(vals))}


def paired(candidate: list[dict[str, Any]], baseline: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Paired differences ``candidate - baseline`` of ``metric``.

    Runs are matched on ``(fold, seed)`` when both sides ran the same seeds; otherwise (a deterministic row, or one
    seed against three) on the fold, each side's mean over its seeds.
    """
    from scipy import stats

    def table(runs: list[dict[str, Any]], by_seed: bool) -> dict[Any, float]:
        groups: dict[Any, list[float]] = defaultdict(list)
        for r in runs:
            groups[(r["fold"], r["seed"]) if by_seed else r["fold"]].append(float(r[metric]))
        return {k: float(np.mean(v)) for k, v in groups.items()}

    seeds_a, seeds_b = {r["seed"] for r in candidate}, {r["seed"] for r in baseline}
    by_seed = seeds_a == seeds_b and None not in seeds_a
    a, b = table(candidate, by_seed), table(baseline, by_seed)
    keys = sorted(set(a) & set(b), key=str)
    diffs = np.array([a[k] - b[k] for k in keys], dtype=float)
    out: dict[str, Any] = {"n": len(keys), "matched_on": "fold, seed" if by_seed else "fold"}
    if not len(keys):
        return out
    out.update(mean_diff=float(diffs.mean()), std_diff=float(diffs.std(ddof=1)) if len(keys) > 1 else 0.0)
    out.update(wins=int((diffs > 0).sum()), losses=int((diffs < 0).sum()))
    nan = float("nan")
    out["t_p"] = float(stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys]).pvalue) if len(keys) > 1 else nan
    out["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue) if np.count_nonzero(diffs) >= 5 else nan
    return out


def build(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The systems' summaries and the paired comparisons of every measured row."""
    systems, comparisons = [], []
    for task, label, prefix in SYSTEMS:
        runs = runs_of(rows, prefix)
        if runs:
            systems.append({"task": task, "system": label, "rows": prefix, "runs": len(runs),
                            **{m: summarise(runs, m) for m in METRICS[task]}})  # fmt: skip
    for task, cand, base in PAIRS:
        a, b = runs_of(rows, cand), runs_of(rows, base)
        if a and b:
            comparisons.append({"task": task, "candidate": cand, "baseline": base,
                                **{m: paired(a, b, m) for m in METRICS[task]}})  # fmt: skip
    return {"systems": systems, "comparisons": comparisons}


def _p(x: float) -> str:
    return "–" if x != x else f"{x:.3f}"  # nan -> dash


def markdown(doc: dict[str, Any]) -> str:
    """The two tables per task."""
    lines: list[str] = []
    for task, metrics in METRICS.items():
        systems = [s for s in doc["systems"] if s["task"] == task]
        if not systems:
            continue
        lines += [f"### {task}", "", "| system | rows | runs | " + " | ".join(metrics) + " |",
                  "|---|---|---:|" + "---:|" * len(metrics)]  # fmt: skip
        for s in systems:
            cells = " | ".join(f"{s[m]['mean']:.3f} ({s[m]['std']:.3f})" for m in metrics)
            lines.append(f"| {s['system']} | `{s['rows']}` | {s['runs']} | {cells} |")
        comps = [c for c in doc["comparisons"] if c["task"] == task]
        if comps:
            lines += ["", "| candidate − baseline | metric | pairs (matched on) | mean diff (std) | wins / losses | "
                      "paired t p | Wilcoxon p |", "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
            for c in comps:
                for m in metrics:
                    d = c[m]
                    if not d["n"]:
                        continue
                    lines.append(f"| `{c['candidate']}` − `{c['baseline']}` | {m} | {d['n']} ({d['matched_on']}) | "
                                 f"{d['mean_diff']:+.3f} ({d['std_diff']:.3f}) | {d['wins']} / {d['losses']} | "
                                 f"{_p(d['t_p'])} | {_p(d['wilcoxon_p'])} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / ".emofuse-cache" / "bench"), help="real_data.py's work folder")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where cmd_table4.json / .md go")
    args = p.parse_args(argv)
    found = sorted((Path(args.work) / "rows").glob("*.json"))
    rows = [json.loads(f.read_text()) for f in found]
    doc = build(rows)
    if not doc["systems"]:
        print(f"cmd_table4: skipped, no measured rows under {Path(args.work) / 'rows'} (run benchmarks/real_data.py)")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cmd_table4.json").write_text(json.dumps(doc, indent=1))
    (out / "cmd_table4.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
