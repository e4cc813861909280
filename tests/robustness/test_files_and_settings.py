"""Bad manifests, configs, checkpoints, run folders and outputs: each is a one-line error naming the file (exit 2),
and nothing already written is lost."""

import fcntl
import gzip
import json
import os
import pickle
import shutil

import pytest
import torch
from _matrix import invoke, one_line_error, snapshot
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from emofuse.models import create_model
from emofuse.models.checkpoint import save_checkpoint

GOOD = '{"id": "a", "audio": null, "text": "hello", "label": "happy"}\n'

#: name -> (file name, bytes, what the one-line error says)
MANIFESTS = {
    "malformed-line": ("m.jsonl", GOOD + "{not json\n", "m.jsonl:2: not valid JSON"),
    "duplicate-ids": ("m.jsonl", GOOD + GOOD, "duplicate id(s): a"),
    "non-utf8": ("m.jsonl", GOOD.encode() + b'{"id": "b", "text": "caf\xe9"}\n', "m.jsonl:2: not UTF-8 text"),
    "wrong-type": ("m.jsonl", '{"id": "a", "text": "x", "start": "soon"}\n', "m.jsonl:1: invalid record"),
    "not-a-record": ("m.jsonl", "[1, 2, 3]\n", "m.jsonl:1: invalid record"),
    "empty": ("m.jsonl", "", "the manifest has no records"),
    "damaged-gzip": ("m.jsonl.gz", gzip.compress(GOOD.encode() * 40)[:-25], "m.jsonl.gz: damaged gzip file"),
    "plain-text-gz": ("m.jsonl.gz", GOOD, "m.jsonl.gz: damaged gzip file"),
    "missing": ("m.jsonl", None, "manifest not found"),
    "folder": ("m.jsonl", "DIR", "is a folder, not a manifest"),
}


def _place(folder, name, content):
    path = folder / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest(case, tmp_path, dummy_encoders):
    name, content, says = MANIFESTS[case]
    path = _place(tmp_path, name, content)
    before = snapshot(tmp_path)
    for args in (["validate", path], ["extract", path, "-e", "dummy-text", "-o", tmp_path / "f"]):
        if case == "empty" and args[0] == "extract":
            continue  # an empty manifest extracts nothing: not an error of its own
        one_line_error(invoke(*args), path.name, says.split(": ")[-1])
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_unknown_labels_are_listed(tmp_path):
    path = _place(tmp_path, "m.jsonl", GOOD.replace("happy", "bored"))
    out = invoke("validate", path, "--labels", "iemocap4")
    assert out.code == 1 and "unknown labels: 1 (a)" in out.output


#: name -> (config text, what the one-line error says)
CONFIGS = {
    "unknown-key": ("optim:\n  lrr: 0.1\n", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    "bad-type": ("optim:\n  lr: fast\n", "bad value for 'optim.lr'"),
    "bad-yaml": ("optim: [1,\n", "not valid YAML"),
    "not-a-mapping": ("- 1\n- 2\n", "the top level must be a mapping"),
    "base-cycle": ("base: cfg.yaml\nname: x\n", "'base:' files name each other in a cycle"),
    "non-utf8": (b"name: caf\xe9\n", "cfg.yaml:1: not UTF-8 text"),
    "bad-stage": ("stages:\n  - name: ft\n    trainer: {max_epochs: 0}\n", "stage 'ft': max_epochs"),
    "missing-manifest": ("data:\n  manifest: nowhere.jsonl\n", "nowhere.jsonl (prepare it with `emofuse prepare`"),
    "missing-file": (None, "config file not found"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, says = CONFIGS[case]
    cfg = tmp_path / "cfg.yaml"
    if text is not None:
        cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    one_line_error(invoke("train", cfg, "--out", tmp_path / "run"), says)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def _nan_weights(best, path):
    with safe_open(str(best), framework="pt") as f:
        header = f.metadata()
    state = load_file(str(best))
    state = {k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(path), metadata=header)


def _missing_key(best, path):
    with safe_open(str(best), framework="pt") as f:
        header = f.metadata()
    state = load_file(str(best))
    state.pop(sorted(state)[0])
    save_file(state, str(path), metadata=header)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


#: name -> (builder(best checkpoint, target path), what the one-line error says)
CHECKPOINTS = {
    "missing": (None, "checkpoint not found"),
    "empty": (lambda best, p: p.write_bytes(b""), "not a readable safetensors checkpoint"),
    "truncated": (lambda best, p: p.write_bytes(best.read_bytes()[:300]), "not a readable safetensors checkpoint"),
    "random-bytes": (lambda best, p: p.write_bytes(os.urandom(4096)), "not a readable safetensors checkpoint"),
    "crafted-pickle": (lambda best, p: p.write_bytes(pickle.dumps(_Evil())), "not a readable safetensors checkpoint"),
    "nan-weights": (_nan_weights, "non-finite weights (NaN or inf)"),
    "missing-weight": (_missing_key, "weights do not fit model"),
    "no-class-names": (
        lambda best, p: save_checkpoint(create_model("probe", modality="text", input_dim=8, num_classes=4), p),
        "stores no class names",
    ),
    "no-encoder-recorded": (
        lambda best, p: save_checkpoint(
            create_model("probe", modality="text", input_dim=8, num_classes=4), p, {"classes": list("abcd")}
        ),
        "no ['text'] encoder recorded",
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_bad_checkpoint(case, tmp_path, tiny_run, good_wav, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, says = CHECKPOINTS[case]
    ckpt = tmp_path / "model" / "last.safetensors"
    ckpt.parent.mkdir()
    if build is not None:
        build(tiny_run / "seed0" / "seed0" / "train" / "best.safetensors", ckpt)
    out_csv = tmp_path / "p.csv"
    one_line_error(invoke("predict", ckpt, good_wav, "--text", "hi", "--csv", out_csv), "last.safetensors", says)
    one_line_error(invoke("export", ckpt, "--onnx", tmp_path / "m.onnx"), "last.safetensors", says)
    assert not out_csv.exists() and not (tmp_path / "m.onnx").exists() and not (tmp_path / "pwned").exists()


def test_folder_without_checkpoints(tmp_path, good_wav):
    (tmp_path / "notes.txt").write_text("no model here")
    one_line_error(invoke("predict", tmp_path, good_wav, "--text", "hi"), str(tmp_path), "no checkpoint found")


@pytest.fixture()
def unfinished_run(tmp_path, tiny_run):
    """A copy of the tiny run with its stage left unfinished (as a kill leaves it)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for done in run.rglob("DONE"):
        done.unlink()
    return run, run / "seed0" / "seed0" / "train" / "last.ckpt"


@pytest.mark.parametrize("case", ["truncated", "foreign", "crafted-pickle"])
def test_unresumable_last_ckpt(case, tmp_path, unfinished_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, ckpt = unfinished_run
    if case == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif case == "foreign":
        torch.save({"model": torch.zeros(3)}, ckpt)
    else:
        torch.save({"loops": _Evil(), "pytorch-lightning_version": "2"}, ckpt)
    before = snapshot(run)
    line = one_line_error(invoke("train", run / "config.yaml", "--out", run, "-q"), "last.ckpt", "cannot resume")
    assert "--overwrite" in line and "delete it" in line
    after = {k: v for k, v in snapshot(run).items() if not k.endswith("env.json")}  # env.json: this attempt's record
    assert after == {k: v for k, v in before.items() if not k.endswith("env.json")}
    assert not (tmp_path / "pwned").exists()  # never unpickled, nothing lost


def test_existing_outputs_need_overwrite(tmp_path, tiny_run):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"mine")
    one_line_error(invoke("export", tiny_run, "--onnx", onnx), "m.onnx", "already exists; pass --overwrite")
    manifest = _place(tmp_path, "m.jsonl", GOOD)
    out = _place(tmp_path, "asr.jsonl", "my own file\n")
    one_line_error(invoke("transcribe", manifest, "--out", out), "asr.jsonl", "overwrite")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    one_line_error(invoke("train", tiny_run / "config.yaml", "--out", mine, "-q"), "mine", "not empty")
    assert onnx.read_bytes() == b"mine" and out.read_text() == "my own file\n"
    assert snapshot(mine) == {"thesis.tex": b"precious"}


@pytest.mark.parametrize("case", ["under-a-file", "read-only"])
def test_unwritable_output(case, tmp_path, dummy_encoders, good_wav):
    manifest = _place(tmp_path, "m.jsonl", GOOD.replace("null", json.dumps(str(good_wav))))
    blocker = tmp_path / "blocker"
    if case == "under-a-file":
        blocker.write_text("a file, not a folder")
        target = blocker / "features"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        blocker.mkdir()
        blocker.chmod(0o500)
        target = blocker / "features"
    try:
        one_line_error(invoke("extract", manifest, "-e", "dummy-audio", "-o", target), "blocker")
    finally:
        blocker.chmod(0o700) if blocker.is_dir() else None


def test_two_extractions_into_one_cache(tmp_path, dummy_encoders, good_wav):
    manifest = _place(tmp_path, "m.jsonl", GOOD.replace("null", json.dumps(str(good_wav))))
    first = invoke("extract", manifest, "-e", "dummy-audio", "-o", tmp_path / "f", "--json")
    cache = tmp_path / json.loads(first.output[first.output.index("{") :])["dir"]
    before = snapshot(cache)
    with open(cache / ".lock", "a+") as held:  # another process is extracting into it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_line_error(invoke("extract", manifest, "-e", "dummy-audio", "-o", tmp_path / "f"), cache.name, "another")
    assert snapshot(cache) == before


def test_predict_csv_into_a_file_path(tmp_path, tiny_run, good_wav):
    (tmp_path / "blocker").write_text("x")
    one_line_error(
        invoke("predict", tiny_run, good_wav, "--text", "hi", "--csv", tmp_path / "blocker" / "p.csv"), "blocker"
    )
    assert (tmp_path / "blocker").read_text() == "x"
