"""Ctrl-C and SIGTERM during training stop it cleanly with a message; the same command resumes it."""

import os
import signal

import lightning as L
import pytest
from _train_fakes import FakeComponents, fake_config, write_fake_manifest

from emofuse.training import TrainingInterrupted, run_experiment


class SendSignal(L.Callback):
    """Sends ``sig`` to this process when epoch ``at`` starts (epochs before it are checkpointed)."""

    def __init__(self, sig, at):
        self.sig, self.at, self.started = sig, at, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append(trainer.current_epoch)
        if trainer.current_epoch == self.at:
            self.at = None
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize(("sig", "name", "code"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)])
def test_a_signal_stops_training_with_a_message_and_the_run_resumes(tmp_path, sig, name, code):
    manifest = tmp_path / "m.jsonl"
    write_fake_manifest(manifest)
    cfg = fake_config(manifest, **{"trainer.max_epochs": 4})
    stop = SendSignal(sig, at=2)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite itself runs in the background (nohup ... &)
    saved = r"(last finished epoch|progress up to step \d+) is saved"  # Ctrl-C: saved at the step it came in
    with pytest.raises(TrainingInterrupted, match=rf"stopped by .*{name}.*{saved}") as e:
        run_experiment(cfg, tmp_path / "run", components=FakeComponents(), progress=False, callbacks=[stop])
    assert e.value.signal_name == name and e.value.exit_code == code
    # Ctrl-C works again after a Ctrl-C; after SIGTERM the handler is the one the run found
    assert signal.getsignal(signal.SIGINT) is (signal.default_int_handler if sig == signal.SIGINT else before)
    stage = tmp_path / "run" / "seed0" / "seed0" / "train"
    assert (stage / "last.ckpt").is_file() and not (stage / "DONE").exists()
    stop.started = []
    doc = run_experiment(cfg, tmp_path / "run", components=FakeComponents(), progress=False, callbacks=[stop])
    assert doc["n_runs"] == 1 and stop.started[0] >= 2  # resumed, not restarted
