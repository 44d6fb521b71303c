"""``python -m bertprobe`` runs the CLI."""

from bertprobe.cli import main

main()
