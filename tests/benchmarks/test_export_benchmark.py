"""Smoke test of benchmarks/export.py on the tiny student (structure and parity, no timing assertions)."""

from __future__ import annotations

import json
import math

import pytest
from _scripts import load_script

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _load():
    return load_script("export.py", "export_benchmark")


@pytest.mark.slow
def test_tiny_run(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "export.json"
    argv = ["--setting", "tiny", "--n", "3", "--rounds", "2", "--warmup", "1", "--batch-size", "2",
            "--min-seconds", "0.5", "--max-seconds", "1.5", "--threads", "1", "--json", "--out", str(out)]  # fmt: skip
    doc = bench.main(argv)
    assert json.loads(capsys.readouterr().out) == doc == json.loads(out.read_text())
    assert doc["n"] == 3 and doc["threads"] == 1 and doc["batch_size"] == 2 and doc["device"] == "cpu"
    assert doc["max_abs_diff"] < 1e-4  # the two backends agree on every clip and batch
    for backend in ("pytorch", "onnxruntime"):
        assert 0 < doc["latency_bs1"][backend]["median_ms"] <= doc["latency_bs1"][backend]["p90_ms"]
        assert doc["throughput_clips_per_s"][backend] > 0
    ratio = doc["latency_bs1"]["pytorch"]["median_ms"] / doc["latency_bs1"]["onnxruntime"]["median_ms"]
    assert math.isclose(doc["speedup_bs1_median"], ratio, rel_tol=1e-9)
    assert 0.5 <= doc["audio_seconds_total"] <= 4.5 and doc["onnx_mib"] > 0
    assert {"torch", "onnxruntime", "emofuse", "python"} <= set(doc["versions"])


def test_rejects_bad_arguments():
    bench = _load()
    with pytest.raises(SystemExit):
        bench.main(["--n", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--min-seconds", "3", "--max-seconds", "1"])
