"""Encoder tests run offline and see only what this repository provides.

Hub access is switched off before anything imports ``huggingface_hub``; the user's Hugging Face cache and
``$EMOFUSE_MODELS_DIR`` are hidden, and assembled packaged weights go to a per-session temporary cache.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import warnings  # noqa: E402

import pytest  # noqa: E402

from emofuse.encoders import RandomInitWarning, _registry, create_encoder  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("EMOFUSE_MODELS_DIR", raising=False)
    monkeypatch.setenv("EMOFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "emofuse-cache"))
    monkeypatch.setattr(_registry, "_hf_cache_dir", lambda model_id: None)


@pytest.fixture(scope="session")
def make_encoder():
    """``make_encoder(name, **kw)``: ``create_encoder(name, allow_random=True, **kw)`` without the random-init warning.

    For the tiny test encoders, which are random by design.
    """

    def make(name, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomInitWarning)
            return create_encoder(name, allow_random=True, **kwargs)

    return make


@pytest.fixture(scope="session")
def build_random_base():
    """``build_random_base(name, **kw)``: a base-size model with random weights, built once per session.

    Packaged stand-ins and the HF cache are hidden while it builds, so the name resolves to ``random``; the
    warnings raised while building are returned with it.
    """
    cache: dict = {}

    def build(name, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mp.setattr(_registry, "locate_packaged", lambda pkg: None)
                mp.setattr(_registry, "_hf_cache_dir", lambda model_id: None)
                mp.delenv("EMOFUSE_MODELS_DIR", raising=False)
                encoder = create_encoder(name, allow_random=True, **kwargs)
            cache[key] = (encoder, list(caught))
        return cache[key]

    return build
