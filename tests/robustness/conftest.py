"""Shared tiny fixtures of the robustness matrix: one trained CMD run, dummy encoders, a good clip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pytest runs in importlib mode: make _matrix importable

from _matrix import write_wav  # noqa: E402

from emofuse.encoders import _registry  # noqa: E402
from emofuse.testing.checkpoints import train_tiny_cmd  # noqa: E402
from emofuse.testing.dummies import DUMMY_SPECS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained CMD run the inference tests share (trained once per session)."""
    return train_tiny_cmd(tmp_path_factory.getbasetemp() / "tiny-cmd")


@pytest.fixture(scope="module")
def dummy_encoders() -> object:
    """``dummy-audio`` / ``dummy-text`` registered for the module."""
    with pytest.MonkeyPatch.context() as mp:
        for spec in DUMMY_SPECS:
            mp.setitem(_registry._ENCODERS, spec.name, spec)
        yield


@pytest.fixture(scope="module")
def good_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One readable clip."""
    return write_wav(tmp_path_factory.mktemp("good") / "good.wav")
