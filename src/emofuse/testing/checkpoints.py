"""A tiny trained CMD student for tests of inference, export and the CLI (never imported by package code).

:func:`train_tiny_cmd` trains a real run folder (``emofuse train`` layout) on a synthetic WAV corpus with the
tiny-wav2vec2 and tiny-bert teachers: one fine-tuning stage of a few epochs, a few seconds on a CPU. A second call
with the same folder reuses the finished run, so several test modules can share one training per session
(``tmp_path_factory.getbasetemp() / "tiny-cmd"``).
"""

from __future__ import annotations

from pathlib import Path

from emofuse.data.manifest import write_manifest
from emofuse.testing.dummies import make_wav_corpus

__all__ = ["TINY_CLASSES", "TINY_CMD_CONFIG", "train_tiny_cmd"]

TINY_CLASSES = ("neutral", "happy", "sad", "angry")

TINY_CMD_CONFIG = """
name: tiny-cmd
seeds: [0]
data:
  manifest: {manifest}
  protocol: random-stratified
  max_batch_samples: 40000
model:
  name: {model}
  audio_teacher: tiny-wav2vec2
  text_teacher: tiny-bert
  temperature: 0.05
encoders:
  allow_random: true
  cache_dir: {cache}
optim: {{lr: 0.001}}
trainer: {{max_epochs: {epochs}, accelerator: cpu, devices: 1, progress_bar: false, logger: []}}
"""


def train_tiny_cmd(root: str | Path, *, model: str = "cmd_student", utterances: int = 16, epochs: int = 2) -> Path:
    """Train (or reuse) a tiny CMD run under ``root``.

    Args:
        root: Folder for the corpus (``corpus/``, with ``manifest.jsonl``) and the run (``run/``).
        model: Registered CMD student variant.
        utterances: Size of the synthetic corpus (0.4 s each, four classes).
        epochs: Training epochs.

    Returns:
        The run folder (``RUN_DIR``); its checkpoint is ``run/seed0/seed0/train/best.safetensors``.
    """
    import warnings

    from emofuse.config import load_config
    from emofuse.training import run_experiment

    root = Path(root)
    run = root / "run"
    if (run / "results.json").is_file():
        return run
    corpus = root / "corpus"
    records = make_wav_corpus(corpus, utterances, seconds=0.4, labels=TINY_CLASSES)
    write_manifest(records, corpus / "manifest.jsonl", overwrite=True)
    config = root / "tiny-cmd.yaml"
    config.write_text(
        TINY_CMD_CONFIG.format(manifest=corpus / "manifest.jsonl", cache=root / "cache", model=model, epochs=epochs),
        encoding="utf-8",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiment(load_config(config), run, progress=False, echo=lambda _: None)
    return run
