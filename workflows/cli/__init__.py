"""The ``xai`` command line: parses options and calls library and workflow functions."""
