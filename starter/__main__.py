"""``python -m starter``: the same as the ``sternway`` command."""

from starter.cli import main

main()
