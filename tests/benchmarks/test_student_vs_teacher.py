"""Smoke test of benchmarks/student_vs_teacher.py (structure only, no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _scripts import load_script


def _load():
    return load_script("student_vs_teacher.py", "student_vs_teacher")


@pytest.fixture(scope="module")
def bench():
    return _load()


@pytest.mark.slow
def test_tiny_run_json_structure(bench, tmp_path, capsys):
    out = tmp_path / "svt.json"
    argv = ["--setting", "tiny", "--n", "2", "--rounds", "1", "--warmup", "1", "--batch-size", "2",
            "--threads", "1", "--json", "--quiet", "--out", str(out)]  # fmt: skip
    res = bench.main(argv)
    printed = json.loads(capsys.readouterr().out)
    assert printed == res == json.loads(out.read_text())
    assert res["n"] == 2 and res["threads"] == 1 and res["batch_size"] == 2 and res["device"] == "cpu"
    assert {"torch", "transformers", "emofuse", "python"} <= set(res["versions"])
    assert res["memory_mmap_threshold"] == 131072 and "fresh subprocess" in res["memory_measure"]
    assert res["clips"]["source"].startswith("synthetic") and res["clips"]["audio_seconds_total"] > 0
    assert list(res["settings"]) == ["tiny"]
    tiny = res["settings"]["tiny"]
    assert tiny["status"] == "ok", tiny.get("reason")
    assert (tiny["audio_teacher"], tiny["text_teacher"]) == ("tiny-wav2vec2", "tiny-bert")
    for role in ("teacher", "student"):
        m = tiny["models"][role]
        p = m["parameters"]
        assert p["total"] == sum(v for k, v in p.items() if k != "total") > 0
        assert m["latency_ms"]["median"] > 0 and m["latency_ms"]["p90"] >= m["latency_ms"]["median"]
        assert m["utt_per_s"] > 0 and m["utt_per_s_bs1"] > 0 and m["x_realtime"] > 0
        mem = m["memory"]
        assert mem["status"] == "ok", mem.get("reason")
        for key in ("weights_mib", "param_mib", "peak_growth_bs1_mib", "peak_growth_batch_mib", "peak_source"):
            assert key in mem
    assert set(tiny["models"]["student"]["parameters"]) == {"audio", "text", "head", "total"}
    assert set(tiny["models"]["teacher"]["parameters"]) == {"audio", "text", "total"}
    ratios = tiny["ratios"]
    assert set(ratios) == {"params_audio", "params_text", "params_total", "latency", "latency_p90", "throughput",
                           "memory_bs1", "memory_batch", "latency_without_embedding"}  # fmt: skip
    assert ratios["latency_without_embedding"] >= ratios["latency"]
    t, s = tiny["models"]["teacher"]["parameters"], tiny["models"]["student"]["parameters"]
    assert ratios["params_total"] == pytest.approx(t["total"] / s["total"], abs=0.01)
    assert all(v is None or v > 0 for v in ratios.values())


def test_clips_from_manifest(bench, tmp_path):
    from emofuse.data.audio import save_wav
    from emofuse.data.manifest import Utterance, write_manifest

    recs = []
    for i in range(3):
        save_wav(tmp_path / "wav" / f"u{i}.wav", np.full(1600 * (i + 1), 0.1, dtype=np.float32))
        recs.append(Utterance(id=f"u{i}", audio=f"wav/u{i}.wav", text="" if i == 1 else f"utterance {i}"))
    manifest = write_manifest(recs, tmp_path / "m.jsonl")
    folder = tmp_path / "clips"
    folder.mkdir()
    bench.make_clips(folder, 5, manifest)
    wavs, texts = bench.load_clips(folder)
    assert texts == ["utterance 0", "utterance 2"]  # records without a transcript are skipped
    assert [len(w) for w in wavs] == [1600, 4800]


def test_time_shares_and_the_embedding_note(bench):
    pre = np.array([[0.002, 0.002], [0.003, 0.002]])  # (rounds, clips)
    total = np.array([[0.010, 0.012], [0.011, 0.010]])
    embed = np.array([[0.006, 0.005], [0.007, 0.006]])
    shares = bench._shares(pre, total, embed)
    assert shares["preprocess_ms"] == pytest.approx(2.0) and shares["forward_ms"] == pytest.approx(8.0)
    assert shares["embedding_share_of_forward"] == pytest.approx(np.median([6 / 8, 5 / 8]), abs=1e-3)
    assert shares["embedding_share"] == pytest.approx(np.median([6 / 10, 5 / 10]), abs=1e-3)
    assert "dominates the forward pass" in bench.embedding_note("run", shares)
    assert "does not dominate" in bench.embedding_note("run", {**shares, "embedding_share_of_forward": 0.2})


@pytest.mark.slow
def test_a_trained_audio_student_against_its_teacher_and_a_probe(bench, tmp_path_factory):
    from emofuse.testing.checkpoints import train_tiny_cmd

    root = tmp_path_factory.getbasetemp() / "tiny-cmd-audio"
    run = train_tiny_cmd(root, model="cmd_student_audio", epochs=1)
    setting = bench.run_setting_of(run)  # a RUN_DIR: its (only) finished run's checkpoint
    assert setting["modalities"] == ("audio",) and setting["audio"] == "tiny-wav2vec2" and "text" not in setting
    assert setting["checkpoint"].endswith("best.safetensors") and setting["num_classes"] == 4
    clips = tmp_path_factory.mktemp("clips")
    bench.make_clips(clips, 2, root / "corpus" / "manifest.jsonl")
    bench.SETTINGS["run"] = setting
    try:
        r = bench.time_worker("run", clips, threads=1, batch_size=2, rounds=1, warmup=0)  # in-process: fast
    finally:
        del bench.SETTINGS["run"]
    assert r["status"] == "ok" and set(r["architecture"]) == {"audio"}
    t, s = r["models"]["teacher"]["parameters"], r["models"]["student"]["parameters"]
    assert set(t) == {"audio", "probe", "total"} and t["probe"] == 2 * 32 * 4 + 4  # Linear(2 D, C) on tiny states
    assert "text" not in s and s["total"] == sum(v for k, v in s.items() if k != "total")
    shares = r["models"]["student"]["time_shares"]
    assert 0 < shares["embedding_share"] <= 1 and 0 <= shares["preprocess_share"] < 1
    assert 0 < shares["embedding_share_of_forward"] <= 1 and shares["forward_ms"] > 0


def test_setting_run_needs_a_run(bench):
    with pytest.raises(SystemExit, match="--setting run needs --run"):
        bench.main(["--setting", "run"])
