"""``python -m gifsplanation`` runs the command line."""

from .cli import main

main()
