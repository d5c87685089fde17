"""Typed, frozen run configuration, validated on load.

- :mod:`~workflows.config.loading`: :func:`load_config`, a TOML file to a :class:`Config`.
- :mod:`~workflows.config.sections`: the ``[section]`` tables, each key with its rule.
- :mod:`~workflows.config.key_checks`: the checks of keys that a type and bounds cannot say.
- :mod:`~workflows.config.run_config`: :class:`Config`, the whole, and its JSON form.
- :mod:`~workflows.config.frozen_map`: the read-only mapping of the methods' parameters.
- :mod:`~workflows.config.hashing`: :func:`stable_hash`, what stage hashes are made of.
- :mod:`~workflows.config.names`: the check that every name exists.
- :mod:`~workflows.config.origins`: where an entry came from (file line or ``--set``).
- :mod:`~workflows.config.overrides`: ``--set`` and the command-line options.
- :mod:`~workflows.config.paths`: where configs live.
- :mod:`~workflows.config.toml_writer`: the resolved config as TOML (a run's
  ``config.toml``).
- :mod:`~workflows.config.reference`: docs/configuration.md, generated from the schema.
"""
