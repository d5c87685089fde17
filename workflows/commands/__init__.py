"""What the commands do beyond running stages: ``xai status``, ``verify``, ``clean``,
``explain``, ``datasets`` and ``weights``; the run's summary tables; checking a report
before opening it; and writing docs/store-format.md from the schema and the stages."""
