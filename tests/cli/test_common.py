"""Shared CLI plumbing: JSON output is always valid JSON; --device values are checked before use."""

import json

import pytest
import torch

from emofuse.cli._common import parse_device, print_json


def test_json_output_is_valid_json_with_undefined_values_as_null(capsys):
    print_json({"pcc": float("nan"), "runs": [{"ccc": float("inf"), "mae": 0.5}], "name": "x"})
    assert json.loads(capsys.readouterr().out) == {"pcc": None, "runs": [{"ccc": None, "mae": 0.5}], "name": "x"}


def test_devices_are_checked(monkeypatch):
    assert parse_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda:1: no CUDA GPU on this machine"):
        parse_device("cuda:1")
    with pytest.raises(ValueError, match="--device 'gpu0' is not a device name"):
        parse_device("gpu0")
