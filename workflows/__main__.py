"""``python -m workflows`` = the ``xai`` command."""

from workflows.cli.app import main

main()
