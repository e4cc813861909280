"""Corpus recipes: ``prepare_<corpus>(root, ...) -> PreparedCorpus``, one module per corpus.

Each recipe parses the corpus in its real on-disk layout, maps labels with a
:class:`~emofuse.data.labels.LabelScheme`, and reports (never silently drops) what it skipped.
:func:`prepare` dispatches by name; :data:`CORPORA` lists the names.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emofuse.data.corpora._base import CorpusError, PreparedCorpus

__all__ = ["CORPORA", "CorpusError", "PreparedCorpus", "get_recipe", "prepare", "recipe_options", "scheme_owner"]

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


def recipe_options(corpus: str) -> list[str]:
    """The keyword options of a corpus' recipe (everything but ``root``)."""
    params = inspect.signature(get_recipe(corpus)).parameters
    return [n for n, p in params.items() if n != "root" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def scheme_owner(scheme: str) -> str | None:
    """The corpus a label scheme was made for (its name starts with the corpus': ``iemocap4`` → ``iemocap``).

    ``None`` for schemes shared by corpora (``sentiment2``, ``sentiment7``).
    """
    owners = [c for c in CORPORA if c != "csv" and re.match(rf"{re.escape(c)}(\d|-|$)", scheme)]
    return max(owners, key=len) if owners else None


def prepare(corpus: str, root: str | Path, **kwargs: Any) -> PreparedCorpus:
    """Prepare ``corpus`` found at ``root``; keyword arguments go to its recipe.

    Raises:
        ValueError: An unknown corpus or option (the recipe's options are listed), or the label scheme of
            another corpus (``labels="iemocap4"`` for RAVDESS: its raw labels would mostly be dropped).
    """
    recipe = get_recipe(corpus)
    valid = recipe_options(corpus)
    unknown = [k for k in kwargs if k not in valid]
    if unknown and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(recipe).parameters.values()
    ):
        raise ValueError(
            f"prepare {corpus}: unknown option(s) {', '.join(map(repr, unknown))}; options: {', '.join(valid)}"
        )
    labels = kwargs.get("labels")
    owner = scheme_owner(labels) if isinstance(labels, str) and corpus != "csv" else None
    if owner is not None and owner != corpus:
        from emofuse.data.labels import list_schemes

        own = [s for s in list_schemes() if scheme_owner(s) in (corpus, None)]
        raise ValueError(
            f"label scheme {labels!r} is {owner}'s, not {corpus}'s (its raw labels differ, most utterances would be "
            f"dropped); {corpus} takes: {', '.join(own)}"
        )
    return recipe(root, **kwargs)


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
