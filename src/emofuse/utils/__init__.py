"""Small shared helpers: atomic file writes, lazy optional imports, seeding, progress bars."""

from emofuse.utils.io import atomic_write
from emofuse.utils.optional import require
from emofuse.utils.seed import seed_everything

__all__ = ["atomic_write", "require", "seed_everything"]
