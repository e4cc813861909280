"""``python -m emofuse``."""

from emofuse.cli.main import main

main()
