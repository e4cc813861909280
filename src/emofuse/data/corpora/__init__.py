"""Corpus recipes: ``prepare_<corpus>(root, ...) -> PreparedCorpus``, one module per corpus.

Each recipe parses the corpus in its real on-disk layout, maps labels with a
:class:`~emofuse.data.labels.LabelScheme`, and reports (never silently drops) what it skipped.
:func:`prepare` dispatches by name; :data:`CORPORA` lists the names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emofuse.data.corpora._base import CorpusError, PreparedCorpus

__all__ = ["CORPORA", "CorpusError", "PreparedCorpus", "get_recipe", "prepare"]

# name -> (module, function); modules are imported lazily so optional readers (h5py) load on use.
CORPORA: dict[str, tuple[str, str]] = {
    "iemocap": ("emofuse.data.corpora.iemocap", "prepare_iemocap"),
    "meld": ("emofuse.data.corpora.meld", "prepare_meld"),
    "mosei": ("emofuse.data.corpora.mosei", "prepare_mosei"),
    "mosi": ("emofuse.data.corpora.mosei", "prepare_mosi"),
    "ravdess": ("emofuse.data.corpora.acted", "prepare_ravdess"),
    "cremad": ("emofuse.data.corpora.acted", "prepare_cremad"),
    "tess": ("emofuse.data.corpora.acted", "prepare_tess"),
    "emodb": ("emofuse.data.corpora.acted", "prepare_emodb"),
    "csv": ("emofuse.data.corpora.table", "prepare_csv"),
    "synthetic": ("emofuse.data.corpora.synthetic", "prepare_synthetic"),
    "sspnet": ("emofuse.data.corpora.sspnet", "prepare_sspnet"),
    "recola": ("emofuse.data.corpora.recola", "prepare_recola"),
}

_LOADED = False


def get_recipe(corpus: str) -> Callable[..., PreparedCorpus]:
    """The ``prepare_<corpus>`` function for a corpus name."""
    try:
        module, fn = CORPORA[corpus]
    except KeyError:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of: {', '.join(CORPORA)}") from None
    return getattr(importlib.import_module(module), fn)


def prepare(corpus: str, root: str | Path, **kwargs: Any) -> PreparedCorpus:
    """Prepare ``corpus`` found at ``root``; keyword arguments go to its recipe."""
    return get_recipe(corpus)(root, **kwargs)


def _import_all() -> None:
    """Import every recipe module so that their label schemes are registered."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in dict.fromkeys(m for m, _ in CORPORA.values()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


_import_all()
