"""``python -m k2.cli`` (used by the local stack to start K2's own services)."""

from k2.cli import main

main()
