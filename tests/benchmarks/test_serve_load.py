"""Smoke test of benchmarks/serve_load.py: a short bounded loopback run (structure, no failed request; no timing)."""

from __future__ import annotations

import json

import pytest
from _scripts import load_script

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


def _load():
    return load_script("serve_load.py", "serve_load")


@pytest.mark.slow
def test_short_loopback_run(tmp_path, tmp_path_factory, capsys):
    from emofuse.testing.checkpoints import train_tiny_cmd

    run = train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")
    out = tmp_path / "load.json"
    argv = ["--checkpoint", str(run), "--clients", "3", "--seconds", "1.5", "--clip-seconds", "0.5", "--json",
            "--out", str(out)]  # fmt: skip
    code = _load().main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc == json.loads(out.read_text())
    assert doc["failed"] == 0 and doc["requests"] > 0 and doc["throughput_rps"] > 0
    assert 0 < doc["latency_ms"]["p50"] <= doc["latency_ms"]["p95"] <= doc["latency_ms"]["max"]
    assert doc["batches"]["count"] >= 1 and doc["clients"] == 3
