"""The ``xai`` command line: :mod:`workflows.cli.app` (the app and ``main``) and one module
per group of commands; they parse options and call :mod:`workflows.commands` and
:mod:`workflows.runner`."""
