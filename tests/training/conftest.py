"""Make the training tests' shared fakes importable (pytest runs in importlib mode), and register the fake model."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import _train_fakes  # noqa: E402


@pytest.fixture(autouse=True)
def _fake_model(monkeypatch):
    _train_fakes.register(monkeypatch)
