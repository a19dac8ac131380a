"""Entry point for ``python -m training.family``."""

from training.family.command import main

main()
