"""``python -m starter``: the same as the ``sternway`` command."""

from sternway.starter.cli import main

main()
