"""Smoke test of benchmarks/real_data.py on a miniature RAVDESS / MELD layout with tiny random encoders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _scripts import load_script


def _load():
    return load_script("real_data.py", "real_data")


def _mini_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for actor in range(1, 6):
        folder = root / "ravdess-dev" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in range(1, 9):
            for rep in (1, 2):
                name = f"03-01-{emotion:02d}-01-01-{rep:02d}-{actor:02d}.flac"
                wave = 0.05 * rng.standard_normal(8000) + 0.1 * np.sin(np.arange(8000) * emotion / 40)
                sf.write(folder / name, wave.astype(np.float32), 16000)
    meld = root / "meld-csv"
    meld.mkdir()
    emotions = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
    header = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
              "Episode", "StartTime", "EndTime"]  # fmt: skip
    for split, dialogues in (("train", range(10)), ("dev", range(3))):
        with open(meld / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            n = 0
            for d in dialogues:
                for u, emo in enumerate(emotions):
                    n += 1
                    w.writerow([n, f"I feel {emo} today {d}", "Joey", emo, "neutral", d, u, 1, 1, "0:0:0,0", "0:0:1,0"])
    return root


@pytest.mark.slow
def test_tiny_benchmark_writes_tables_and_json(tmp_path, capsys):
    bench = _load()
    data = _mini_data(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--setting", "tiny", "--data", str(data), "--work", str(tmp_path / "work"), "--out", str(out),
            "--only", "ravdess8/lr-tiny-unpadded", "--only", "ravdess8/probe", "--only", "meld7/lr-minilm-mean",
            "--only", "ravdess8/extract-*", "--extract-clips", "8"]  # fmt: skip
    assert bench.main(argv) == 0
    doc = json.loads((out / "real_data.json").read_text())
    rows = {r["row"]["name"]: r for r in doc["rows"]}
    assert set(rows) == {"ravdess8/lr-tiny-unpadded", "ravdess8/probe", "meld7/lr-minilm-mean",
                         "ravdess8/extract-speed"}  # fmt: skip
    lr = rows["ravdess8/lr-tiny-unpadded"]
    assert len(lr["folds"]) == 5 and 0.0 <= lr["summary"]["ua"]["mean"] <= 1.0  # 5 speaker groups
    assert lr["wall_s"] > 0 and lr["peak_rss_mb"] > 0
    assert len(rows["ravdess8/probe"]["folds"]) == 5  # the recipe ran on the same folds
    assert [f["fold"] for f in rows["ravdess8/probe"]["folds"]] == [f["fold"] for f in lr["folds"]]
    assert len(rows["meld7/lr-minilm-mean"]["folds"]) == 1 and "weighted_f1" in rows["meld7/lr-minilm-mean"]["summary"]
    speed = rows["ravdess8/extract-speed"]["policies"]
    assert [p["clips"] for p in speed] == [8, 8] and speed[0]["relative"] == 1.0
    assert speed[1]["features"]["options"]["pad_to"] == 30 and speed[1]["clips_per_s"] > 0
    md = (out / "real_data.md").read_text()
    assert "### ravdess8" in md and "### meld7" in md and "clips/s" in md
    # a second call reuses every finished row
    assert bench.main(argv) == 0
    assert "running" not in capsys.readouterr().out.split("wrote")[-2].splitlines()[-1]


def test_skips_with_a_message_without_the_data(tmp_path, capsys):
    bench = _load()
    assert bench.main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "out").exists()
