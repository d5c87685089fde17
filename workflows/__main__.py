"""``python -m workflows`` = the ``xai`` command."""

from workflows.cli import main

main()
