"""Two-process DDP on CPU (gloo): the same experiment gives results of the same shape as one process.

Lightning's ``ddp`` strategy relaunches the running script for rank 1, so the experiment runs in a
small script in a subprocess (never inside the pytest process).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import _train_fakes as F
    from emofuse.training import run_experiment

    F.register()
    manifest, out, devices, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = F.fake_config(manifest, **{{"trainer.devices": devices, "trainer.strategy": strategy,
                                      "trainer.max_epochs": 2, "seeds": "[0, 1]"}})
    run_experiment(cfg, out, components=F.FakeComponents(), progress=False)
    """
)


def _train(script, manifest, out, devices, strategy):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, str(script), str(manifest), str(out), str(devices), strategy],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _shape(obj):
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [len(obj)]
    return type(obj).__name__


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_process_ddp_on_cpu_matches_single_process_shape(tmp_path):
    from _train_fakes import write_fake_manifest

    manifest = tmp_path / "manifest.jsonl"
    write_fake_manifest(manifest)
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    single = _train(script, manifest, tmp_path / "single", 1, "auto")
    ddp = _train(script, manifest, tmp_path / "ddp", 2, "ddp")
    assert ddp["n_runs"] == single["n_runs"] == 2
    assert _shape(ddp["aggregate"]) == _shape(single["aggregate"])
    for a, b in zip(single["runs"], ddp["runs"], strict=True):
        assert (a["fold"], a["seed"]) == (b["fold"], b["seed"])
        assert _shape(a["metrics"]) == _shape(b["metrics"])
    for run in ("seed0/seed0", "seed0/seed1"):
        one = (tmp_path / "single" / run / "predictions.jsonl").read_text().splitlines()
        two = (tmp_path / "ddp" / run / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(x)["id"] for x in one] == [json.loads(x)["id"] for x in two]  # every test id, once
        stage = tmp_path / "ddp" / run / "train"
        assert (stage / "last.ckpt").is_file() and (stage / "best.safetensors").is_file()
        assert len((stage / "curves.csv").read_text().splitlines()) == 3  # header + 2 epochs, written once
        assert json.loads((stage / "DONE").read_text())["world_size"] == 2
        assert json.loads((tmp_path / "single" / run / "train" / "DONE").read_text())["world_size"] == 1
