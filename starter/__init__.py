"""The ``sternway`` command line: submit runs, command them, inspect them, run a worker or a
whole development environment. ``starter.cli.main`` is the entry point."""
